//! The methods, named and shaped after SPDK's where SPDK has one (field
//! names in snake_case as in its output). Each runs on the control loop's
//! thread against the [`Server`]; the read-only ones load counters the
//! reactors already publish and take no lock a reactor takes.

use serde_json::{json, Map, Value};

use super::error::{code, RpcError};
use super::params::Params;
use crate::serve::config::ScstConfig;
use crate::serve::config::{
    BdevConfig, Size, UnmapConfig, DEFAULT_FILE_QUEUE_DEPTH, DEFAULT_NVME_MAX_TRANSFER,
    DEFAULT_NVME_QUEUE_DEPTH, DEFAULT_RBD_OP_TIMEOUT_SECS,
};
use crate::serve::error::{BdevChangeError, ScstChangeError};
use crate::serve::host::Host;
use crate::serve::server::Server;
use crate::serve::stats::{DeviceKind, DeviceTotals};

/// Every method, with what it does (`rpc_get_methods` lists them).
pub const METHODS: &[(&str, &str)] = &[
    ("rpc_get_methods", "the methods of this socket"),
    (
        "bdev_get_bdevs",
        "the bdevs (name: only that one): size, capabilities, what claims them",
    ),
    (
        "bdev_get_iostat",
        "per bdev (name: only that one), the I/O of the devices over it since attach",
    ),
    ("tcmu_get_devices", "the TCMU devices and their counters"),
    ("scst_get_devices", "the SCST devices and their counters"),
    ("reactor_get_stats", "each reactor's and poller's counters"),
    (
        "bdev_ram_create",
        "a RAM bdev: name, size (bytes or \"64MiB\") or num_blocks, block_size (512)",
    ),
    (
        "bdev_null_create",
        "a null bdev: name, size or num_blocks, block_size (512)",
    ),
    (
        "bdev_striped_create",
        "a striped bdev: name, base_bdevs, strip_size_kb or chunk (bytes or \"64KiB\")",
    ),
    (
        "bdev_file_create",
        "a file bdev (io_uring): name, path, size, block_size, queue_depth, direct, iopoll, \
         sqpoll, fixed_buffers",
    ),
    (
        "bdev_nvme_create",
        "an nvme bdev (passthrough): name, path (/dev/ngXnY), queue_depth, iopoll, \
         max_transfer, unmap, fixed_buffers",
    ),
    (
        "bdev_rbd_create",
        "an rbd bdev (Ceph RBD image): name, pool_name, rbd_name, namespace, conf, user_id, \
         keyring, block_size, op_timeout_secs, config ({option: value})",
    ),
    (
        "bdev_delete",
        "deletes bdev name; refused while a device or bdev uses it",
    ),
    (
        "server_get_config",
        "the running configuration as TOML (a string)",
    ),
    (
        "scst_device_add",
        "an [[scst]] device: the keys of an [[scst]] entry (name, bdev, ..., export: [{lun}])",
    ),
    ("scst_device_remove", "an [[scst]] device: name"),
    (
        "log_set_level",
        "the log filter: level (error, warn, info, debug, trace, or env-filter directives)",
    ),
];

/// Runs `method` with `params` against `server`.
pub(super) fn call<H: Host>(
    server: &mut Server<H>,
    method: &str,
    params: Option<Map<String, Value>>,
) -> Result<Value, RpcError> {
    let mut p = Params::new(params);
    let result = match method {
        "rpc_get_methods" => json!(METHODS.iter().map(|(m, _)| *m).collect::<Vec<_>>()),
        "bdev_get_bdevs" => bdev_get_bdevs(server, p.opt_str("name")?)?,
        "bdev_get_iostat" => bdev_get_iostat(server, p.opt_str("name")?)?,
        "tcmu_get_devices" => devices(server, DeviceKind::Tcmu),
        "scst_get_devices" => devices(server, DeviceKind::Scst),
        "reactor_get_stats" => reactor_get_stats(server),
        "server_get_config" => server_get_config(server)?,
        "bdev_ram_create" | "bdev_null_create" => {
            let name = p.str("name")?;
            let block_size = p.opt_u32("block_size")?.unwrap_or(512);
            let size = match (p.opt_size("size")?, p.opt_u64("num_blocks")?) {
                (Some(size), None) => size,
                (None, Some(blocks)) => {
                    blocks.checked_mul(u64::from(block_size)).ok_or_else(|| {
                        RpcError::param("num_blocks", format!("{blocks} blocks is too large"))
                    })?
                }
                _ => {
                    return Err(RpcError::param(
                        "size",
                        "give exactly one of size and num_blocks",
                    ))
                }
            };
            let (name, size) = (name, Size(size));
            let b = if method == "bdev_ram_create" {
                BdevConfig::Ram {
                    name,
                    size,
                    block_size,
                }
            } else {
                BdevConfig::Null {
                    name,
                    size,
                    block_size,
                }
            };
            return create(server, b, p, method);
        }
        "bdev_striped_create" => {
            let name = p.str("name")?;
            let children = p.str_list("base_bdevs")?;
            let chunk = match (p.opt_u64("strip_size_kb")?, p.opt_size("chunk")?) {
                (Some(kb), None) => kb.checked_mul(1024).ok_or_else(|| {
                    RpcError::param("strip_size_kb", format!("{kb} is too large"))
                })?,
                (None, Some(bytes)) => bytes,
                _ => {
                    return Err(RpcError::param(
                        "strip_size_kb",
                        "give exactly one of strip_size_kb and chunk",
                    ))
                }
            };
            let b = BdevConfig::Striped {
                name,
                children,
                chunk: Size(chunk),
            };
            return create(server, b, p, method);
        }
        "bdev_file_create" => {
            let b = BdevConfig::File {
                name: p.str("name")?,
                path: p.str("path")?.into(),
                size: p.opt_size("size")?.map(Size),
                block_size: p.opt_u32("block_size")?,
                queue_depth: p
                    .opt_u32("queue_depth")?
                    .unwrap_or(DEFAULT_FILE_QUEUE_DEPTH),
                direct: p.opt_bool("direct")?.unwrap_or(true),
                iopoll: p.opt_bool("iopoll")?.unwrap_or(false),
                sqpoll: p.opt_bool("sqpoll")?.unwrap_or(false),
                fixed_buffers: p.opt_bool("fixed_buffers")?.unwrap_or(true),
            };
            return create(server, b, p, method);
        }
        "bdev_nvme_create" => {
            let unmap = match p.opt_str("unmap")?.as_deref() {
                None | Some("auto") => UnmapConfig::Auto,
                Some("deallocate") => UnmapConfig::Deallocate,
                Some("write-zeroes") => UnmapConfig::WriteZeroes,
                Some(other) => {
                    return Err(RpcError::param(
                        "unmap",
                        format!("{other:?} is not one of auto, deallocate, write-zeroes"),
                    ))
                }
            };
            let b = BdevConfig::Nvme {
                name: p.str("name")?,
                path: p.str("path")?.into(),
                queue_depth: p
                    .opt_u32("queue_depth")?
                    .unwrap_or(DEFAULT_NVME_QUEUE_DEPTH),
                iopoll: p.opt_bool("iopoll")?.unwrap_or(false),
                max_transfer: Size(
                    p.opt_size("max_transfer")?
                        .unwrap_or(DEFAULT_NVME_MAX_TRANSFER),
                ),
                unmap,
                fixed_buffers: p.opt_bool("fixed_buffers")?.unwrap_or(true),
            };
            return create(server, b, p, method);
        }
        "bdev_rbd_create" => {
            // SPDK's names where it has them (pool_name, rbd_name,
            // user_id, config).
            let b = BdevConfig::Rbd {
                name: p.str("name")?,
                pool: p.str("pool_name")?,
                image: p.str("rbd_name")?,
                namespace: p.opt_str("namespace")?,
                conf: p.opt_str("conf")?.map(Into::into),
                user: p.opt_str("user_id")?,
                keyring: p.opt_str("keyring")?.map(Into::into),
                block_size: p.opt_u32("block_size")?.unwrap_or(512),
                op_timeout_secs: p
                    .opt_u64("op_timeout_secs")?
                    .unwrap_or(DEFAULT_RBD_OP_TIMEOUT_SECS),
                options: p.opt_str_map("config")?,
            };
            return create(server, b, p, method);
        }
        "scst_device_add" => {
            // The keys of an [[scst]] entry, checked by its own parser
            // (unknown keys and wrong types are named).
            let entry = Value::Object(p.take_all());
            let config: ScstConfig = serde_json::from_value(entry)
                .map_err(|e| RpcError::new(code::INVALID_PARAMS, format!("scst entry: {e}")))?;
            let name = config.name.clone();
            server.add_scst_device(config).map_err(scst_change_error)?;
            return Ok(json!(name));
        }
        "scst_device_remove" => {
            let name = p.str("name")?;
            p.finish(method)?;
            server
                .remove_scst_device(&name)
                .map_err(scst_change_error)?;
            return Ok(json!(true));
        }
        "bdev_delete" => {
            let name = p.str("name")?;
            p.finish(method)?;
            server.delete_bdev(&name).map_err(change_error)?;
            return Ok(json!(true));
        }
        _ => {
            return Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("unknown method {method:?}; rpc_get_methods lists them"),
            ))
        }
    };
    p.finish(method)?;
    Ok(result)
}

/// Creates bdev `b` once the parameters `p` were all taken; the result is
/// its name, as SPDK's create methods answer.
fn create<H: Host>(
    server: &mut Server<H>,
    b: BdevConfig,
    p: Params,
    method: &str,
) -> Result<Value, RpcError> {
    p.finish(method)?;
    let name = b.name().to_string();
    server.create_bdev(b).map_err(change_error)?;
    Ok(json!(name))
}

/// The JSON-RPC error of a refused create or delete.
fn change_error(e: BdevChangeError) -> RpcError {
    let code = match &e {
        BdevChangeError::Exists(_) => code::EXISTS,
        BdevChangeError::NoSuchBdev(_) => code::NO_SUCH_DEVICE,
        BdevChangeError::InUse { .. } => code::BUSY,
        BdevChangeError::Invalid(_) => code::INVALID_PARAMS,
        BdevChangeError::Make(_) | BdevChangeError::Unavailable(_) => code::INVALID,
    };
    RpcError::new(code, e.to_string())
}

/// `log_set_level`: `level` handed to the binary's logger.
pub(super) fn log_set_level(
    hook: Option<&super::LogLevelHook>,
    params: Option<Map<String, Value>>,
) -> Result<Value, RpcError> {
    let mut p = Params::new(params);
    let level = p.str("level")?;
    p.finish("log_set_level")?;
    let Some(set) = hook else {
        return Err(RpcError::new(
            code::INVALID,
            "this server's log level cannot be changed (no logger was handed to the socket)",
        ));
    };
    set(&level).map_err(|why| RpcError::param("level", why))?;
    Ok(json!(level))
}

/// The JSON-RPC error of a refused SCST device add or remove.
fn scst_change_error(e: ScstChangeError) -> RpcError {
    let code = match &e {
        ScstChangeError::Exists(_) => code::EXISTS,
        ScstChangeError::NoSuchDevice(_) => code::NO_SUCH_DEVICE,
        ScstChangeError::Invalid(_) => code::INVALID_PARAMS,
        ScstChangeError::Start { .. } => code::INVALID,
    };
    RpcError::new(code, e.to_string())
}

/// The bdev names asked for: `name` alone (which must exist) or all.
fn selected<H: Host>(server: &Server<H>, name: Option<String>) -> Result<Vec<String>, RpcError> {
    match name {
        None => Ok(server.bdev_names()),
        Some(name) if server.bdev(&name).is_some() => Ok(vec![name]),
        Some(name) => Err(RpcError::new(
            code::NO_SUCH_DEVICE,
            format!("name: no bdev named {name:?}"),
        )),
    }
}

/// The configured kind of bdev `name` (`ram`, `null`, ...).
fn kind_of<H: Host>(server: &Server<H>, name: &str) -> &'static str {
    server
        .config()
        .bdev(name)
        .map_or("unknown", BdevConfig::kind)
}

fn bdev_get_bdevs<H: Host>(server: &Server<H>, name: Option<String>) -> Result<Value, RpcError> {
    // Every RAM bdev's huge-page share from one read of smaps.
    bdev::ram::one_smaps_read(|| bdevs_described(server, name))
}

fn bdevs_described<H: Host>(server: &Server<H>, name: Option<String>) -> Result<Value, RpcError> {
    let mut out = Vec::new();
    for name in selected(server, name)? {
        let Some(bdev) = server.bdev(&name) else {
            continue;
        };
        let g = bdev.geometry();
        let c = bdev.capabilities();
        let claimed_by = server.users_of(&name);
        let mut driver = json!({"type": kind_of(server, &name)});
        if let Some(f) = bdev.huge_page_fraction() {
            driver["huge_page_fraction"] = json!(f);
        }
        if let Some(BdevConfig::Striped {
            children, chunk, ..
        }) = server.config().bdev(&name)
        {
            driver["base_bdevs"] = json!(children);
            driver["strip_size_bytes"] = json!(chunk.0);
        }
        out.push(json!({
            "name": name,
            "product_name": kind_of(server, &name),
            "block_size": g.block_size,
            "num_blocks": g.num_blocks,
            "claimed": !claimed_by.is_empty(),
            "claimed_by": claimed_by,
            "supported_io_types": {
                "read": true,
                "write": true,
                "flush": true,
                "unmap": c.unmap,
                "write_zeroes": c.write_zeroes,
            },
            "volatile_write_cache": c.volatile_cache,
            "driver_specific": driver,
        }));
    }
    Ok(Value::Array(out))
}

fn bdev_get_iostat<H: Host>(server: &Server<H>, name: Option<String>) -> Result<Value, RpcError> {
    let devices = server.device_totals();
    let mut out = Vec::new();
    for name in selected(server, name)? {
        let over: Vec<&DeviceTotals> = devices.iter().filter(|d| d.device.bdev == name).collect();
        let sum = |f: fn(&DeviceTotals) -> u64| over.iter().map(|d| f(d)).sum::<u64>();
        let bytes = sum(|d| d.data_bytes_total);
        let bytes_read = sum(|d| d.data_in_bytes_total);
        out.push(json!({
            "name": name,
            "num_ops": sum(|d| d.commands_total),
            "bytes_read": bytes_read,
            "bytes_written": bytes.saturating_sub(bytes_read),
            "num_aborts": sum(|d| d.aborts_total),
            "devices": over.iter().map(|d| d.device.name.as_str()).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({ "bdevs": out }))
}

fn devices<H: Host>(server: &Server<H>, kind: DeviceKind) -> Value {
    let devices: Vec<DeviceTotals> = server
        .device_totals()
        .into_iter()
        .filter(|d| d.device.kind == kind)
        .collect();
    serde_json::to_value(devices).unwrap_or(Value::Null)
}

fn reactor_get_stats<H: Host>(server: &Server<H>) -> Value {
    let reactors: Vec<Value> = server
        .reactors()
        .iter()
        .map(|handle| {
            let s = handle.stats();
            let pollers: Vec<Value> = s
                .pollers
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "busy_ns": p.busy_ns,
                        "idle_ns": p.idle_ns,
                        "polls": p.polls,
                        "busy_polls": p.busy_polls,
                        "work": p.work,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "core": s.core,
                "state": format!("{:?}", s.state).to_lowercase(),
                "sleeping": s.sleeping,
                "busy_ns": s.busy_ns,
                "idle_ns": s.idle_ns,
                "sleep_ns": s.sleep_ns,
                "iterations": s.iterations,
                "busy_iterations": s.busy_iterations,
                "sleeps": s.sleeps,
                "event_wakeups": s.event_wakeups,
                "polls": s.polls,
                "work": s.work,
                "pollers": pollers,
            })
        })
        .collect();
    json!({ "reactors": reactors })
}

fn server_get_config<H: Host>(server: &Server<H>) -> Result<Value, RpcError> {
    toml::to_string(server.config())
        .map(Value::String)
        .map_err(|e| {
            RpcError::new(
                code::INTERNAL_ERROR,
                format!("cannot write the configuration: {e}"),
            )
        })
}

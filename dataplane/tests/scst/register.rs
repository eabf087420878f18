//! Registration of an scst_user device against a scripted driver (a fake
//! `ScstDriver` that records what it is given, reads the version and
//! license strings the way the kernel does, and answers with chosen
//! errnos), and opening `/dev/scst_user` when it is missing.

use std::path::{Path, PathBuf};
use tempfile::TempDir;

use dataplane::scst::abi::{
    self, ScstUserDevDesc, ScstUserOpt, ScstUserReplyCmd, DEV_USER_VERSION_COPY_LEN,
};
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use dataplane::scst::error::ScstError;
use dataplane::scst::ioctl::ScstFd;
use dataplane::scst::register::{
    register_device, register_with_version, MemoryReuse, OnFreeCmd, ParseType, RegisterSpec,
    ScstOptions,
};
use dataplane::scst::version::VersionSource;
use nix::errno::Errno;

const VERSION: &str = "3.11.0-pre230a30730ec749a9738ef33d6d17b1e6739bd195\
                       f03678ef2265294f64bc9fca39567ca80671f7d8";

/// What the fake kernel saw of a REGISTER_DEVICE.
#[derive(Debug, Clone)]
struct Seen {
    desc: ScstUserDevDesc,
    /// The `DEV_USER_VERSION_COPY_LEN` bytes at `version_str`.
    version: Vec<u8>,
    /// The same at `license_str`.
    license: Vec<u8>,
}

/// A scripted kernel side.
#[derive(Debug, Default)]
struct Scripted {
    register_errno: Option<Errno>,
    set_errno: Option<Errno>,
    get_errno: Option<Errno>,
    /// GET_OPTIONS returns this instead of what was set.
    get_override: Option<ScstUserOpt>,
    seen: Option<Seen>,
    set: Option<ScstUserOpt>,
    calls: Vec<&'static str>,
}

/// The NUL-terminated string at the start of `bytes`.
fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).expect("NUL-terminated");
    std::str::from_utf8(&bytes[..end]).unwrap()
}

impl ScstDriver for Scripted {
    fn register(&mut self, desc: &ScstUserDevDesc) -> Result<(), Errno> {
        self.calls.push("register");
        // Like dev_user_check_version: copy a fixed number of bytes from
        // each pointer, whatever the string length.
        // SAFETY: the ScstDriver contract keeps both strings readable for
        // the call, backed by at least DEV_USER_VERSION_COPY_LEN bytes
        // (what this test checks register_device provides).
        let read = |addr: u64| unsafe {
            std::slice::from_raw_parts(addr as *const u8, DEV_USER_VERSION_COPY_LEN).to_vec()
        };
        self.seen = Some(Seen {
            desc: *desc,
            version: read(desc.version_str),
            license: read(desc.license_str),
        });
        match self.register_errno {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.calls.push("set_options");
        if let Some(e) = self.set_errno {
            return Err(e);
        }
        self.set = Some(*opt);
        Ok(())
    }

    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        self.calls.push("get_options");
        if let Some(e) = self.get_errno {
            return Err(e);
        }
        Ok(self.get_override.or(self.set).unwrap_or_default())
    }

    fn reply_and_get_multi(
        &mut self,
        _buf: &mut MultiBuf,
        _replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        unreachable!("not used by registration")
    }

    fn reply_cmd(&mut self, _reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        unreachable!("not used by registration")
    }

    fn flush_cache(&mut self) -> Result<(), Errno> {
        unreachable!("not used by registration")
    }

    fn capacity_changed(&mut self) -> Result<(), Errno> {
        unreachable!("not used by registration")
    }

    fn prealloc_buffer(&mut self, _: u64, _: u32, _: bool) -> Result<u32, Errno> {
        unreachable!("not used by registration")
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn ioctls(&self) -> u64 {
        self.calls.len() as u64
    }
}

fn spec() -> RegisterSpec {
    let mut s = RegisterSpec::new("disk0", 4096);
    s.version = Some(VERSION.to_owned());
    s
}

#[test]
fn a_good_registration_passes_everything_the_kernel_reads() {
    let mut k = Scripted::default();
    register_device(&mut k, &spec()).unwrap();
    assert_eq!(k.calls, ["register", "set_options", "get_options"]);
    assert_eq!(k.ioctls(), 3);
    let seen = k.seen.unwrap();
    assert_eq!(c_str(&seen.version), VERSION);
    assert_eq!(seen.version.len(), 91);
    assert_eq!(seen.version[90], 0);
    assert_eq!(c_str(&seen.license), "GPL");
    assert!(seen.license[3..].iter().all(|&b| b == 0));
    let d = seen.desc;
    assert_eq!(d.type_, abi::TYPE_DISK);
    assert_eq!(d.block_size, 4096);
    assert_eq!(c_str(&d.name), "disk0");
    assert_eq!(c_str(&d.sgv_name), "");
    assert_eq!(
        (
            d.sgv_shared,
            d.sgv_disable_clustered_pool,
            d.enable_pr_cmds_notifications
        ),
        (0, 0, 0)
    );
    assert_eq!((d.sgv_single_alloc_pages, d.sgv_purge_interval), (0, 0));
    let expected = ScstUserOpt {
        parse_type: abi::SCST_USER_PARSE_STANDARD,
        on_free_cmd_type: abi::SCST_USER_ON_FREE_CMD_IGNORE,
        memory_reuse_type: abi::SCST_USER_MEM_REUSE_ALL,
        partial_transfers_type: abi::SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED,
        tst: 1,
        queue_alg: 1,
        ..Default::default()
    };
    assert_eq!(d.opt, expected);
    // SET_OPTIONS repeats the registered options.
    assert_eq!(k.set, Some(expected));
}

#[test]
fn configured_options_reach_the_kernel() {
    let mut s = spec();
    s.options = ScstOptions {
        parse_type: ParseType::Exception,
        memory_reuse: MemoryReuse::Read,
        on_free_cmd: None,
        tst: 0,
        queue_alg: 0,
        qerr: 3,
        tas: 1,
        swp: 1,
        d_sense: 1,
    };
    s.sgv_name = Some("pool0".into());
    s.sgv_purge_interval = -1;
    let mut k = Scripted::default();
    register_device(&mut k, &s).unwrap();
    let o = k.seen.unwrap().desc.opt;
    assert_eq!(o.parse_type, abi::SCST_USER_PARSE_EXCEPTION);
    assert_eq!(o.memory_reuse_type, abi::SCST_USER_MEM_REUSE_READ);
    assert_eq!(o.on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_CALL);
    assert_eq!(
        (o.tst, o.queue_alg, o.qerr, o.tas, o.swp, o.d_sense),
        (0, 0, 3, 1, 1, 1)
    );
    assert_eq!(k.set, Some(o));

    let mut call = spec();
    call.options.parse_type = ParseType::Call;
    call.options.on_free_cmd = Some(OnFreeCmd::Call);
    let mut k = Scripted::default();
    register_device(&mut k, &call).unwrap();
    let o = k.seen.unwrap().desc.opt;
    assert_eq!(o.parse_type, abi::SCST_USER_PARSE_CALL);
    assert_eq!(o.on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_CALL);
}

#[test]
fn einval_is_a_version_mismatch_with_the_way_out() {
    let mut k = Scripted {
        register_errno: Some(Errno::EINVAL),
        ..Default::default()
    };
    let e = register_device(&mut k, &spec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "registering SCST device \"disk0\" failed with EINVAL: DEV_USER_VERSION mismatch: \
             this handler offered \"{VERSION}\" (from the configuration); the kernel logs the \
             version it expects in dmesg ('Incorrect version of user device disk0 (...). \
             Expected: ...'); set it with `version = \"...\"` in the device's [[scst]] config. \
             EINVAL also means that this /dev/scst_user fd already has a registered device, or \
             that the kernel refused the block size 4096 or an option; dmesg names the cause"
        )
    );
    assert_eq!(k.calls, ["register"]);

    // The source is named when the version was found rather than configured.
    let mut k = Scripted {
        register_errno: Some(Errno::EINVAL),
        ..Default::default()
    };
    let source = VersionSource::Module {
        path: PathBuf::from("/lib/modules/6.1.0/extra/scst_user.ko"),
    };
    let e = register_with_version(&mut k, &spec(), VERSION, &source).unwrap_err();
    assert!(e
        .to_string()
        .contains("(from module file /lib/modules/6.1.0/extra/scst_user.ko)"));
}

#[test]
fn eperm_is_the_license_and_eexist_the_name() {
    let mut k = Scripted {
        register_errno: Some(Errno::EPERM),
        ..Default::default()
    };
    assert_eq!(
        register_device(&mut k, &spec()).unwrap_err().to_string(),
        "registering SCST device \"disk0\" failed with EPERM: scst_user refused the license \
         \"GPL\" (it accepts \"GPL\", \"GPL v2\", \"Dual BSD/GPL\", \"Dual MIT/GPL\", \"Dual \
         MPL/GPL\"; dmesg: 'Unsupported license of user device')"
    );
    let mut k = Scripted {
        register_errno: Some(Errno::EEXIST),
        ..Default::default()
    };
    assert_eq!(
        register_device(&mut k, &spec()).unwrap_err().to_string(),
        "a device named \"disk0\" is already registered with SCST (another `dataplane serve`, \
         a fileio_tgt, or a vdisk device of that name: see \
         /sys/kernel/scst_tgt/devices/disk0); choose another name or remove the other device"
    );
}

#[test]
fn options_must_survive_the_round_trip() {
    let mut changed = spec().options.to_abi();
    changed.qerr = 1;
    changed.memory_reuse_type = abi::SCST_USER_MEM_NO_REUSE;
    // Bytes the options do not control are not compared.
    changed.tmf_only = 9;
    changed.ext_copy_remap_supported = 7;
    let mut k = Scripted {
        get_override: Some(changed),
        ..Default::default()
    };
    let e = register_device(&mut k, &spec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "SCST device \"disk0\": the kernel did not keep the options: memory_reuse_type: set 3, \
         kernel has 0, qerr: set 0, kernel has 1"
    );
    let mut only_ignored = spec().options.to_abi();
    only_ignored.tmf_only = 1;
    only_ignored.has_own_order_mgmt = 1;
    let mut k = Scripted {
        get_override: Some(only_ignored),
        ..Default::default()
    };
    register_device(&mut k, &spec()).unwrap();
}

#[test]
fn set_and_get_failures_name_the_ioctl() {
    let mut k = Scripted {
        set_errno: Some(Errno::EBUSY),
        ..Default::default()
    };
    let e = register_device(&mut k, &spec()).unwrap_err();
    assert!(e.to_string().starts_with(
        "SET_OPTIONS of SCST device \"disk0\" failed: EBUSY: Device or resource busy; SCST \
         could not suspend activity within 90 s"
    ));
    let mut k = Scripted {
        get_errno: Some(Errno::EFAULT),
        ..Default::default()
    };
    let e = register_device(&mut k, &spec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "GET_OPTIONS of SCST device \"disk0\" failed: EFAULT: Bad address"
    );
    assert_eq!(e.errno(), Some(Errno::EFAULT));
}

#[test]
fn bad_specs_never_reach_the_kernel() {
    type Change = Box<dyn Fn(&mut RegisterSpec)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|s| s.block_size = 1000),
            "block size 1000 of SCST device \"disk0\" is invalid",
        ),
        (
            Box::new(|s| s.name = "x".repeat(49)),
            "is 49 bytes long (at most 48)",
        ),
        (
            Box::new(|s| s.options.qerr = 2),
            "SCST option qerr = 2 is invalid",
        ),
        (
            Box::new(|s| {
                s.options.memory_reuse = MemoryReuse::None;
                s.options.on_free_cmd = Some(OnFreeCmd::Ignore);
            }),
            "on_free_cmd = ignore needs memory_reuse = all",
        ),
        (
            Box::new(|s| s.version = Some("x".repeat(128))),
            "is unusable: it is 128 bytes long; at most 127",
        ),
        (
            Box::new(|s| s.version = Some(String::new())),
            "DEV_USER_VERSION \"\" (the configuration) is unusable: it is empty",
        ),
    ];
    for (change, expect) in cases {
        let mut s = spec();
        change(&mut s);
        let mut k = Scripted::default();
        let e = register_device(&mut k, &s).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
        assert!(k.calls.is_empty(), "{e}: {:?}", k.calls);
    }
}

#[test]
fn the_driver_can_be_a_trait_object() {
    let mut k: Box<dyn ScstDriver> = Box::new(Scripted::default());
    register_device(k.as_mut(), &spec()).unwrap();
    assert_eq!(k.ioctls(), 3);
}

/// `rel` under the temporary directory `t`.
fn p(t: &TempDir, rel: &str) -> PathBuf {
    t.path().join(rel)
}

#[test]
fn a_missing_node_tells_module_absent_from_node_absent() {
    let t = TempDir::new().unwrap();
    let node = p(&t, "dev/scst_user");
    let sysfs = p(&t, "sys");
    // Module absent: no node and no /sys/module/scst_user.
    let e = ScstFd::open_with_sysfs(&node, &sysfs).unwrap_err();
    assert!(matches!(e, ScstError::ModuleNotLoaded { .. }));
    assert_eq!(e.errno(), Some(Errno::ENOENT));
    assert_eq!(
        e.to_string(),
        format!(
            "scst_user is not loaded (no {}; modprobe scst_user): {} does not exist either \
             (load scst first if needed: modprobe scst)",
            node.display(),
            sysfs.join("module/scst_user").display()
        )
    );
    // Module loaded, node missing.
    std::fs::create_dir_all(sysfs.join("module/scst_user")).unwrap();
    let e = ScstFd::open_with_sysfs(&node, &sysfs).unwrap_err();
    assert!(matches!(e, ScstError::DeviceNodeMissing { .. }));
    assert!(e.to_string().starts_with(&format!(
        "scst_user is loaded ({} exists) but {} is missing",
        sysfs.join("module/scst_user").display(),
        node.display()
    )));
    // Not a device at all: a directory cannot be opened for writing.
    std::fs::create_dir_all(&node).unwrap();
    let e = ScstFd::open_with_sysfs(&node, &sysfs).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open {}: EISDIR: Is a directory",
            Path::new(&node).display()
        )
    );
}

#[test]
fn registering_on_a_file_that_is_not_scst_user_says_so() {
    // /dev/null takes the ioctl and answers ENOTTY.
    let mut fd = ScstFd::open(Path::new("/dev/null")).unwrap();
    let e = register_device(&mut fd, &spec()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "REGISTER_DEVICE of SCST device \"disk0\" failed: ENOTTY: Inappropriate ioctl for \
         device; the file is not /dev/scst_user"
    );
    assert_eq!(fd.ioctls(), 1);
}

//! Tests of the configuration: every section parses with its defaults and
//! every error names its key.

use super::*;
use crate::frontend::CoalesceConfig;
use crate::scst::register::{MemoryReuse, OnFreeCmd, ParseType, ScstOptions};

const GOOD: &str = r#"
[reactors]
cores = [0]
idle = "busy"

[[bdev]]
name = "ram0"
type = "ram"
size = "64MiB"

[[bdev]]
name = "r1"
type = "ram"
size = 1048576
block_size = 4096

[[bdev]]
name = "r2"
type = "null"
size = "1M"
block_size = 4096

[[bdev]]
name = "fast"
type = "striped"
children = ["r1", "r2"]
chunk = "64KiB"

[tcmu]
subtype = "dataplane"
rescan_interval_ms = 500

[[tcmu.pin]]
device = "disk0"
reactor = 0
"#;

fn check(text: &str) -> Result<ServeConfig, ConfigError> {
    let c = ServeConfig::parse(text)?;
    c.validate(&[0, 1])?;
    Ok(c)
}

#[test]
fn good_config_parses() {
    let c = check(GOOD).unwrap();
    assert_eq!(c.reactors.idle, Idle::Busy);
    assert_eq!(c.bdevs.len(), 4);
    assert_eq!(
        c.bdev("ram0"),
        Some(&BdevConfig::Ram {
            name: "ram0".into(),
            size: Size(64 << 20),
            block_size: 512
        })
    );
    assert_eq!(c.parent_of("r2"), Some("fast"));
    assert_eq!(c.pinned_reactor("disk0"), Some(0));
    assert_eq!(c.tcmu.rescan_interval_ms, 500);
    let minimal = check("[reactors]\ncores = [1]\n").unwrap();
    assert_eq!(minimal.reactors.idle, Idle::Adaptive);
    assert_eq!(minimal.tcmu.subtype, "dataplane");
}

fn error(text: &str) -> String {
    check(text).unwrap_err().0
}

#[test]
fn every_error_names_its_key() {
    assert!(error("[reactors]\ncores = [1]\nspeed = 3\n").contains("unknown field `speed`"));
    assert!(error("[reactor]\ncores = [1]\n").contains("unknown field `reactor`"));
    assert!(error("").contains("missing field `reactors`"));
    assert!(error("[reactors]\ncores = []\n").contains("reactors.cores: at least one CPU"));
    assert!(error("[reactors]\ncores = [7]\n").contains("reactors.cores[0]: CPU 7 does not exist"));
    assert!(
        error("[reactors]\ncores = [1, 1]\n").contains("reactors.cores[1]: CPU 1 is listed twice")
    );
    assert!(error("[reactors]\ncores = [1]\nidle = \"lazy\"\n").contains("unknown variant `lazy`"));
    assert!(error("[reactors]\ncores = [1]\nmin_spin_us = 200000\n")
        .contains("reactors.min_spin_us: 200000 is not between 0 and 100000"));
    assert!(
        error("[reactors]\ncores = [1]\nidle = \"busy\"\nmin_spin_us = 5\n")
            .contains("only meaningful with idle = \"adaptive\"")
    );
    let spin = |text: &str| match check(text).unwrap().reactors.idle_policy() {
        reactor::IdlePolicy::Adaptive { min_spin, .. } => min_spin,
        reactor::IdlePolicy::Busy => panic!("busy"),
    };
    assert_eq!(
        spin("[reactors]\ncores = [1]\n"),
        reactor::IdlePolicy::DEFAULT_MIN_SPIN
    );
    assert_eq!(
        spin("[reactors]\ncores = [1]\nmin_spin_us = 300\n"),
        std::time::Duration::from_micros(300)
    );
    let bdev = |body: &str| format!("[reactors]\ncores = [1]\n[[bdev]]\n{body}\n");
    assert!(
        error(&bdev("name = \"a\"\ntype = \"disk\"\nsize = 1")).contains("unknown variant `disk`")
    );
    assert!(error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = \"1Q\"")).contains("unknown unit"));
    assert!(error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = 0"))
        .contains("bdev[0] (\"a\").size: must be greater than zero"));
    assert!(error(&bdev("name = \"a\"\ntype = \"ram\"\nsize = 1000"))
        .contains("bdev[0] (\"a\").size: 1000 is not a multiple of block_size 512"));
    assert!(error(&bdev(
        "name = \"a\"\ntype = \"ram\"\nsize = 4096\nblock_size = 1000"
    ))
    .contains("bdev[0] (\"a\").block_size: 1000"));
    assert!(error(&bdev("name = \"a/b\"\ntype = \"ram\"\nsize = 4096"))
        .contains("bdev[0].name: \"a/b\" contains '/'"));
    assert!(error(&bdev(
        "name = \"a\"\ntype = \"ram\"\nsize = 4096\ncolor = 1"
    ))
    .contains("unknown field `color`"));
    assert!(error(&bdev(
        "name = \"s\"\ntype = \"striped\"\nchildren = [\"x\"]\nchunk = 4096"
    ))
    .contains("bdev[0] (\"s\").children[0]: no bdev named \"x\""));
    let dup = format!(
        "{}[[bdev]]\nname = \"a\"\ntype = \"null\"\nsize = 4096\n",
        bdev("name = \"a\"\ntype = \"ram\"\nsize = 4096")
    );
    assert!(error(&dup).contains("bdev[1].name: \"a\" is defined twice"));
    let bad_chunk = GOOD.replace("chunk = \"64KiB\"", "chunk = 3000");
    assert!(error(&bad_chunk).contains("bdev[3] (\"fast\").chunk: 3000 is not a power of two"));
    let mixed = GOOD.replace(
        "block_size = 4096\n\n[[bdev]]\nname = \"fast\"",
        "block_size = 512\n\n[[bdev]]\nname = \"fast\"",
    );
    assert!(
        error(&mixed).contains("children[1]: block size 512 differs from the first child's 4096")
    );
    let bad_pin = GOOD.replace("reactor = 0", "reactor = 3");
    assert!(error(&bad_pin).contains("tcmu.pin[0].reactor: 3 is not a reactor index"));
    let bad_subtype = GOOD.replace("subtype = \"dataplane\"", "subtype = \"\"");
    assert!(error(&bad_subtype).contains("tcmu.subtype: must not be empty"));
    let bad_rescan = GOOD.replace("rescan_interval_ms = 500", "rescan_interval_ms = 1");
    assert!(error(&bad_rescan).contains("tcmu.rescan_interval_ms: 1 is not between"));
}

/// GOOD plus one `[[scst]]` with `body` (and a second reactor).
fn scst(body: &str) -> String {
    format!(
        "{}\n[[scst]]\n{body}\n",
        GOOD.replace("cores = [0]", "cores = [0, 1]")
    )
}

#[test]
fn scst_devices_parse_with_defaults() {
    let c = check(&scst("name = \"disk1\"\nbdev = \"ram0\"")).unwrap();
    assert_eq!(c.scst.len(), 1);
    let d = &c.scst[0];
    assert_eq!((d.name.as_str(), d.bdev.as_str()), ("disk1", "ram0"));
    assert_eq!(
        (d.block_size, d.reactor, d.version.as_deref()),
        (None, None, None)
    );
    assert_eq!(d.options(), ScstOptions::default());
    assert_eq!(d.pool_bytes(), 256 << 20);
    assert_eq!(d.idle_poll_interval(), std::time::Duration::from_micros(5));
    assert_eq!(d.coalesce(), CoalesceConfig::default());
    let c = check(&scst(
        "name = \"disk1\"\nbdev = \"fast\"\nblock_size = 4096\nreactor = 1\n\
         version = \"3.10.0abc\"\nparse_type = \"call\"\nmemory_reuse = \"read\"\n\
         tst = 0\nqueue_alg = false\nqerr = 3\ntas = true\nswp = 1\nd_sense = true\n\
         pool_mb = 64\nidle_poll_us = 0",
    ))
    .unwrap();
    let d = &c.scst[0];
    assert_eq!((d.block_size, d.reactor), (Some(4096), Some(1)));
    assert_eq!(d.version.as_deref(), Some("3.10.0abc"));
    assert_eq!(
        d.options(),
        ScstOptions {
            parse_type: ParseType::Call,
            memory_reuse: MemoryReuse::Read,
            on_free_cmd: None,
            tst: 0,
            queue_alg: 0,
            qerr: 3,
            tas: 1,
            swp: 1,
            d_sense: 1,
        }
    );
    assert_eq!(d.options().effective_on_free_cmd(), OnFreeCmd::Call);
    assert_eq!(d.pool_bytes(), 64 << 20);
    assert_eq!(d.idle_poll_interval(), std::time::Duration::ZERO);
    // `parse` is another name of `parse_type`.
    let c = check(&scst(
        "name = \"d\"\nbdev = \"ram0\"\nparse = \"exception\"\non_free_cmd = \"call\"",
    ))
    .unwrap();
    assert_eq!(c.scst[0].options().parse_type, ParseType::Exception);
    assert_eq!(c.scst[0].options().on_free_cmd, Some(OnFreeCmd::Call));
    assert_eq!(c.block_size_of(c.bdev("fast").unwrap()), Some(4096));
}

#[test]
fn rbd_bdevs_are_checked_without_a_cluster() {
    let rbd = |extra: &str| {
        format!(
            "[reactors]\ncores = [1]\n[[bdev]]\nname = \"r\"\ntype = \"rbd\"\n\
             pool = \"rbd\"\nimage = \"disk\"\n{extra}\n"
        )
    };
    let c = check(&rbd("")).unwrap();
    assert_eq!(c.bdevs[0].kind(), "rbd");
    assert!(c.bdevs[0].opens_device());
    assert_eq!(c.block_size_of(&c.bdevs[0]), Some(512));
    for (extra, message) in [
        (
            "block_size = 1024",
            "bdev[0] (\"r\").block_size: 1024 is not 512 or 4096",
        ),
        (
            "op_timeout_secs = 0",
            "bdev[0] (\"r\").op_timeout_secs: 0 is not between 1 and 3600",
        ),
        (
            "namespace = \"\"",
            "bdev[0] (\"r\").namespace: must not be empty",
        ),
        (
            "options = { rbd_cache = 1 }",
            "invalid type: integer `1`, expected a string",
        ),
        ("size = 4096", "unknown field `size`"),
    ] {
        let e = error(&rbd(extra));
        assert!(e.contains(message), "{extra}: {e}");
    }
    let e = error(&rbd("").replace("pool = \"rbd\"", "pool = \"\""));
    assert!(e.contains("bdev[0] (\"r\").pool: must not be empty"), "{e}");
}

#[test]
fn scst_errors_name_their_key() {
    let dev = |extra: &str| scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{extra}"));
    assert!(error(&dev("colour = 1")).contains("unknown field `colour`"));
    assert!(error(&scst("bdev = \"ram0\"")).contains("missing field `name`"));
    assert!(error(&scst("name = \"d\"")).contains("missing field `bdev`"));
    assert_eq!(
        error(&scst("name = \"d\"\nbdev = \"x\"")),
        "scst[0] (\"d\").bdev: no [[bdev]] named \"x\""
    );
    assert_eq!(
        error(&scst("name = \"d\"\nbdev = \"r1\"")),
        "scst[0] (\"d\").bdev: \"r1\" is a child of striped bdev \"fast\" and cannot back \
         a LUN"
    );
    assert_eq!(
        error(&dev("block_size = 4096")),
        "scst[0] (\"disk1\").block_size: 4096 differs from the block size of bdev \"ram0\" \
         (512); leave it out or make them equal"
    );
    assert_eq!(
        error(&dev("reactor = 2")),
        "scst[0] (\"disk1\").reactor: 2 is not a reactor index (reactors.cores has 2)"
    );
    let parse = error(&dev("parse_type = \"sometimes\""));
    assert!(
        parse.contains("parse_type = \"sometimes\"")
            && parse.contains(
                "unknown variant `sometimes`, expected one of `standard`, `call`, `exception`"
            ),
        "{parse}"
    );
    let reuse = error(&dev("memory_reuse = \"most\""));
    assert!(
        reuse.contains("memory_reuse = \"most\"") && reuse.contains("unknown variant `most`"),
        "{reuse}"
    );
    assert_eq!(
        error(&dev("qerr = 2")),
        "scst[0] (\"disk1\"): SCST option qerr = 2 is invalid: allowed values are 0, 1 and 3"
    );
    assert_eq!(
        error(&dev("tst = 7")),
        "scst[0] (\"disk1\"): SCST option tst = 7 is invalid: allowed values are 0 (one task \
         set) and 1 (separate task sets)"
    );
    assert!(error(&dev("d_sense = 300")).contains("300 is out of range"));
    assert!(error(&dev("swp = -1")).contains("-1 is out of range"));
    assert!(
        error(&dev("on_free_cmd = \"ignore\"\nmemory_reuse = \"none\"")).starts_with(
            "scst[0] (\"disk1\"): SCST option on_free_cmd = ignore needs memory_reuse = all"
        )
    );
    assert_eq!(
        error(&dev("idle_poll_us = 2000000")),
        "scst[0] (\"disk1\").idle_poll_us: 2000000 is more than 1000000 (one second)"
    );
    assert_eq!(
        error(&dev("pool_mb = 4")),
        "scst[0] (\"disk1\").pool_mb: 4 is not between 8 (one buffer of the largest \
         transfer) and 1048576"
    );
    assert_eq!(
        error(&dev("version = \"3.11 pre\"")),
        "scst[0] (\"disk1\").version: it contains ' ' (a DEV_USER_VERSION has no spaces)"
    );
    assert_eq!(
        error(&scst(&format!(
            "name = \"{}\"\nbdev = \"ram0\"",
            "d".repeat(49)
        ))),
        format!(
            "scst[0].name: SCST device name \"{}\" is 49 bytes long (at most 48)",
            "d".repeat(49)
        )
    );
    assert!(check(&scst(&format!(
        "name = \"{}\"\nbdev = \"ram0\"",
        "d".repeat(48)
    )))
    .is_ok());
    assert_eq!(
        error(&scst("name = \"a:b\"\nbdev = \"ram0\"")),
        "scst[0].name: \"a:b\" contains ':'; names may not contain '/', ':' or spaces"
    );
    assert_eq!(
        error(&scst("name = \"dìsk\"\nbdev = \"ram0\"")),
        "scst[0].name: SCST device name \"dìsk\" contains 'ì' (allowed: printable ASCII \
         without spaces and '/')"
    );
    assert!(
        error(&scst("name = \"\"\nbdev = \"ram0\"")).contains("scst[0].name: must not be empty")
    );
    let twice = format!("{}[[scst]]\nname = \"disk1\"\nbdev = \"fast\"\n", dev(""));
    assert_eq!(error(&twice), "scst[1].name: \"disk1\" is defined twice");
}

#[test]
fn both_frontends_take_the_same_coalescing_keys() {
    let defaults = check(&scst("name = \"disk1\"\nbdev = \"ram0\"")).unwrap();
    assert_eq!(defaults.tcmu.coalesce(), CoalesceConfig::default());
    assert_eq!(defaults.scst[0].coalesce(), CoalesceConfig::default());
    let expected = CoalesceConfig {
        batch: 8,
        window: std::time::Duration::from_micros(50),
        ..CoalesceConfig::default()
    };
    let keys = "doorbell_batch = 8\ncompletion_coalesce_us = 50";
    let tcmu = GOOD.replace(
        "rescan_interval_ms = 500",
        &format!("rescan_interval_ms = 500\n{keys}"),
    );
    assert_eq!(check(&tcmu).unwrap().tcmu.coalesce(), expected);
    let c = check(&scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{keys}"))).unwrap();
    assert_eq!(c.scst[0].coalesce(), expected);

    let bad_batch = GOOD.replace(
        "rescan_interval_ms = 500",
        "rescan_interval_ms = 500\ndoorbell_batch = 0",
    );
    assert_eq!(
        error(&bad_batch),
        "tcmu.doorbell_batch: 0 is not between 1 and 65535"
    );
    let bad_window = GOOD.replace(
        "rescan_interval_ms = 500",
        "rescan_interval_ms = 500\ncompletion_coalesce_us = 100001",
    );
    assert_eq!(
        error(&bad_window),
        "tcmu.completion_coalesce_us: 100001 is above 100000 (100 ms)"
    );
    let dev = |extra: &str| scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{extra}"));
    assert_eq!(
        error(&dev("doorbell_batch = 65536")),
        "scst[0] (\"disk1\").doorbell_batch: 65536 is not between 1 and 65535"
    );
    assert_eq!(
        error(&dev("completion_coalesce_us = 100001")),
        "scst[0] (\"disk1\").completion_coalesce_us: 100001 is above 100000 (100 ms)"
    );
}

#[test]
fn file_bdevs_parse_with_defaults_and_name_their_keys() {
    let text = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"f0\"\ntype = \"file\"\npath = \"/var/tmp/f0.img\"\n\
        [[bdev]]\nname = \"f1\"\ntype = \"file\"\npath = \"/dev/sdb\"\nsize = \"1GiB\"\n\
        block_size = 4096\nqueue_depth = 32\ndirect = false\nsqpoll = true\nfixed_buffers = false\n\
        [[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"f0\", \"f1\"]\nchunk = \"64KiB\"\n";
    let c = check(text).unwrap();
    assert_eq!(
        c.bdev("f0"),
        Some(&BdevConfig::File {
            name: "f0".into(),
            path: "/var/tmp/f0.img".into(),
            size: None,
            block_size: None,
            queue_depth: 128,
            direct: true,
            iopoll: false,
            sqpoll: false,
            fixed_buffers: true,
        })
    );
    assert!(matches!(
        c.bdev("f1"),
        Some(BdevConfig::File {
            size: Some(Size(0x4000_0000)),
            block_size: Some(4096),
            queue_depth: 32,
            direct: false,
            sqpoll: true,
            fixed_buffers: false,
            ..
        })
    ));
    assert!(c.fixed_buffers("f0") && !c.fixed_buffers("f1"));
    assert!(c.fixed_buffers("s"), "a striped bdev decides for itself");
    // f0's block size is its file's (512) or its device's: known at open.
    assert_eq!(c.block_size_of(c.bdev("f0").unwrap()), None);
    assert_eq!(c.block_size_of(c.bdev("s").unwrap()), Some(4096));

    let bdev = |body: &str| {
        format!("[reactors]\ncores = [1]\n[[bdev]]\nname = \"f\"\ntype = \"file\"\n{body}\n")
    };
    assert!(error(&bdev("size = 4096")).contains("missing field `path`"));
    assert!(error(&bdev("path = \"\"")).contains("bdev[0] (\"f\").path: must not be empty"));
    assert!(error(&bdev("path = \"/x\"\nsize = 1000"))
        .contains("bdev[0] (\"f\").size: 1000 is not a multiple of block_size 512"));
    assert!(error(&bdev(
        "path = \"/x\"\nsize = 4096\nblock_size = 4096\nqueue_depth = 0"
    ))
    .contains("bdev[0] (\"f\").queue_depth: 0 is not between 1 and 32768"));
    assert!(error(&bdev("path = \"/x\"\nblock_size = 3000"))
        .contains("bdev[0] (\"f\").block_size: 3000 is not a power of two"));
    assert!(error(&bdev("path = \"/x\"\ndirect = false\niopoll = true"))
        .contains("bdev[0] (\"f\").iopoll: polled I/O needs direct = true"));
    assert!(error(&bdev("path = \"/x\"\nflags = 1")).contains("unknown field `flags`"));
    assert!(error(&bdev("path = \"/x\"\ndirect = \"yes\"")).contains("invalid type"));
    // Children with configured block sizes must agree.
    let mixed = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"a\"\ntype = \"file\"\npath = \"/a\"\nblock_size = 4096\n\
        [[bdev]]\nname = \"b\"\ntype = \"ram\"\nsize = 4096\n\
        [[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"a\", \"b\"]\nchunk = 4096\n";
    assert!(
        error(mixed).contains("children[1]: block size 512 differs from the first child's 4096")
    );
    // An SCST device's block size is compared with a file bdev's device
    // when the server starts, not here.
    let scst = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"f\"\ntype = \"file\"\npath = \"/dev/sdb\"\n\
        [[scst]]\nname = \"d\"\nbdev = \"f\"\nblock_size = 4096\n";
    check(scst).unwrap();
}

#[test]
fn nvme_bdevs_parse_with_defaults_and_name_their_keys() {
    let text = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"n0\"\ntype = \"nvme\"\npath = \"/dev/ng0n1\"\n\
        [[bdev]]\nname = \"n1\"\ntype = \"nvme\"\npath = \"/dev/ng0n2\"\nqueue_depth = 64\n\
        iopoll = true\nmax_transfer = \"256KiB\"\nunmap = \"write-zeroes\"\nfixed_buffers = false\n\
        [[bdev]]\nname = \"n2\"\ntype = \"nvme\"\npath = \"/dev/ng1n1\"\nunmap = \"deallocate\"\n\
        [[bdev]]\nname = \"f0\"\ntype = \"file\"\npath = \"/var/tmp/f0.img\"\n\
        [[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"n0\", \"f0\"]\nchunk = \"64KiB\"\n\
        [[scst]]\nname = \"d\"\nbdev = \"n2\"\nblock_size = 4096\n";
    let c = check(text).unwrap();
    assert_eq!(
        c.bdev("n0"),
        Some(&BdevConfig::Nvme {
            name: "n0".into(),
            path: "/dev/ng0n1".into(),
            queue_depth: 128,
            iopoll: false,
            max_transfer: Size(1 << 20),
            unmap: UnmapConfig::Auto,
            fixed_buffers: true,
        })
    );
    assert_eq!(
        c.bdev("n1"),
        Some(&BdevConfig::Nvme {
            name: "n1".into(),
            path: "/dev/ng0n2".into(),
            queue_depth: 64,
            iopoll: true,
            max_transfer: Size(256 << 10),
            unmap: UnmapConfig::WriteZeroes,
            fixed_buffers: false,
        })
    );
    assert!(matches!(
        c.bdev("n2"),
        Some(BdevConfig::Nvme {
            unmap: UnmapConfig::Deallocate,
            ..
        })
    ));
    assert_eq!(
        UnmapConfig::WriteZeroes.mode(),
        bdev::UnmapMode::WriteZeroes
    );
    assert_eq!(UnmapConfig::Deallocate.mode(), bdev::UnmapMode::Deallocate);
    assert_eq!(UnmapConfig::Auto.mode(), bdev::UnmapMode::Auto);
    assert!(c.fixed_buffers("n0") && !c.fixed_buffers("n1"));
    // The namespace's LBA format gives the block size, at open: a striped
    // bdev over nvme and file children, and an SCST device's block_size,
    // are checked when the server starts.
    assert_eq!(c.block_size_of(c.bdev("n0").unwrap()), None);
    assert_eq!(c.block_size_of(c.bdev("s").unwrap()), None);
    assert_eq!(c.parent_of("n0"), Some("s"));
    assert!(c.bdev("n0").unwrap().opens_device() && !c.bdev("s").unwrap().opens_device());

    let bdev = |body: &str| {
        format!("[reactors]\ncores = [1]\n[[bdev]]\nname = \"n\"\ntype = \"nvme\"\n{body}\n")
    };
    assert!(error(&bdev("queue_depth = 8")).contains("missing field `path`"));
    assert_eq!(
        error(&bdev("path = \"\"")),
        "bdev[0] (\"n\").path: must not be empty"
    );
    assert_eq!(
        error(&bdev("path = \"/dev/ng0n1\"\nqueue_depth = 0")),
        "bdev[0] (\"n\").queue_depth: 0 is not between 1 and 32768"
    );
    assert_eq!(
        error(&bdev("path = \"/dev/ng0n1\"\nqueue_depth = 40000")),
        "bdev[0] (\"n\").queue_depth: 40000 is not between 1 and 32768"
    );
    assert_eq!(
        error(&bdev("path = \"/dev/ng0n1\"\nmax_transfer = 1000")),
        "bdev[0] (\"n\").max_transfer: 1000 is not a multiple of 512 between 512 and 8388608"
    );
    assert_eq!(
        error(&bdev("path = \"/dev/ng0n1\"\nmax_transfer = \"16MiB\"")),
        "bdev[0] (\"n\").max_transfer: 16777216 is not a multiple of 512 between 512 and 8388608"
    );
    let unmap = error(&bdev("path = \"/dev/ng0n1\"\nunmap = \"trim\""));
    assert!(
        unmap.contains(
            "unknown variant `trim`, expected one of `auto`, `deallocate`, `write-zeroes`"
        ),
        "{unmap}"
    );
    // The file bdev's keys are not an nvme bdev's.
    assert!(error(&bdev("path = \"/dev/ng0n1\"\nblock_size = 4096"))
        .contains("unknown field `block_size`"));
    assert!(error(&bdev("path = \"/dev/ng0n1\"\nsize = \"1GiB\"")).contains("unknown field `size`"));
    assert!(
        error(&bdev("path = \"/dev/ng0n1\"\ndirect = false")).contains("unknown field `direct`")
    );
    assert!(error(&bdev("path = \"/dev/ng0n1\"\niopoll = \"on\"")).contains("invalid type"));
    // A striped bdev may not be an nvme bdev's parent twice, nor a child.
    let twice = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"n\"\ntype = \"nvme\"\npath = \"/dev/ng0n1\"\n\
        [[bdev]]\nname = \"a\"\ntype = \"striped\"\nchildren = [\"n\"]\nchunk = 4096\n\
        [[bdev]]\nname = \"b\"\ntype = \"striped\"\nchildren = [\"n\"]\nchunk = 4096\n";
    assert!(error(twice).contains("\"n\" is already a child of \"a\""));
    // Mixed with a RAM child, the RAM bdev's block size is the one known.
    let mixed = "[reactors]\ncores = [1]\n\
        [[bdev]]\nname = \"n\"\ntype = \"nvme\"\npath = \"/dev/ng0n1\"\n\
        [[bdev]]\nname = \"r\"\ntype = \"ram\"\nsize = 65536\nblock_size = 4096\n\
        [[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"n\", \"r\"]\nchunk = 4096\n";
    let c = check(mixed).unwrap();
    assert_eq!(c.block_size_of(c.bdev("s").unwrap()), Some(4096));
}

#[test]
fn scst_exports_take_defaults_and_name_their_key() {
    let dev = |exports: &str| scst(&format!("name = \"disk1\"\nbdev = \"ram0\"\n{exports}"));
    let c = ServeConfig::parse(&dev("[[scst.export]]\n[[scst.export]]\nlun = 7")).unwrap();
    let at: Vec<String> = c.scst[0]
        .export
        .iter()
        .map(|e| e.address().unwrap().to_string())
        .collect();
    assert_eq!(
        at,
        [
            "LUN 0 of scst_local/scst_local_tgt",
            "LUN 7 of scst_local/scst_local_tgt"
        ]
    );
    assert_eq!(
        error(&dev("[[scst.export]]\ndriver = \"iscsi\"")),
        "scst[0] (\"disk1\").export[0].target: give the target; driver \"iscsi\" has no \
         default one"
    );
    assert_eq!(
        error(&dev("[[scst.export]]\nlun = 20000")),
        "scst[0] (\"disk1\").export[0]: LUN 20000 is out of range (SCST allows 0 to 16383)"
    );
    assert_eq!(
        error(&dev("[[scst.export]]\ntarget = \"a/b\"")),
        "scst[0] (\"disk1\").export[0]: target name \"a/b\" contains '/' (allowed: printable \
         ASCII without spaces and '/')"
    );
    assert_eq!(
        error(&dev("[[scst.export]]\n[[scst.export]]\nlun = 0")),
        "scst[0] (\"disk1\").export[1]: LUN 0 of scst_local/scst_local_tgt is also an export \
         of SCST device \"disk1\""
    );
    assert!(error(&dev("[[scst.export]]\nport = 1")).contains("unknown field `port`"));
}

#[test]
fn the_configuration_written_as_toml_reads_back_the_same() {
    let text = "[reactors]\ncores = [1, 2]\nidle = \"busy\"\n\
        [[bdev]]\nname = \"r\"\ntype = \"ram\"\nsize = \"1MiB\"\n\
        [[bdev]]\nname = \"n\"\ntype = \"null\"\nsize = 65536\nblock_size = 4096\n\
        [[bdev]]\nname = \"f\"\ntype = \"file\"\npath = \"/tmp/x.img\"\nsize = \"1MiB\"\n\
        [[bdev]]\nname = \"v\"\ntype = \"nvme\"\npath = \"/dev/ng0n1\"\nunmap = \"write-zeroes\"\n\
        [[bdev]]\nname = \"c\"\ntype = \"ram\"\nsize = \"1MiB\"\n\
        [[bdev]]\nname = \"s\"\ntype = \"striped\"\nchildren = [\"c\"]\nchunk = \"64KiB\"\n\
        [[bdev]]\nname = \"x\"\ntype = \"fault\"\nbase = \"r\"\nseed = 3\n\
        [[bdev.rules]]\nops = [\"write\"]\nprobability = 0.25\nerror = \"medium\"\n\
        [tcmu]\ndoorbell_batch = 8\ncoalesce_hold_us = 20\n\
        [[tcmu.pin]]\ndevice = \"d\"\nreactor = 1\n\
        [[scst]]\nname = \"disk1\"\nbdev = \"n\"\ntst = true\npool_mb = 64\n\
        [[scst.export]]\nlun = 3\n";
    let config = ServeConfig::parse(text).unwrap();
    let written = toml::to_string(&config).unwrap();
    assert_eq!(ServeConfig::parse(&written).unwrap(), config, "{written}");
    let empty = ServeConfig::parse("[reactors]\ncores = [1]\n").unwrap();
    let written = toml::to_string(&empty).unwrap();
    assert!(
        !written.contains("bdev") && !written.contains("scst"),
        "{written}"
    );
    assert_eq!(ServeConfig::parse(&written).unwrap(), empty);
}

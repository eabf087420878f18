//! Tests of the registration: options and their kernel ranges, names and
//! block sizes, and the REGISTER_DEVICE description's C layout.

use super::*;
use crate::scst::abi;

#[test]
fn default_options_match_fileio_tgt() {
    let o = ScstOptions::default();
    o.validate().unwrap();
    let a = o.to_abi();
    assert_eq!(a.parse_type, abi::SCST_USER_PARSE_STANDARD);
    assert_eq!(a.memory_reuse_type, abi::SCST_USER_MEM_REUSE_ALL);
    assert_eq!(a.on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_IGNORE);
    assert_eq!(
        a.partial_transfers_type,
        abi::SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED
    );
    assert_eq!((a.tst, a.queue_alg, a.qerr), (1, 1, 0));
    assert_eq!((a.tas, a.swp, a.d_sense), (0, 0, 0));
    assert_eq!(
        (a.tmf_only, a.has_own_order_mgmt, a.ext_copy_remap_supported),
        (0, 0, 0)
    );
    assert_eq!(
        o.to_string(),
        "parse_type=standard memory_reuse=all on_free_cmd=ignore tst=1 queue_alg=1 qerr=0 \
         tas=0 swp=0 d_sense=0"
    );
}

#[test]
fn on_free_cmd_follows_memory_policy() {
    for (reuse, expect) in [
        (MemoryReuse::All, OnFreeCmd::Ignore),
        (MemoryReuse::Read, OnFreeCmd::Call),
        (MemoryReuse::Write, OnFreeCmd::Call),
        (MemoryReuse::None, OnFreeCmd::Call),
    ] {
        let o = ScstOptions {
            memory_reuse: reuse,
            ..Default::default()
        };
        assert_eq!(o.effective_on_free_cmd(), expect, "{reuse:?}");
        assert_eq!(o.to_abi().on_free_cmd_type, expect.abi());
    }
    let o = ScstOptions {
        on_free_cmd: Some(OnFreeCmd::Call),
        ..Default::default()
    };
    o.validate().unwrap();
    assert_eq!(o.to_abi().on_free_cmd_type, abi::SCST_USER_ON_FREE_CMD_CALL);
    let o = ScstOptions {
        on_free_cmd: Some(OnFreeCmd::Ignore),
        memory_reuse: MemoryReuse::Read,
        ..Default::default()
    };
    assert_eq!(
        o.validate().unwrap_err().to_string(),
        "SCST option on_free_cmd = ignore needs memory_reuse = all (it is Read): buffers \
         the kernel does not cache are returned only through ON_FREE_CMD"
    );
}

#[test]
fn option_ranges_are_the_kernels() {
    let check = |f: &dyn Fn(&mut ScstOptions), ok: bool| {
        let mut o = ScstOptions::default();
        f(&mut o);
        assert_eq!(o.validate().is_ok(), ok, "{o:?}");
    };
    for v in 0..=255u8 {
        check(&|o| o.tst = v, v <= 1);
        check(&|o| o.queue_alg = v, v <= 1);
        check(&|o| o.qerr = v, matches!(v, 0 | 1 | 3));
        check(&|o| o.tas = v, v <= 1);
        check(&|o| o.swp = v, v <= 1);
        check(&|o| o.d_sense = v, v <= 1);
    }
    let o = ScstOptions {
        qerr: 2,
        ..Default::default()
    };
    assert_eq!(
        o.validate().unwrap_err().to_string(),
        "SCST option qerr = 2 is invalid: allowed values are 0, 1 and 3"
    );
    let o = ScstOptions {
        tst: 7,
        ..Default::default()
    };
    assert_eq!(
        o.validate().unwrap_err().to_string(),
        "SCST option tst = 7 is invalid: allowed values are 0 (one task set) and 1 \
         (separate task sets)"
    );
}

#[test]
fn option_names_parse() {
    assert_eq!("STD".parse::<ParseType>().unwrap(), ParseType::Standard);
    assert_eq!("call".parse::<ParseType>().unwrap(), ParseType::Call);
    assert_eq!("excpt".parse::<ParseType>().unwrap(), ParseType::Exception);
    assert_eq!(
        "Exception".parse::<ParseType>().unwrap().abi(),
        abi::SCST_USER_PARSE_EXCEPTION
    );
    assert_eq!(
        "x".parse::<ParseType>().unwrap_err().to_string(),
        "SCST option parse_type = \"x\" is invalid: allowed values are standard, std, call, \
         exception, excpt"
    );
    assert_eq!("write".parse::<MemoryReuse>().unwrap().abi(), 2);
    assert_eq!("none".parse::<MemoryReuse>().unwrap().abi(), 0);
    assert_eq!("read".parse::<MemoryReuse>().unwrap().abi(), 1);
    assert_eq!("ignore".parse::<OnFreeCmd>().unwrap().abi(), 1);
    assert!("sometimes"
        .parse::<OnFreeCmd>()
        .unwrap_err()
        .to_string()
        .contains("on_free_cmd"));
}

#[test]
fn options_deserialize_with_defaults() {
    let o: ScstOptions = toml::from_str("parse_type = \"call\"\nqerr = 3\n").unwrap();
    assert_eq!(o.parse_type, ParseType::Call);
    assert_eq!(o.qerr, 3);
    assert_eq!(o.tst, 1);
    assert_eq!(o.memory_reuse, MemoryReuse::All);
    let o: ScstOptions =
        toml::from_str("memory_reuse = \"read\"\non_free_cmd = \"call\"\n").unwrap();
    assert_eq!(o.memory_reuse, MemoryReuse::Read);
    assert_eq!(o.on_free_cmd, Some(OnFreeCmd::Call));
    assert!(toml::from_str::<ScstOptions>("bogus = 1\n").is_err());
    assert!(toml::from_str::<ScstOptions>("parse_type = \"sometimes\"\n").is_err());
}

#[test]
fn specs_are_validated() {
    RegisterSpec::new("disk0", 512).validate().unwrap();
    RegisterSpec::new("d".repeat(48), 4096).validate().unwrap();
    let msg = |s: RegisterSpec| s.validate().unwrap_err().to_string();
    assert_eq!(
        msg(RegisterSpec::new("d".repeat(49), 512)),
        format!(
            "SCST device name {:?} is 49 bytes long (at most 48)",
            "d".repeat(49)
        )
    );
    assert_eq!(
        msg(RegisterSpec::new("", 512)),
        "SCST device name \"\" is empty"
    );
    assert_eq!(
        msg(RegisterSpec::new("a b", 512)),
        "SCST device name \"a b\" contains ' ' (allowed: printable ASCII without spaces and \
         '/')"
    );
    assert!(msg(RegisterSpec::new("a/b", 512)).contains("contains '/'"));
    for bad in [0, 256, 520, 1000, 3 << 10] {
        assert_eq!(
            msg(RegisterSpec::new("d", bad)),
            format!(
                "block size {bad} of SCST device \"d\" is invalid: it must be a power of two \
                 of at least 512"
            )
        );
    }
    for good in [512, 1024, 2048, 4096, 8192, 65536] {
        RegisterSpec::new("d", good).validate().unwrap();
    }
    let mut s = RegisterSpec::new("d", 512);
    s.sgv_name = Some("x".repeat(50));
    assert!(msg(s.clone()).starts_with("SGV pool name"));
    s.sgv_name = None;
    s.sgv_single_alloc_pages = -1;
    assert!(msg(s.clone()).starts_with("sgv_single_alloc_pages = -1"));
    s.sgv_single_alloc_pages = 0;
    s.options.swp = 2;
    assert!(msg(s).starts_with("SCST option swp = 2"));
}

#[test]
fn the_description_has_the_c_layout() {
    let version = KernelString::new("3.11.0-preV").unwrap();
    let license = KernelString::new(LICENSE).unwrap();
    let mut spec = RegisterSpec::new("disk0", 4096);
    spec.sgv_name = Some("pool".into());
    spec.sgv_shared = true;
    spec.sgv_single_alloc_pages = 4;
    spec.sgv_purge_interval = -1;
    spec.sgv_disable_clustered_pool = true;
    let desc = spec.dev_desc(&version, &license);
    // SAFETY: ScstUserDevDesc is 160 bytes of plain data; viewing it as
    // bytes is valid for its whole size.
    let bytes: [u8; 160] = unsafe { std::mem::transmute(desc) };
    assert_eq!(&bytes[0..8], &version.addr().to_ne_bytes());
    assert_eq!(&bytes[8..16], &license.addr().to_ne_bytes());
    assert_eq!(bytes[16], TYPE_DISK);
    assert_eq!((bytes[17], bytes[18]), (1, 1));
    assert_eq!(&bytes[20..24], &4i32.to_ne_bytes());
    assert_eq!(&bytes[24..28], &(-1i32).to_ne_bytes());
    assert_eq!(bytes[28], abi::SCST_USER_PARSE_STANDARD); // opt.parse_type
    assert_eq!(bytes[29], abi::SCST_USER_ON_FREE_CMD_IGNORE);
    assert_eq!(bytes[30], abi::SCST_USER_MEM_REUSE_ALL);
    assert_eq!(bytes[36], 1); // opt.tst
    assert_eq!(bytes[38], 1); // opt.queue_alg
    assert_eq!(&bytes[48..52], &4096u32.to_ne_bytes());
    assert_eq!(bytes[52], 0);
    assert_eq!(&bytes[53..59], b"disk0\0");
    assert!(bytes[58..103].iter().all(|&b| b == 0));
    assert_eq!(&bytes[103..108], b"pool\0");
    assert!(bytes[107..160].iter().all(|&b| b == 0));
}

#[test]
fn dataplane_pools_are_marked_when_the_name_fits() {
    assert_eq!(
        dataplane_sgv_name("disk0").as_deref(),
        Some("dataplane.disk0")
    );
    let fits = "d".repeat(SCST_MAX_NAME - 1 - DATAPLANE_SGV_PREFIX.len());
    assert_eq!(dataplane_sgv_name(&fits).unwrap().len(), SCST_MAX_NAME - 1);
    assert_eq!(dataplane_sgv_name(&format!("{fits}x")), None);
    let mut spec = RegisterSpec::new("disk0", 512);
    spec.sgv_name = dataplane_sgv_name("disk0");
    spec.validate().unwrap();
}

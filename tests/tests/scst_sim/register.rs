//! Registration against the scst_user simulator (`sim::scst`), which reads
//! the version and license strings through their pointers and checks them
//! like `dev_user_check_version`: a good registration with its options
//! round trip, and the errors of the issue (bad version → EINVAL with the
//! way out, bad license → EPERM, a second REGISTER on one fd, a block size
//! the kernel refuses). The missing-node / module-absent paths of
//! `ScstFd::open` are in dataplane's tests (`dataplane/tests/scst/register.rs`).

use std::path::PathBuf;

use dataplane::scst::abi::{self, SCST_MAX_NAME};
use dataplane::scst::driver::ScstDriver;
use dataplane::scst::error::{RegisterAttempt, ScstError};
use dataplane::scst::register::{
    register_device, register_with_version, MemoryReuse, ParseType, RegisterSpec, LICENSE,
};
use dataplane::scst::version::{KernelString, VersionSource};
use nix::errno::Errno;
use sim::scst::{ScstSim, ScstSimConfig, DEV_USER_VERSION_3_11};

/// DEV_USER_VERSION of SCST 3.10.0 (another `scst_const.h` hash).
const V3_10: &str = "3.10.0230a30730ec749a9738ef33d6d17b1e6739bd195\
                     85aa8654196eb07e34d2b0762f5607fb4b70af8b";

fn spec(version: &str) -> RegisterSpec {
    let mut s = RegisterSpec::new("disk0", 4096);
    s.version = Some(version.to_owned());
    s
}

#[test]
fn a_matching_version_registers_and_keeps_the_options() {
    let (mut drv, init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let mut s = spec(DEV_USER_VERSION_3_11);
    s.options.parse_type = ParseType::Exception;
    s.options.memory_reuse = MemoryReuse::Write;
    s.options.qerr = 3;
    s.options.d_sense = 1;
    register_device(&mut drv, &s).unwrap();
    let dev = init.device().expect("registered");
    assert_eq!(dev.name, "disk0");
    assert_eq!(dev.type_, abi::TYPE_DISK);
    assert_eq!(dev.block_size, 4096);
    assert_eq!(dev.options, s.options.to_abi());
    assert_eq!(
        dev.options.on_free_cmd_type,
        abi::SCST_USER_ON_FREE_CMD_CALL
    );
    // O_NONBLOCK is latched at REGISTER.
    assert!(!dev.blocking);
    // REGISTER, SET_OPTIONS, GET_OPTIONS.
    assert_eq!(drv.ioctls(), 3);
    assert_eq!(init.ioctls(), 3);
}

#[test]
fn blocking_mode_comes_from_the_fd() {
    let (mut drv, init) = ScstSim::new(ScstSimConfig {
        nonblocking: false,
        ..Default::default()
    })
    .unwrap();
    register_device(&mut drv, &spec(DEV_USER_VERSION_3_11)).unwrap();
    assert!(init.device().unwrap().blocking);
}

#[test]
fn a_wrong_version_is_einval_and_says_where_the_kernel_logs_the_right_one() {
    let (mut drv, init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let e = register_device(&mut drv, &spec(V3_10)).unwrap_err();
    assert!(matches!(e, ScstError::VersionMismatch { .. }));
    assert_eq!(e.errno(), Some(Errno::EINVAL));
    assert_eq!(
        e.to_string(),
        format!(
            "registering SCST device \"disk0\" failed with EINVAL: DEV_USER_VERSION mismatch: \
             this handler offered \"{V3_10}\" (from the configuration); the kernel logs the \
             version it expects in dmesg ('Incorrect version of user device disk0 (...). \
             Expected: ...'); set it with `version = \"...\"` in the device's [[scst]] config. \
             EINVAL also means that this /dev/scst_user fd already has a registered device, or \
             that the kernel refused the block size 4096 or an option; dmesg names the cause"
        )
    );
    assert!(init.device().is_none());
    assert_eq!(drv.ioctls(), 1);

    // A one-character difference is enough; the message names where a
    // found version came from.
    let (mut drv, _init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let mut off_by_one = DEV_USER_VERSION_3_11.to_owned();
    off_by_one.pop();
    off_by_one.push('9');
    let source = VersionSource::Header {
        itf_ver: PathBuf::from("/usr/include/scst/scst_itf_ver.h"),
        scst_const: PathBuf::from("/usr/include/scst/scst_const.h"),
    };
    let e = register_with_version(&mut drv, &spec("unused"), &off_by_one, &source)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "offered \"{off_by_one}\" (from /usr/include/scst/scst_itf_ver.h and \
             /usr/include/scst/scst_const.h)"
        )),
        "{e}"
    );

    // The same device registers once the version matches the "kernel".
    let (mut drv, init) = ScstSim::new(ScstSimConfig {
        version: V3_10.to_owned(),
        ..Default::default()
    })
    .unwrap();
    register_device(&mut drv, &spec(V3_10)).unwrap();
    assert_eq!(init.device().unwrap().name, "disk0");
}

#[test]
fn a_refused_license_is_eperm() {
    // register_device always offers "GPL"; another license has to be put
    // in the description by hand.
    let (mut drv, init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let s = spec(DEV_USER_VERSION_3_11);
    let version = KernelString::new(DEV_USER_VERSION_3_11).unwrap();
    for accepted in ["GPL v2", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"] {
        let (mut d, _i) = ScstSim::new(ScstSimConfig::default()).unwrap();
        let license = KernelString::new(accepted).unwrap();
        d.register(&s.dev_desc(&version, &license)).unwrap();
    }
    let license = KernelString::new("Proprietary").unwrap();
    let errno = drv.register(&s.dev_desc(&version, &license)).unwrap_err();
    assert_eq!(errno, Errno::EPERM);
    // The license is checked before the version.
    let wrong = KernelString::new(V3_10).unwrap();
    assert_eq!(
        drv.register(&s.dev_desc(&wrong, &license)).unwrap_err(),
        Errno::EPERM
    );
    let e = ScstError::from_register_errno(
        errno,
        &RegisterAttempt {
            device: "disk0",
            version: DEV_USER_VERSION_3_11,
            origin: "the configuration",
            license: license.as_str(),
            block_size: 4096,
        },
    );
    assert_eq!(
        e.to_string(),
        "registering SCST device \"disk0\" failed with EPERM: scst_user refused the license \
         \"Proprietary\" (it accepts \"GPL\", \"GPL v2\", \"Dual BSD/GPL\", \"Dual MIT/GPL\", \
         \"Dual MPL/GPL\"; dmesg: 'Unsupported license of user device')"
    );
    assert!(init.device().is_none());
    assert_eq!(LICENSE, "GPL");
}

#[test]
fn one_device_per_fd() {
    let (mut drv, init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    register_device(&mut drv, &spec(DEV_USER_VERSION_3_11)).unwrap();
    let mut again = spec(DEV_USER_VERSION_3_11);
    again.name = "disk1".into();
    let e = register_device(&mut drv, &again).unwrap_err().to_string();
    assert!(
        e.contains("this /dev/scst_user fd already has a registered device"),
        "{e}"
    );
    assert_eq!(init.device().unwrap().name, "disk0");
}

#[test]
fn the_kernel_agrees_with_our_validation() {
    let version = KernelString::new(DEV_USER_VERSION_3_11).unwrap();
    let license = KernelString::new(LICENSE).unwrap();
    // What RegisterSpec::validate refuses, the simulated kernel refuses
    // too (EINVAL), and what it accepts registers.
    for (block_size, ok) in [(512, true), (1000, false), (256, false), (65536, true)] {
        let mut s = spec(DEV_USER_VERSION_3_11);
        s.block_size = block_size;
        assert_eq!(s.validate().is_ok(), ok, "{block_size}");
        let (mut drv, _init) = ScstSim::new(ScstSimConfig::default()).unwrap();
        let got = drv.register(&s.dev_desc(&version, &license));
        assert_eq!(got.is_ok(), ok, "{block_size}: {got:?}");
        if !ok {
            assert_eq!(got, Err(Errno::EINVAL));
        }
    }
    for (qerr, ok) in [(0, true), (1, true), (2, false), (3, true), (4, false)] {
        let mut s = spec(DEV_USER_VERSION_3_11);
        s.options.qerr = qerr;
        assert_eq!(s.validate().is_ok(), ok, "qerr {qerr}");
        let (mut drv, _init) = ScstSim::new(ScstSimConfig::default()).unwrap();
        assert_eq!(
            drv.register(&s.dev_desc(&version, &license)).is_ok(),
            ok,
            "qerr {qerr}"
        );
    }
    // A 48-byte name is kept whole (the kernel keeps at most 48).
    let mut s = spec(DEV_USER_VERSION_3_11);
    s.name = "n".repeat(SCST_MAX_NAME - 2);
    let (mut drv, init) = ScstSim::new(ScstSimConfig::default()).unwrap();
    register_device(&mut drv, &s).unwrap();
    assert_eq!(init.device().unwrap().name, s.name);
}

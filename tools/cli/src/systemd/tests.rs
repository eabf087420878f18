use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use dataplane::scst::device::Session;
use nix::sys::socket::{recvmsg, ControlMessageOwned};

use super::*;

fn inode(fd: BorrowedFd<'_>) -> u64 {
    std::fs::File::from(fd.try_clone_to_owned().unwrap())
        .metadata()
        .unwrap()
        .ino()
}

/// One datagram: its text and the fds it carried.
fn receive(socket: &UnixDatagram) -> (String, Vec<OwnedFd>) {
    let mut buf = [0u8; 512];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(r) = c {
            // SAFETY: fresh descriptors installed for this test.
            fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let n = msg.bytes;
    (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
}

#[test]
fn each_device_is_stored_under_its_name_with_its_sessions_kept_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    let a = std::fs::File::create(tmp.path().join("a")).unwrap();
    let b = std::fs::File::create(tmp.path().join("b")).unwrap();
    let session = Session {
        sess_h: 9,
        lun: 0,
        rd_only: false,
        initiator_name: "iqn.2026-12.test:i".into(),
        target_name: "t".into(),
    };
    let devices = [
        (
            HandedDevice {
                name: "disk0".into(),
                sessions: vec![session.clone()],
            },
            a.as_fd(),
        ),
        (
            HandedDevice {
                name: "disk1".into(),
                sessions: vec![],
            },
            b.as_fd(),
        ),
    ];
    let mut store = FdStore::at(path, Some(tmp.path().to_path_buf()));
    store.send(&devices).unwrap();
    for (name, file) in [("disk0", &a), ("disk1", &b)] {
        let (text, fds) = receive(&manager);
        assert_eq!(text, format!("FDSTORE=1\nFDNAME=scst-{name}\n"));
        assert_eq!(fds.len(), 1);
        assert_eq!(inode(fds[0].as_fd()), inode(file.as_fd()));
    }
    let kept: HandedDevice = serde_json::from_slice(
        &std::fs::read(tmp.path().join("scst-disk0.sessions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept.sessions, vec![session]);

    store.forget(&stored_names(&[ReceivedDevice {
        device: devices[0].0.clone(),
        fd: a.as_fd().try_clone_to_owned().unwrap(),
    }]));
    let (text, fds) = receive(&manager);
    assert_eq!(text, "FDSTOREREMOVE=1\nFDNAME=scst-disk0\n");
    assert!(fds.is_empty());
}

#[test]
fn names_systemd_would_refuse_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_nonblocking(true).unwrap();
    let a = std::fs::File::create(tmp.path().join("a")).unwrap();
    let devices = [
        (
            HandedDevice {
                name: "good".into(),
                sessions: vec![],
            },
            a.as_fd(),
        ),
        (
            HandedDevice {
                name: "dísk".into(),
                sessions: vec![],
            },
            a.as_fd(),
        ),
    ];
    let mut store = FdStore::at(path, None);
    let err = store.send(&devices).unwrap_err();
    assert!(err.to_string().contains("dísk"), "{err}");
    let mut buf = [0u8; 64];
    assert!(manager.recv(&mut buf).is_err(), "nothing was stored");
}

#[test]
fn a_manager_that_is_gone_is_an_error_naming_the_device() {
    let tmp = tempfile::tempdir().unwrap();
    let a = std::fs::File::create(tmp.path().join("a")).unwrap();
    let devices = [(
        HandedDevice {
            name: "disk0".into(),
            sessions: vec![],
        },
        a.as_fd(),
    )];
    let mut store = FdStore::at(tmp.path().join("nobody.sock"), None);
    match store.send(&devices) {
        Err(HandoffError::Device { device, why }) => {
            assert_eq!(device, "disk0");
            assert!(why.contains("service manager"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

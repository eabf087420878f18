use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::*;

type Successor = std::thread::JoinHandle<Result<Vec<ReceivedDevice>, HandoffError>>;

/// A successor on a thread asking `listener` for the devices, and its
/// accepted connection (waiting up to 10 s).
fn connect(listener: &HandoffListener) -> (Successor, UnixStream) {
    let path = listener.path().to_path_buf();
    let successor = std::thread::spawn(move || receive(&path, Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = listener.accept(Duration::from_secs(5)).unwrap() {
            return (successor, s);
        }
        assert!(Instant::now() < deadline, "no successor connected");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn session(sess_h: u64) -> Session {
    Session {
        sess_h,
        lun: 3,
        rd_only: true,
        initiator_name: "iqn.2026-12.test:init".into(),
        target_name: "scst_local_tgt".into(),
    }
}

fn inode(fd: BorrowedFd<'_>) -> (u64, u64) {
    let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    let m = file.metadata().unwrap();
    (m.dev(), m.ino())
}

#[test]
fn devices_and_their_fds_reach_the_successor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("handoff.sock");
    let listener = HandoffListener::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let a = std::fs::File::create(dir.join("a")).unwrap();
    let b = std::fs::File::create(dir.join("b")).unwrap();
    let expect = [inode(a.as_fd()), inode(b.as_fd())];
    let (successor, stream) = connect(&listener);
    let devices = [
        (
            HandedDevice {
                name: "ram0".into(),
                sessions: vec![session(1), session(2)],
            },
            a.as_fd(),
        ),
        (
            HandedDevice {
                name: "ram1".into(),
                sessions: vec![],
            },
            b.as_fd(),
        ),
    ];
    send(&stream, &devices, None).unwrap();
    let received = successor.join().unwrap().unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].device, devices[0].0);
    assert_eq!(received[1].device, devices[1].0);
    assert_eq!(inode(received[0].fd.as_fd()), expect[0]);
    assert_eq!(inode(received[1].fd.as_fd()), expect[1]);
    // Close-on-exec, as every fd of this process.
    let flags = nix::fcntl::fcntl(received[0].fd.as_raw_fd(), nix::fcntl::F_GETFD).unwrap();
    assert_ne!(flags & libc::FD_CLOEXEC, 0);
    drop(listener);
    assert!(!path.exists(), "the socket file goes with the listener");
}

#[test]
fn a_refusal_reaches_the_successor_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("h.sock");
    let listener = HandoffListener::bind(&path).unwrap();
    let (successor, stream) = connect(&listener);
    send(&stream, &[], Some("device ram0 never quiesced".into())).unwrap();
    match successor.join().unwrap() {
        Err(HandoffError::Refused(why)) => assert_eq!(why, "device ram0 never quiesced"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("h.sock");
    let live = HandoffListener::bind(&path).unwrap();
    assert!(matches!(
        HandoffListener::bind(&path),
        Err(HandoffError::InUse(p)) if p == path
    ));
    drop(live);
    // A socket file left behind by a process that died.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let again = HandoffListener::bind(&path).unwrap();
    assert_eq!(again.path(), path);
    // A listener whose path another one took over leaves that one alone.
    let moved = dir.join("moved.sock");
    std::fs::rename(&path, &moved).unwrap();
    let successor = HandoffListener::bind(&path).unwrap();
    drop(again);
    assert!(path.exists(), "the successor's socket file stays");
    drop(successor);
    assert!(!path.exists());
}

#[test]
fn a_client_without_the_hello_is_turned_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("h.sock");
    let listener = HandoffListener::bind(&path).unwrap();
    assert!(listener.accept(Duration::from_secs(1)).unwrap().is_none());
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept(Duration::from_secs(5)) {
            Ok(None) => assert!(Instant::now() < deadline, "never accepted"),
            Ok(Some(_)) => panic!("a wrong hello was accepted"),
            Err(HandoffError::Protocol(why)) => {
                assert!(why.contains("not the hand-off hello"), "{why}");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_predecessor_that_hangs_up_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("h.sock");
    let listener = HandoffListener::bind(&path).unwrap();
    let (successor, stream) = connect(&listener);
    drop(stream);
    match successor.join().unwrap() {
        Err(HandoffError::Protocol(why)) => assert!(why.contains("without handing"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        receive(&dir.join("nobody.sock"), Duration::from_secs(1)),
        Err(HandoffError::Socket {
            what: "connecting",
            ..
        })
    ));
}

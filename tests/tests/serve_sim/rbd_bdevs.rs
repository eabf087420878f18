//! Rbd bdevs under serve: a LUN over an image whose OSD dies answers
//! NOT READY within the bdev's operation timeout, never hangs, and serves
//! again once the OSD is back.

use super::*;
use dataplane::lun::sense_key;
use dataplane::scsi::sense::key;

/// Submits `cdb` with `data` and waits (at most `patience`) for its
/// status and sense key.
fn exec(sim: &SharedSim, cdb: &[u8], data: SimData<'_>, patience: Duration) -> (u8, Option<u8>) {
    {
        let mut sim = sim.lock().unwrap();
        sim.submit(cdb, data, 1).unwrap();
        sim.notify();
    }
    let deadline = Instant::now() + patience;
    let mut answer = None;
    while answer.is_none() {
        assert!(Instant::now() < deadline, "no answer within {patience:?}");
        sim.lock()
            .unwrap()
            .reap(|c| answer = Some((c.status, sense_key(c.sense))))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    answer.unwrap()
}

#[test]
fn an_rbd_lun_is_not_ready_while_its_osd_is_down_and_serves_again_after() {
    // Needs a cluster whose OSD it may stop: its own, when Ceph can run.
    if test_support::ceph::cluster().is_none() {
        return;
    }
    let cluster = test_support::ceph::OwnCluster::start();
    cluster.rbd(&["create", "--size", "16M", "rbd/serve-osd"]);
    let core = reactor::available_cores()[0];
    let text = format!(
        "[reactors]\ncores = [{core}]\nidle = \"adaptive\"\n\n[[bdev]]\nname = \"r0\"\n\
         type = \"rbd\"\npool = \"rbd\"\nimage = \"serve-osd\"\nconf = \"{}\"\n\
         op_timeout_secs = 5\n",
        cluster.conf().display()
    );
    let config = ServeConfig::parse(&text).unwrap();
    config.validate(&reactor::available_cores()).unwrap();
    let host = SimHost::default();
    let disk = host.add(0, "tcm-user/0/rdisk/dataplane/r0", facts(512, 16 * MIB));
    let (logs, log) = Logs::new();
    let options = ServeOptions {
        config,
        state_dir: None,
    };
    let mut server = Server::start(options, host.clone(), log).unwrap();
    server.rescan();
    assert_eq!(server.attached().len(), 1, "{}", logs.dump());
    verified_job(&disk, 16 * MIB / 512, 512, 200);

    let mut write = [0u8; 10];
    write[0] = 0x2a;
    write[8] = 1;
    let block = vec![0x5au8; 512];
    let patience = Duration::from_secs(60);
    assert_eq!(
        exec(&disk, &write, SimData::Out(&block), patience),
        (0, None)
    );

    cluster.script("osd-stop");
    let started = Instant::now();
    let read = exec(&disk, &read10(0), SimData::In(512), patience);
    let took = started.elapsed();
    eprintln!("with the OSD down: {read:?} after {took:?}");
    assert_eq!(
        read,
        (0x02, Some(key::NOT_READY)),
        "CHECK CONDITION, NOT READY"
    );
    assert!(
        took < Duration::from_secs(15),
        "answered after {took:?}, timeout 5 s"
    );

    cluster.script("osd-start");
    assert_eq!(
        exec(&disk, &read10(0), SimData::In(512), patience),
        (0, None)
    );
    verified_job_over(&disk, 16 * MIB / 512, 512, 200, false);
    assert!(server.shutdown());
}

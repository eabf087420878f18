//! The metrics as text: what each source becomes, and the endpoint over
//! TCP on the loopback.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;

use reactor::clock;

use super::collector::render;
use super::{BdevSource, DeviceCounters, DeviceSource, MetricsCatalog, MetricsServer, Sources};
use crate::latency::LatencyRecorder;
use crate::lun::{LunCounters, LunCountersSnapshot};
use crate::scst::device::{ScstStats, ScstStatsSnapshot};
use crate::tcmu::{TcmuStats, TcmuStatsSnapshot};

/// The sample lines (not descriptors) of `text` that start with `prefix`.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .collect()
}

#[test]
fn devices_become_labelled_samples() {
    let tcmu = Arc::new(TcmuStats::default());
    tcmu.publish(&TcmuStatsSnapshot {
        commands_received: 12,
        commands_completed: 10,
        data_bytes: 4096 * 12,
        doorbells: 3,
        hold_us: 25,
        ..TcmuStatsSnapshot::default()
    });
    let scst = Arc::new(ScstStats::default());
    scst.publish(&ScstStatsSnapshot {
        exec: 5,
        commands_completed: 5,
        ioctls: 7,
        busy: 2,
        sessions: 1,
        ..ScstStatsSnapshot::default()
    });
    let mut recorder = LatencyRecorder::new();
    for _ in 0..4 {
        recorder.record(clock::ns_to_ticks(3_000));
    }
    recorder.flush(clock::now());
    let lun = Arc::new(LunCounters::default());
    lun.publish(&LunCountersSnapshot {
        reads: 9,
        writes: 2,
        others: 1,
        good: 8,
        medium_error: 1,
        illegal_request: 1,
        task_aborted: 1,
        bdev_errors: 1,
        bdev_outstanding: 3,
        ..LunCountersSnapshot::default()
    });
    let sources = Sources {
        devices: vec![
            DeviceSource {
                name: "disk0".into(),
                bdev: "ram0".into(),
                counters: DeviceCounters::Tcmu(tcmu),
                lun,
                latency: Some(recorder.shared()),
            },
            DeviceSource {
                name: "disk1".into(),
                bdev: "null0".into(),
                counters: DeviceCounters::Scst(scst),
                lun: Arc::default(),
                latency: None,
            },
        ],
        bdevs: ["ram0", "null0", "spare0"]
            .map(|name| BdevSource {
                name: name.into(),
                uring: None,
            })
            .into(),
        ..Sources::default()
    };
    let text = render(sources);
    let tcmu_labels = r#"{device="disk0",frontend="tcmu",bdev="ram0"}"#;
    let scst_labels = r#"{device="disk1",frontend="scst",bdev="null0"}"#;
    assert_eq!(
        samples(&text, "dataplane_device_commands_completed_total"),
        [
            format!("dataplane_device_commands_completed_total{tcmu_labels} 10"),
            format!("dataplane_device_commands_completed_total{scst_labels} 5"),
        ]
    );
    assert_eq!(
        samples(&text, "dataplane_device_doorbells_total"),
        [
            format!("dataplane_device_doorbells_total{tcmu_labels} 3"),
            format!("dataplane_device_doorbells_total{scst_labels} 7"),
        ]
    );
    assert_eq!(
        samples(&text, "dataplane_device_in_flight"),
        [
            format!("dataplane_device_in_flight{tcmu_labels} 2"),
            format!("dataplane_device_in_flight{scst_labels} 0"),
        ]
    );
    // SCST-only figures have no TCMU sample.
    assert_eq!(
        samples(&text, "dataplane_device_busy_total"),
        [format!("dataplane_device_busy_total{scst_labels} 2")]
    );
    assert_eq!(
        samples(&text, "dataplane_device_completion_hold_seconds"),
        [
            format!("dataplane_device_completion_hold_seconds{tcmu_labels} 0.000025"),
            format!("dataplane_device_completion_hold_seconds{scst_labels} 0.0"),
        ]
    );
    // The histogram: 4 commands of ~3 us, all at or below 5 us, none at
    // or below 2.5 us; only the device that records one has one.
    let buckets = samples(&text, "dataplane_device_latency_seconds_bucket");
    assert_eq!(buckets.len(), super::collector::LATENCY_BOUNDS_NS.len() + 1);
    let count_at = |le: &str| {
        buckets
            .iter()
            .find(|l| l.contains(&format!("{{le=\"{le}\",")))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no bucket {le}: {buckets:?}"))
            .to_owned()
    };
    assert_eq!(count_at("0.0000025"), "0");
    assert_eq!(count_at("0.000005"), "4");
    assert_eq!(count_at("+Inf"), "4");
    assert!(buckets.iter().all(|l| l.contains(r#"device="disk0""#)));
    assert_eq!(
        samples(&text, "dataplane_device_latency_seconds_count"),
        [format!(
            "dataplane_device_latency_seconds_count{tcmu_labels} 4"
        )]
    );
    // The LUN's figures: commands by kind, responses by status, errors by
    // sense key (every key has a sample), and the bdev side by bdev.
    let lun_samples = |family: &str, label: &str| {
        samples(&text, &format!("dataplane_{family}_total{{"))
            .iter()
            .filter(|l| l.contains(r#"device="disk0""#))
            .map(|l| {
                let (_, after) = l.split_once(&format!("{label}=\"")).unwrap();
                let (value, _) = after.split_once('"').unwrap();
                (value.to_owned(), l.rsplit(' ').next().unwrap().to_owned())
            })
            .collect::<Vec<_>>()
    };
    let pairs = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lun_samples("device_commands", "op"),
        pairs(&[("read", "9"), ("write", "2"), ("other", "1")])
    );
    assert_eq!(
        lun_samples("device_responses", "status"),
        pairs(&[
            ("GOOD", "8"),
            ("CHECK_CONDITION", "2"),
            ("BUSY", "0"),
            ("TASK_ABORTED", "1"),
            ("OTHER", "0")
        ])
    );
    let errors = lun_samples("device_errors", "sense_key");
    assert_eq!(errors.len(), 9, "{errors:?}");
    assert!(errors.contains(&("MEDIUM_ERROR".into(), "1".into())));
    assert!(errors.contains(&("ILLEGAL_REQUEST".into(), "1".into())));
    assert!(errors.contains(&("NOT_READY".into(), "0".into())));
    assert_eq!(
        samples(&text, "dataplane_bdev_queue_depth"),
        [
            r#"dataplane_bdev_queue_depth{bdev="ram0"} 3"#,
            r#"dataplane_bdev_queue_depth{bdev="null0"} 0"#,
            r#"dataplane_bdev_queue_depth{bdev="spare0"} 0"#,
        ]
    );
    assert_eq!(
        samples(&text, "dataplane_bdev_errors_total")[0],
        r#"dataplane_bdev_errors_total{bdev="ram0"} 1"#
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn an_empty_catalog_still_describes_every_family() {
    let text = render(Sources::default());
    for family in [
        "dataplane_device_commands_received counter",
        "dataplane_device_latency_seconds histogram",
        "dataplane_reactor_busy_seconds counter",
        "dataplane_bdev_completed counter",
        "dataplane_device_commands counter",
        "dataplane_device_responses counter",
        "dataplane_device_errors counter",
        "dataplane_bdev_queue_depth gauge",
        "dataplane_bdev_errors counter",
        "dataplane_bdev info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}: {text}"
        );
    }
    assert!(samples(&text, "dataplane_").is_empty(), "{text}");
}

#[test]
fn the_endpoint_answers_and_stops_when_dropped() {
    let catalog = MetricsCatalog::new();
    let server = MetricsServer::start("127.0.0.1:0", Arc::clone(&catalog)).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let get = |request: &[u8]| {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = get(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("# EOF\n"), "{answer}");
    let answer = get(b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && answer.contains("Allow: GET"),
        "{answer}"
    );
    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener closed with the server"
    );
}

#[test]
fn bad_addresses_are_named() {
    let e = MetricsServer::start("nowhere", MetricsCatalog::new()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--metrics-listen \"nowhere\": not an address"),
        "{e}"
    );
    let taken = MetricsServer::start("127.0.0.1:0", MetricsCatalog::new()).unwrap();
    let again = taken.local_addr().to_string();
    let e = MetricsServer::start(&again, MetricsCatalog::new()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("--metrics-listen {again}: cannot listen")),
        "{e}"
    );
}

//! Audit sinks and the full-queue behaviour, without a gateway.
use super::spare::SPARE_LARGEST;
use super::*;

fn record(i: u64) -> Record {
    Record {
        time: Timestamp::now(),
        kind: "request",
        request_id: format!("r{i}"),
        tenant: Some("acme".into()),
        service: None,
        user_id: Some("alice".into()),
        client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        method: "GET".into(),
        route: Some("/app".into()),
        operation: Some("GetApp".into()),
        decision: "forwarded",
        code: None,
        status: 200,
        upstream_status: Some(200),
        latency_ms: 1.5,
        bytes_in: 0,
        bytes_out: 10,
        duration_ms: None,
        frames_in: None,
        frames_out: None,
    }
}

#[tokio::test]
async fn file_sink_rotates_by_size_and_reopens_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let settings = AuditSettings {
        sink: Sink::File {
            path: path.clone(),
            max_bytes: 1_000,
            keep: 2,
        },
        queue_size: 100,
        on_full: OnFull::Block,
        batch: 1,
    };
    let (log, writer) = channel(settings, None);
    let task = tokio::spawn(writer.run());
    for i in 0..40 {
        log.write(&record(i).entry()).await;
    }
    // Moved away (as logrotate does), then reopened on request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
    log.reopen();
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.write(&record(99).entry()).await;
    drop(log);
    task.await.unwrap();
    let current = std::fs::read_to_string(&path).unwrap();
    assert_eq!(current.lines().count(), 1, "{current}");
    assert!(current.contains("\"request_id\":\"r99\""));
    let one = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
    assert!(
        one.len() as u64 <= 1_000 + 400,
        "rotated at about max_bytes"
    );
    assert!(dir.path().join("audit.log.2").exists());
    assert!(!dir.path().join("audit.log.3").exists(), "keep = 2");
    for line in one.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["decision"], "forwarded");
        assert!(
            v.get("frames_in").is_none(),
            "socket fields only for sockets"
        );
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_with_drop() {
    let settings = AuditSettings {
        sink: Sink::Stdout,
        queue_size: 2,
        on_full: OnFull::Drop,
        batch: 10,
    };
    // No writer running: the queue fills after two records.
    let (log, _writer) = channel(settings, None);
    let before = metrics::get()
        .audit_dropped
        .with_label_values(&["stdout"])
        .get();
    for i in 0..5 {
        log.write(&record(i).entry()).await;
    }
    let after = metrics::get()
        .audit_dropped
        .with_label_values(&["stdout"])
        .get();
    assert_eq!(after - before, 3);
}

#[tokio::test]
async fn a_full_queue_blocks_with_block() {
    let settings = AuditSettings {
        sink: Sink::Stdout,
        queue_size: 1,
        on_full: OnFull::Block,
        batch: 10,
    };
    let (log, _writer) = channel(settings, None);
    log.write(&record(1).entry()).await;
    let second =
        tokio::time::timeout(Duration::from_millis(200), log.write(&record(2).entry())).await;
    assert!(second.is_err(), "the second write must wait for room");
}

#[test]
fn spare_buffers_are_kept_emptied_up_to_a_bound_and_large_ones_dropped() {
    let spare = Spare::default();
    assert_eq!(spare.take().capacity(), 0, "none yet: a new buffer");
    let mut lines: Vec<Line> = (0..5).map(|_| b"{\"x\":1}".to_vec()).collect();
    lines.push(vec![0; SPARE_LARGEST + 1]);
    spare.give(&mut lines, 3);
    assert!(lines.is_empty());
    let kept = spare.0.lock().unwrap();
    assert_eq!(kept.len(), 3);
    assert!(kept
        .iter()
        .all(|l| l.is_empty() && l.capacity() <= SPARE_LARGEST));
    drop(kept);
    let mut more = vec![vec![1u8; 10]];
    spare.give(&mut more, 3);
    assert_eq!(spare.0.lock().unwrap().len(), 3, "full: dropped");
    let again = spare.take();
    assert!(again.is_empty() && again.capacity() > 0);
}

#[tokio::test]
async fn written_lines_come_back_as_buffers_for_the_next_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let settings = AuditSettings {
        sink: Sink::File {
            path: path.clone(),
            max_bytes: 0,
            keep: 0,
        },
        queue_size: 100,
        on_full: OnFull::Block,
        batch: 4,
    };
    let (log, writer) = channel(settings, None);
    let spare = Arc::clone(&log.spare);
    let task = tokio::spawn(writer.run());
    for i in 0..3 {
        log.write(&record(i).entry()).await;
    }
    // Written within the writer's gather time, then handed back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while spare.0.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "buffers not given back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next record is encoded into one of them, whole and correct.
    log.write(&record(7).entry()).await;
    assert_eq!(spare.0.lock().unwrap().len(), 2);
    drop(log);
    task.await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, i) in lines.iter().zip([0, 1, 2, 7]) {
        // The same record but for its time (taken when it was made).
        let mut got: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(&record(i).to_json()).unwrap();
        assert!(got["time"].is_string());
        got["time"].take();
        want["time"].take();
        assert_eq!(got, want);
    }
}

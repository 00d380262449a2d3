//! `plugin-host serve` keeps serving whatever happens to its stderr: a reader that has gone
//! (writes fail with EPIPE) or a pipe nobody reads (writes would block forever). Log lines are
//! then dropped and counted, never waited for, and shutdown stays clean.

use crate::util::{Served, scratch};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// More requests than the ~530 after which a full 64 KiB pipe used to stall the whole server.
const REQUESTS: usize = 2_000;
/// How long one request may take before the test calls the server stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the whole batch of requests may take.
const BATCH_LIMIT: Duration = Duration::from_secs(30);

/// Starts `serve` with the sample plugins and `stderr`, and waits until it listens. The test's
/// copy of the pipe's write end goes with the command: the child holds the only one.
fn start(name: &str, stderr: std::io::PipeWriter) -> Served {
    let config = sample_plugins::stage(&scratch(name)).expect("stage the sample plugins");
    Served::start_with(
        &["--config".as_ref(), config.as_os_str()],
        None,
        stderr.into(),
    )
}

/// Sends `count` requests for `target`, one connection each, and asserts that every one is
/// answered 200 and that they all take less than [`BATCH_LIMIT`].
fn answers(addr: SocketAddr, count: usize, target: &str) {
    let started = Instant::now();
    for i in 0..count {
        match get(addr, target) {
            Ok(200) => {}
            Ok(status) => panic!("request {i} was answered {status}"),
            Err(e) => panic!("request {i} failed after {:?}: {e}", started.elapsed()),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < BATCH_LIMIT,
        "{count} requests took {elapsed:?} (limit {BATCH_LIMIT:?})"
    );
}

/// Asserts that `/healthz` is answered 200 within a second.
fn healthy(addr: SocketAddr) {
    let started = Instant::now();
    assert_eq!(get(addr, "/healthz"), Ok(200));
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "/healthz took {elapsed:?}"
    );
}

/// Sends SIGTERM and asserts that the server exits with status 0.
fn terminate(server: Served) {
    server.terminate();
    let (status, _) = server.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

/// `GET target` over a fresh connection, with timeouts: the status, or why there is none.
fn get(addr: SocketAddr, target: &str) -> Result<u16, String> {
    let shown = if target.len() > 40 {
        format!("{}... ({} bytes)", &target[..40], target.len())
    } else {
        target.to_owned()
    };
    let fail = |e: std::io::Error| format!("GET {shown}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(fail)?;
    let head = String::from_utf8_lossy(&raw);
    head.lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {shown}: no status line in {head:?} (an empty reply?)"))
}

#[test]
fn serve_answers_everything_after_the_stderr_reader_has_gone() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let server = start("logsink-gone", writer);
    // Like `plugin-host serve 2> >(head -3)`: the reader goes once the server is up, and every
    // later log write fails with EPIPE.
    drop(reader);
    answers(server.addr, REQUESTS, "/hello/world");
    healthy(server.addr);
    terminate(server);
}

#[test]
fn serve_answers_everything_while_stderr_is_full_then_reports_what_it_dropped() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let server = start("logsink-full", writer);
    // Nobody reads the pipe yet. Each access line carries the 4 KiB path, so 2,000 of them
    // (8 MiB) overflow the pipe and the host's 1 MiB log buffer many times over.
    let long = format!("/hello/{}", "x".repeat(4096));
    answers(server.addr, REQUESTS, &long);
    healthy(server.addr);

    // Now read: the host's log writer gets going again and reports what it dropped.
    let (lines, received) = mpsc::channel::<String>();
    let pump = std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) if line.contains("log lines were dropped") => break line,
            Ok(_) => {}
            Err(_) => panic!("no report of dropped log lines within 10 s of reading stderr"),
        }
    };
    let count: u64 = report
        .split("plugin-host: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the report: {report}"));
    assert!(count > 0, "{report}");
    assert!(
        report.ends_with("log lines were dropped (the log sink was full or failing)"),
        "{report}"
    );

    terminate(server);
    pump.join().unwrap();
    // The sink works again: everything after the report is written whole, nothing else dropped.
    let rest: Vec<String> = received.try_iter().collect();
    let shutdown = rest.join("\n");
    assert!(
        rest.iter().any(|l| l.contains("shutdown signal received")),
        "{shutdown}"
    );
    assert!(
        rest.iter().any(|l| l.contains("stopping plugins")),
        "{shutdown}"
    );
    for unwanted in ["dropped", "panicked", "ERROR", "tracing-subscriber"] {
        assert!(!shutdown.contains(unwanted), "{unwanted} in\n{shutdown}");
    }
}

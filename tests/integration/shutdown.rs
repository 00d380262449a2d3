//! Shutdown of `plugin-host serve`: after the grace period every plugin with no call running
//! stops, in reverse order; a plugin with a call still running is named once and not stopped;
//! connections that never sent a full request do not hold shutdown back.

use crate::util::{Served, faulty, line_with, samples, scratch, write_config};
use std::io::Write;
use std::time::Duration;

#[test]
fn after_the_grace_period_idle_plugins_stop_in_reverse_and_a_busy_one_is_named_once() {
    let dir = scratch("shutdown-busy");
    let s = samples();
    let config = write_config(
        &dir,
        &[
            (&s.hello, "hello", ""),
            (faulty(), "sleepy", ""),
            (&s.counter, "counter", ""),
        ],
    );
    let served = Served::start(
        &[
            "--grace".as_ref(),
            "1".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        None,
    );
    // A call that outlives the grace period; nobody reads its answer.
    let mut hung = std::net::TcpStream::connect(served.addr).unwrap();
    hung.write_all(b"GET /faulty/sleep?ms=8000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, stderr) = served.terminate_within(Duration::from_secs(4));
    assert_eq!(status.code(), Some(3), "{stderr}");
    let position = |needles: &[&str]| line_with(&stderr, needles);
    // Reverse order: counter, then (not) sleepy, then hello.
    let counter = position(&["stopping", "instance=\"counter\""]);
    let hello = position(&["stopping", "instance=\"hello\""]);
    assert!(counter < hello, "order:\n{stderr}");
    let named: Vec<&str> = stderr.lines().filter(|l| l.contains("`sleepy`")).collect();
    assert_eq!(named.len(), 1, "named once:\n{stderr}");
    assert!(
        named[0].contains("not stopped: a call to GET /faulty/sleep is still running"),
        "{}",
        named[0]
    );
    assert!(!stderr.contains("drop them"), "library advice:\n{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains(" stop") && l.contains("instance=\"sleepy\"")),
        "the busy plugin was not stopped:\n{stderr}"
    );
}

#[test]
fn a_half_sent_request_does_not_hold_shutdown_back() {
    let dir = scratch("shutdown-half");
    let config = write_config(&dir, &[(&samples().hello, "hello", "")]);
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let mut half = std::net::TcpStream::connect(served.addr).unwrap();
    half.write_all(b"GET /hello HTTP/1.1\r\nHo").unwrap();
    let mut silent = std::net::TcpStream::connect(served.addr).unwrap();
    // A finished exchange on a kept-alive connection, now idle.
    silent
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The default grace period is 10 s: neither connection made it wait.
    let (status, stderr) = served.terminate_within(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
}

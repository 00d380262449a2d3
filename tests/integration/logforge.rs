//! What a plugin supplies as the reason of a failure (a handler's error, a panic message, a
//! program's `error`, `busy` or `refuse` text) reaches the host's log and `check`'s output as
//! the plugin's own log lines do: escaped, so that it cannot forge a line of the host's, and cut
//! at `LOG_LINE_MAX`, so that it cannot flood one. And the failure reasons are logged apart from
//! the access log, so that turning the access log off keeps them.

use crate::util::{Served, faulty, host, http, program, scratch, serve};
use plugin_host::limits::LOG_LINE_MAX;
use std::time::Duration;

/// The access log line the fixtures put after a newline in their reasons (`faulty`'s
/// `FORGED`, `answers.py`'s `FORGED`).
const FORGED: &str =
    "2026-01-01T00:00:00.000000Z  INFO plugin_host::access: method=GET path=/forged status=200";

/// The longest line the host may write for a failure: the reason's `LOG_LINE_MAX`, and the
/// host's own words around it (the time, the level, the plugin, its file, the route).
const LINE_MAX: usize = LOG_LINE_MAX + 1024;

/// Checks the served host's log `log`: each of `reasons` is in it, its newline escaped, and no
/// line begins with the forged line or is longer than [`LINE_MAX`].
#[track_caller]
fn escaped_and_bounded(log: &str, reasons: &[&str]) {
    for reason in reasons {
        let escaped = format!("{reason}\\n{FORGED}");
        assert!(log.contains(&escaped), "no `{escaped}` in:\n{log}");
    }
    for line in log.lines() {
        assert!(!line.starts_with(FORGED), "a forged line:\n{line}");
        assert!(
            line.len() <= LINE_MAX,
            "a line of {} bytes, over {LINE_MAX}: {}...",
            line.len(),
            line.chars().take(200).collect::<String>()
        );
    }
}

/// Checks that the log `log` has the refusal of a poisoned instance, quoting the panic message
/// that ends with `panic` and a newline, escaped.
#[track_caller]
fn poisoned_quoting(log: &str, panic: &str) {
    let quoted = format!("{panic}\\n{FORGED}); restart the host to serve it again");
    assert!(
        log.lines()
            .any(|l| l.contains("out of service: it panicked earlier (") && l.contains(&quoted)),
        "no poisoned refusal quoting `{quoted}` in:\n{log}"
    );
}

/// `faulty`'s entry, with `extra` lines.
fn faulty_entry(extra: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = \"faulty\"\n{extra}\n",
        faulty().display().to_string()
    )
}

/// Serves the configuration `text`, sends `GET target` for each `(target, status)`, which must
/// answer `status`, and returns the host's log.
fn served_log(test: &str, text: &str, calls: &[(&str, u16)]) -> String {
    let served = serve(test, text);
    for (target, status) in calls {
        let response = http(served.addr, "GET", target, b"");
        assert_eq!(response.status, *status, "{target}: {}", response.text());
    }
    served.terminate_within(Duration::from_secs(10)).1
}

#[test]
fn an_in_process_library_cannot_forge_or_flood_the_log_with_a_failure_reason() {
    // Not its panic: the Rust standard library compiled into the plugin prints the message
    // itself, before the host sees it (the isolated case covers the panic's failure line).
    let log = served_log(
        "logforge-in-process",
        &faulty_entry(""),
        &[("/faulty/forge", 500)],
    );
    escaped_and_bounded(&log, &["the database is down"]);
    assert!(log.contains("xxx [cut]"), "no cut reason in:\n{log}");
}

#[test]
fn an_isolated_library_cannot_forge_or_flood_the_log_with_a_failure_reason_or_panic() {
    let log = served_log(
        "logforge-isolated",
        &faulty_entry("isolation = \"process\""),
        &[
            ("/faulty/forge", 500),
            ("/faulty/forge-panic", 500),
            ("/faulty/forge", 503),
        ],
    );
    escaped_and_bounded(&log, &["the database is down", "deliberate handler panic"]);
    assert!(log.contains("xxx [cut]"), "no cut reason in:\n{log}");
    poisoned_quoting(&log, "deliberate handler panic");
}

#[test]
fn a_program_cannot_forge_or_flood_the_log_with_an_error_busy_or_panic_answer() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"forge\"]\n",
        program("answers.py").display().to_string()
    );
    let log = served_log(
        "logforge-program",
        &text,
        &[
            ("/forge/error", 500),
            ("/forge/busy", 503),
            ("/forge/panic", 500),
            ("/forge/error", 503),
        ],
    );
    escaped_and_bounded(
        &log,
        &["the database is down", "too busy", "deliberate panic"],
    );
    assert!(log.contains("xxx [cut]"), "no cut reason in:\n{log}");
    poisoned_quoting(&log, "deliberate panic");
}

#[test]
fn a_program_breaking_the_protocol_cannot_forge_the_line_of_its_end() {
    // The host quotes the frame's `type` as the reason the process ended, when it restarts it.
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"forge\"]\n",
        program("answers.py").display().to_string()
    );
    let served = serve("logforge-protocol", &text);
    assert_eq!(http(served.addr, "GET", "/forge/protocol", b"").status, 502);
    // Serving again: the supervisor has logged why the process ended, and restarted it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http(served.addr, "GET", "/forge/error", b"").status != 500 {
        assert!(std::time::Instant::now() < deadline, "not restarted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = served.terminate_within(Duration::from_secs(10)).1;
    assert!(log.contains("restarting it in"), "{log}");
    escaped_and_bounded(&log, &["protocol breach"]);
}

#[test]
fn a_programs_refuse_reason_is_escaped_in_check_and_serve() {
    let dir = scratch("logforge-refuse");
    let config = dir.join("plugins.toml");
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"refuse\"]\n",
        program("answers.py").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    for command in ["check", "serve"] {
        let mut host = host();
        host.arg(command);
        if command == "serve" {
            host.args(["--listen", "127.0.0.1:0"]);
        }
        let output = host.arg("--config").arg(&config).output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{command}:\n{said}");
        let expected = format!("it refused to run: the database is down\\n{FORGED}\\x1b[31m red");
        assert!(
            said.contains(&expected),
            "{command}: no `{expected}` in:\n{said}"
        );
        assert!(
            !said.contains('\x1b'),
            "{command}: an escape code in:\n{said}"
        );
        escaped_and_bounded(&said, &[]);
    }
}

#[test]
fn the_failure_reasons_stay_in_the_log_with_the_access_log_off() {
    let config = scratch("logforge-access-off").join("plugins.toml");
    std::fs::write(&config, faulty_entry("")).unwrap();
    let served = Served::start(
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--log-level".as_ref(),
            "info,plugin_host::access=off".as_ref(),
        ],
        None,
    );
    for target in ["/faulty/error", "/faulty/ok"] {
        http(served.addr, "GET", target, b"");
    }
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    let reason = "handler for GET /faulty/error failed: deliberate handler failure";
    assert!(log.contains(reason), "no `{reason}` in:\n{log}");
    let target = "plugin_host::failure: plugin `faulty` (";
    assert!(log.contains(target), "no `{target}` in:\n{log}");
    assert!(
        !log.contains("plugin_host::access"),
        "an access line with the access log off:\n{log}"
    );
}

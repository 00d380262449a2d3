//! Plugin code that crashes the real `plugin-host serve`: the process dies by the plugin's
//! signal, and exactly one line on standard error, a log line at ERROR tagged with the plugin's
//! and the instance's names, names the instance, its file and the call.

use crate::util::{
    Served, fixture, go_library, host, http, samples, scratch, wait_for_exit, write_config,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a crash line starts with.
const CRASH_LINE: &str = "plugin-host: fatal ";

/// Writes a configuration serving `plugins` (file, instance name) into a fresh folder.
fn config(test: &str, plugins: &[(&Path, &str)]) -> PathBuf {
    let entries: Vec<(&Path, &str, &str)> = plugins.iter().map(|&(p, n)| (p, n, "")).collect();
    write_config(&scratch(test), &entries)
}

/// Starts `plugin-host serve` and waits until it listens.
fn serve(config: &Path) -> Served {
    Served::start(&["--config".as_ref(), config.as_os_str()], None)
}

/// Sends a request the host dies answering; whatever happens to the connection is ignored.
fn request_crash(addr: SocketAddr, target: &str) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut ignored = Vec::new();
    let _ = stream.read_to_end(&mut ignored);
}

/// The crash lines in `stderr`, which must hold exactly one, shaped as the log's lines at
/// ERROR: `TIME ERROR plugin: MESSAGE plugin="crash" instance="INSTANCE"`; returns its
/// message and its instance.
#[track_caller]
fn the_crash_line(stderr: &str) -> (&str, &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(CRASH_LINE)).collect();
    assert_eq!(lines.len(), 1, "not exactly one crash line in:\n{stderr}");
    let (time, rest) = lines[0].split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.len() == 27, "{time}");
    let rest = rest.strip_prefix("ERROR plugin: ").expect(lines[0]);
    let (message, instance) = rest
        .rsplit_once(" plugin=\"crash\" instance=")
        .expect(lines[0]);
    (message, instance.trim_matches('"'))
}

/// Serves the crash fixture (as `crashy`) next to the greeter sample, checks both answer, then
/// requests `target`; returns how the host died.
fn crash_a_route(test: &str, target: &str) -> (std::process::ExitStatus, String) {
    let crash = fixture!("FIXTURE_CRASH");
    let config = config(test, &[(&samples().greeter, "greeter"), (&crash, "crashy")]);
    let served = serve(&config);
    let addr = served.addr;
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    assert_eq!(http(addr, "GET", "/c/hello", b"").text(), "hello from C");
    request_crash(addr, target);
    served.wait()
}

#[test]
fn a_segfault_in_a_handler_names_the_instance_file_and_route() {
    let (status, stderr) = crash_a_route("crash-segv", "/crash/segv");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}:\n{stderr}");
    assert_eq!(
        the_crash_line(&stderr),
        (
            format!(
                "plugin-host: fatal SIGSEGV in plugin instance \"crashy\" ({}) during GET \
                 /crash/segv",
                fixture!("FIXTURE_CRASH").display()
            )
            .as_str(),
            "crashy"
        )
    );
}

#[test]
fn an_abort_in_a_handler_is_reported_and_kills_by_sigabrt() {
    let (status, stderr) = crash_a_route("crash-abort", "/crash/abort");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}:\n{stderr}");
    assert_eq!(
        the_crash_line(&stderr).0,
        format!(
            "plugin-host: fatal SIGABRT in plugin instance \"crashy\" ({}) during GET /crash/abort",
            fixture!("FIXTURE_CRASH").display()
        )
    );
}

#[test]
fn a_stack_overflow_is_reported_then_rust_reports_it() {
    let (status, stderr) = crash_a_route("crash-overflow", "/crash/overflow");
    // Rust's handler, to which ours chains, reports the overflow and aborts.
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}:\n{stderr}");
    let (ours, _) = the_crash_line(&stderr);
    assert!(
        ours.starts_with("plugin-host: fatal SIGSEGV in plugin instance \"crashy\" (")
            && ours.ends_with(") during GET /crash/overflow"),
        "{ours}"
    );
    let position = |needle: &str| {
        stderr
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stderr}"))
    };
    assert!(
        position(CRASH_LINE) < position("has overflowed its stack"),
        "{stderr}"
    );
}

#[test]
fn a_crash_in_start_names_the_lifecycle_call() {
    let crash = fixture!("FIXTURE_CRASH_START");
    let config = config(
        "crash-start",
        &[(&samples().greeter, "greeter"), (&crash, "early")],
    );
    let mut child = host()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin-host");
    let (status, stderr) = wait_for_exit(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}:\n{stderr}");
    assert_eq!(
        the_crash_line(&stderr).0,
        format!(
            "plugin-host: fatal SIGSEGV in plugin instance \"early\" ({}) during start",
            crash.display()
        )
    );
}

#[test]
fn a_fatal_signal_outside_plugin_code_writes_nothing_and_kills_as_before() {
    let crash = fixture!("FIXTURE_CRASH");
    let config = config("crash-idle", &[(&crash, "crashy")]);
    let served = serve(&config);
    assert_eq!(http(served.addr, "GET", "/crash/ok", b"").text(), "fine");
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-ABRT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, stderr) = served.wait();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}:\n{stderr}");
    assert!(!stderr.contains(CRASH_LINE), "{stderr}");
}

#[test]
fn with_a_go_plugin_loaded_a_crash_is_still_reported() {
    let Some(go) = go_library(env!("FIXTURE_GO")) else {
        return;
    };
    let crash = fixture!("FIXTURE_CRASH");
    let config = config("crash-go", &[(&go, "gopher"), (&crash, "crashy")]);
    let served = serve(&config);
    let addr = served.addr;
    assert_eq!(http(addr, "GET", "/go/hello", b"").text(), "hello from Go");
    // A fault in Go code goes to Go's handler, installed in front of ours: Go recovers it, and
    // nothing is reported.
    assert_eq!(http(addr, "GET", "/go/recover", b"").text(), "recovered");
    // A fault in C code on a thread that is not Go's is forwarded by Go's handler to ours.
    request_crash(addr, "/crash/segv");
    let (status, stderr) = served.wait();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}:\n{stderr}");
    assert_eq!(
        the_crash_line(&stderr).0,
        format!(
            "plugin-host: fatal SIGSEGV in plugin instance \"crashy\" ({}) during GET /crash/segv",
            crash.display()
        )
    );
}

//! Everything a plugin program starts ends with it. The fixture's daemon leaves the program's
//! process group and session (`setsid`, then a second fork, as daemons do); it must still be
//! gone after the host stops the plugin, after the program crashes and is restarted, and after
//! the host itself is killed with SIGKILL. That holds where the host can give each child a PID
//! namespace (as root, or through a user namespace); elsewhere the tests that need one are
//! skipped, except under CI.

use crate::util::{Served, process_options, scratch};
use plugin_host::ErrorKind;
use plugin_host::process::{ChildState, ProcessOptions, ProcessPlugin};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn descendants() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/programs/descendants.py")
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Waits at most 5 s for process `pid` to end; fails naming `after` if it does not.
#[track_caller]
fn assert_ends(pid: u32, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "the daemon {pid} started by the plugin program still runs 5 s after {after}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fixture, started through the library with `options`.
fn program(args: &[&str], options: ProcessOptions) -> plugin_host::Registry {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    let plugin = ProcessPlugin::program(descendants(), &args, &[], options);
    let registry = plugin_host::Registry::new();
    registry
        .register(plugin.create(None, &json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    registry
}

fn get(router: &plugin_host::Router, path: &str) -> String {
    let response = router
        .dispatch(&plugin_host::Request::new("GET", path))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    String::from_utf8(response.body).unwrap()
}

/// Starts the fixture's daemon; its pid as this process sees it.
fn start_daemon(router: &plugin_host::Router) -> u32 {
    let pid = get(router, "/daemon");
    let pid: u32 = pid.parse().unwrap_or_else(|_| panic!("{pid:?}"));
    assert!(running(pid), "the daemon {pid} does not run");
    pid
}

/// Whether this system lets a process make a PID namespace (as root, or inside a user
/// namespace), as `unshare(1)` finds; the tests that need one are skipped without, except under
/// CI. Without `unshare(1)` they run.
fn namespaces() -> bool {
    let works = |args: &[&str]| {
        std::process::Command::new("unshare")
            .args(args)
            .args(["--pid", "--fork", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .map_or(true, |status| status.success())
    };
    let available = works(&[]) || works(&["--user", "--map-root-user"]);
    assert!(
        available || std::env::var_os("CI").is_none(),
        "no PID namespace on this system"
    );
    if !available {
        eprintln!("skipped: no PID namespace on this system");
    }
    available
}

fn process_of(registry: &plugin_host::Registry) -> (Option<u32>, ChildState) {
    let (_, pid, state) = registry.get("descendants").unwrap().process().unwrap();
    (pid, state)
}

#[test]
fn a_daemon_started_by_a_program_ends_when_the_plugin_stops() {
    if !namespaces() {
        return;
    }
    let registry = program(&[], process_options());
    let router = registry.router().unwrap();
    let daemon = start_daemon(&router);
    drop(router);
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    assert_ends(daemon, "stop");
}

#[test]
fn a_daemon_started_by_a_program_ends_when_the_program_crashes() {
    if !namespaces() {
        return;
    }
    let registry = program(&[], process_options());
    let router = registry.router().unwrap();
    let daemon = start_daemon(&router);
    let (old, _) = process_of(&registry);
    let error = router
        .dispatch(&plugin_host::Request::new("GET", "/crash"))
        .expect_err("it exits when called");
    assert!(
        matches!(error.kind(), ErrorKind::ChildLost { .. }),
        "{error:?}"
    );
    // Restarted, with a new process...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (pid, state) = process_of(&registry);
        if state == ChildState::Serving && pid != old {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted: {state:?} {pid:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...and nothing of the old one left.
    assert_ends(daemon, "the program crashed and was restarted");
    // The new program's daemon goes with it in turn.
    let second = start_daemon(&router);
    drop(router);
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    assert_ends(second, "stop");
}

#[test]
fn a_daemon_started_by_a_program_ends_when_the_host_is_killed() {
    if !namespaces() {
        return;
    }
    let config = scratch("contain-children-sigkill").join("plugins.toml");
    let text = format!(
        "[[plugin]]\nexec = {:?}\n",
        descendants().display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let mut served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let call = |path: &str| {
        let response = crate::util::http(served.addr, "GET", path, b"");
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        response.text()
    };
    let daemon: u32 = call("/daemon").parse().unwrap();
    assert!(running(daemon), "the daemon {daemon} does not run");
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    assert_ends(daemon, "the host was killed with SIGKILL");
}

#[test]
fn sigterm_reaches_a_program_in_a_namespace_through_its_init() {
    // `linger`: it answers stop but does not exit, and has no handler for SIGTERM.
    let options = ProcessOptions {
        stop_timeout: Duration::from_millis(300),
        ..process_options()
    };
    let registry = program(&["linger"], options);
    let router = registry.router().unwrap();
    let daemon = namespaces().then(|| start_daemon(&router));
    drop(router);
    let begun = Instant::now();
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    // SIGTERM ended it (SIGKILL would have come 2 s after SIGTERM): the namespace's first
    // process, which the kernel shields from signals it has no handler for, passed it on.
    let took = begun.elapsed();
    assert!(took < Duration::from_millis(2000), "{took:?}");
    if let Some(daemon) = daemon {
        assert_ends(daemon, "SIGTERM");
    }
}

#[test]
fn pid_namespace_false_runs_the_program_as_the_hosts_own_child() {
    let config = scratch("contain-children-no-namespace").join("plugins.toml");
    let text = format!(
        "[[plugin]]\nexec = {:?}\npid_namespace = false\n",
        descendants().display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let response = crate::util::http(served.addr, "GET", "/pids", b"");
    let pids: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let health = crate::util::http(served.addr, "GET", "/healthz", b"");
    let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    let pid = &health["processes"]["descendants"]["pid"];
    assert_eq!((&pids["host"], &pids["own"]), (pid, pid), "{pids} {health}");
}

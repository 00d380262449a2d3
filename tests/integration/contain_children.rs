//! Everything a plugin program starts ends with it. The fixture's daemon leaves the program's
//! process group and session (`setsid`, then a second fork, as daemons do); it must still be
//! gone after the host stops the plugin, after the program crashes and is restarted, and after
//! the host itself is killed with SIGKILL. Each test runs twice: with a PID namespace (where
//! the system allows one, as root or through a user namespace; elsewhere the host falls back to
//! the subreaper, and so does the test), and with `pid_namespace = false`, where the outer
//! process is a subreaper that kills what is left below it. The outer process (`plugin-host`,
//! the worker executable, in its init mode) must also end as the program did, pass SIGTERM on
//! once, and report a program that cannot start as the same error.

use crate::util::{Served, process_options, running, scratch, unique};
use plugin_host::ErrorKind;
use plugin_host::process::{ChildState, ProcessOptions, ProcessPlugin};
use serde_json::json;
use std::time::{Duration, Instant};

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

/// The options of the library tests: `plugin-host` as the worker executable, and a namespace
/// or not.
fn options(pid_namespace: bool) -> ProcessOptions {
    ProcessOptions {
        pid_namespace,
        ..process_options()
    }
}

/// The fixture, started through the library with `options`, as instance `name`.
fn program(name: &str, args: &[&str], options: ProcessOptions) -> plugin_host::Registry {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    let plugin =
        ProcessPlugin::program(crate::util::program("descendants.py"), &args, &[], options);
    let registry = plugin_host::Registry::new();
    registry
        .register(plugin.create(Some(name), &json!({})).unwrap())
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
/// namespace), as `unshare(1)` finds; required under CI. Without `unshare(1)`, true.
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
    available
}

/// Checks, through the fixture's `/pids`, that the program `pid` (the pid the host reports, its
/// outer process) runs the program contained as asked: in a namespace (where it is 2, below
/// its init, 1), or below a subreaper, the outer process itself.
#[track_caller]
fn assert_contained(pids: &serde_json::Value, pid: u64, pid_namespace: bool) {
    assert_ne!(pids["host"], json!(pid), "{pids}");
    if pid_namespace && namespaces() {
        assert_eq!((&pids["own"], &pids["parent"]), (&json!(2), &json!(1)));
    } else {
        assert_eq!(pids["host"], pids["own"], "{pids}");
        assert_eq!(pids["parent"], json!(pid), "{pids}");
    }
}

/// A descriptor the host left without close-on-exec (one a C plugin opened, say) does not
/// reach the program: it has its standard streams, its socket (3) and what it opens itself.
fn inherits_only_its_own_descriptors(pid_namespace: bool) {
    const LEAKED: i32 = 900;
    // SAFETY: `dup2` of standard error to a number this test owns; closed below.
    assert_eq!(unsafe { libc::dup2(2, LEAKED) }, LEAKED);
    let name = unique("descendants-fds");
    let registry = program(&name, &[], options(pid_namespace));
    let router = registry.router().unwrap();
    let fds: Vec<i32> = serde_json::from_str(&get(&router, "/fds")).unwrap();
    // SAFETY: the descriptor this test made above.
    unsafe { libc::close(LEAKED) };
    assert!(!fds.contains(&LEAKED), "the program has {fds:?}");
    assert!(fds.starts_with(&[0, 1, 2, 3]), "the program has {fds:?}");
    drop(router);
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_program_inherits_only_its_own_descriptors_in_a_namespace() {
    inherits_only_its_own_descriptors(true);
}

#[test]
fn the_program_inherits_only_its_own_descriptors_below_a_subreaper() {
    inherits_only_its_own_descriptors(false);
}

fn process_of(registry: &plugin_host::Registry, name: &str) -> (Option<u32>, ChildState) {
    let (_, pid, state) = registry.get(name).unwrap().process().unwrap();
    (pid, state)
}

fn ends_when_the_plugin_stops(pid_namespace: bool) {
    let name = unique("descendants-stop");
    let registry = program(&name, &[], options(pid_namespace));
    let router = registry.router().unwrap();
    let pids: serde_json::Value = serde_json::from_str(&get(&router, "/pids")).unwrap();
    let (pid, _) = process_of(&registry, &name);
    assert_contained(&pids, u64::from(pid.unwrap()), pid_namespace);
    let daemon = start_daemon(&router);
    drop(router);
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    assert_ends(daemon, "stop");
}

#[test]
fn a_daemon_ends_when_the_plugin_stops_in_a_namespace() {
    ends_when_the_plugin_stops(true);
}

#[test]
fn a_daemon_ends_when_the_plugin_stops_below_a_subreaper() {
    ends_when_the_plugin_stops(false);
}

fn ends_when_the_program_crashes(pid_namespace: bool) {
    let name = unique("descendants-crash");
    let registry = program(&name, &[], options(pid_namespace));
    let router = registry.router().unwrap();
    let daemon = start_daemon(&router);
    let (old, _) = process_of(&registry, &name);
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
        let (pid, state) = process_of(&registry, &name);
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
fn a_daemon_ends_when_the_program_crashes_in_a_namespace() {
    ends_when_the_program_crashes(true);
}

#[test]
fn a_daemon_ends_when_the_program_crashes_below_a_subreaper() {
    ends_when_the_program_crashes(false);
}

/// `plugin-host serve` with the fixture as plugin `descendants`, with `extra` configuration.
fn serve(test: &str, extra: &str) -> Served {
    let text = format!(
        "[[plugin]]\nexec = {:?}\n{extra}\n",
        crate::util::program("descendants.py").display().to_string()
    );
    crate::util::serve(test, &text)
}

fn call(served: &Served, path: &str) -> String {
    let response = crate::util::http(served.addr, "GET", path, b"");
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.text()
}

fn ends_when_the_host_is_killed(pid_namespace: bool) {
    let mut served = serve(
        "contain-children-sigkill",
        &format!("pid_namespace = {pid_namespace}"),
    );
    let daemon: u32 = call(&served, "/daemon").parse().unwrap();
    assert!(running(daemon), "the daemon {daemon} does not run");
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    assert_ends(daemon, "the host was killed with SIGKILL");
}

#[test]
fn a_daemon_ends_when_the_host_is_killed_in_a_namespace() {
    ends_when_the_host_is_killed(true);
}

#[test]
fn a_daemon_ends_when_the_host_is_killed_below_a_subreaper() {
    ends_when_the_host_is_killed(false);
}

/// The pid `serve` reports for its plugin `descendants`, once it differs from `old`.
fn reported_pid(served: &Served, old: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = crate::util::http(served.addr, "GET", "/healthz", b"");
        let health: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        let process = &health["processes"]["descendants"];
        if let Some(pid) = process["pid"].as_u64()
            && process["state"] == "serving"
            && Some(pid) != old
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "not serving: {health}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ends_as_the_program_ended(pid_namespace: bool) {
    let served = serve(
        "contain-children-status",
        &format!("pid_namespace = {pid_namespace}"),
    );
    let first = reported_pid(&served, None);
    let pids: serde_json::Value = serde_json::from_str(&call(&served, "/pids")).unwrap();
    assert_contained(&pids, first, pid_namespace);
    let response = crate::util::http(served.addr, "GET", "/exit7", b"");
    assert_eq!(response.status, 502, "{}", response.text());
    let second = reported_pid(&served, Some(first));
    let response = crate::util::http(served.addr, "GET", "/segv", b"");
    assert_eq!(response.status, 502, "{}", response.text());
    reported_pid(&served, Some(second));
    let (_, stderr) = served.terminate_within(Duration::from_secs(10));
    // The process the host holds ended as the program did, without a core dump of its own.
    crate::util::line_with(&stderr, &["the plugin process ended (exit status: 7)"]);
    let crash = crate::util::line_with(
        &stderr,
        &["the plugin process ended (signal: 11 (SIGSEGV))"],
    );
    let line = stderr.lines().nth(crash).unwrap();
    assert!(!line.contains("core dumped"), "{line}");
}

#[test]
fn the_child_ends_as_the_program_did_in_a_namespace() {
    ends_as_the_program_ended(true);
}

#[test]
fn the_child_ends_as_the_program_did_below_a_subreaper() {
    ends_as_the_program_ended(false);
}

fn sigterm_reaches_the_program_once(pid_namespace: bool) {
    // `count`: it answers stop but does not exit; it counts the SIGTERMs it gets in `record`,
    // and exits half a second after the first.
    let record = scratch("contain-children-sigterm").join("terms");
    let options = ProcessOptions {
        stop_timeout: Duration::from_millis(300),
        ..options(pid_namespace)
    };
    let name = unique("descendants-sigterm");
    let registry = program(&name, &["count", record.to_str().unwrap()], options);
    let router = registry.router().unwrap();
    let daemon = start_daemon(&router);
    drop(router);
    let begun = Instant::now();
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    // It exited of itself after SIGTERM (SIGKILL would have come 2 s after SIGTERM)...
    let took = begun.elapsed();
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // ...which it got once, not once per level that passed it on.
    let terms = std::fs::read_to_string(&record).unwrap_or_default();
    assert_eq!(terms, "term 1\n");
    assert_ends(daemon, "SIGTERM");
}

#[test]
fn sigterm_reaches_the_program_once_in_a_namespace() {
    sigterm_reaches_the_program_once(true);
}

#[test]
fn sigterm_reaches_the_program_once_below_a_subreaper() {
    sigterm_reaches_the_program_once(false);
}

fn ends_when_the_program_is_killed(pid_namespace: bool) {
    // `stubborn`: it answers stop but does not exit, and ignores SIGTERM.
    let options = ProcessOptions {
        stop_timeout: Duration::from_millis(300),
        ..options(pid_namespace)
    };
    let name = unique("descendants-sigkill");
    let registry = program(&name, &["stubborn"], options);
    let router = registry.router().unwrap();
    let daemon = start_daemon(&router);
    drop(router);
    let begun = Instant::now();
    let _ = registry.stop_all();
    // SIGKILL came 2 s after SIGTERM, and ended everything (below a subreaper, the host sends
    // it to the outer process as its signal to kill all below it, then end).
    let took = begun.elapsed();
    assert!(took >= plugin_host::limits::SIGTERM_GRACE, "{took:?}");
    assert_ends(daemon, "SIGKILL");
}

#[test]
fn a_daemon_ends_when_the_program_is_killed_in_a_namespace() {
    ends_when_the_program_is_killed(true);
}

#[test]
fn a_daemon_ends_when_the_program_is_killed_below_a_subreaper() {
    ends_when_the_program_is_killed(false);
}

#[test]
fn a_program_that_cannot_start_is_the_same_error_through_the_outer_process() {
    for pid_namespace in [true, false] {
        let plugin =
            ProcessPlugin::program("/nonexistent/program", &[], &[], options(pid_namespace));
        let Err(error) = plugin.create(None, &json!({})) else {
            panic!("/nonexistent/program started");
        };
        let message = error.to_string();
        assert!(message.contains("No such file or directory"), "{message}");
    }
}

#[test]
fn a_host_in_a_user_namespace_of_its_own_reads_owners_as_they_show() {
    // Under `unshare --user --map-root-user`, the host (root here) has the uid map of a worker
    // in the user namespace the host makes for it, `0 0 1`: files of other users show as the
    // overflow id. Only a worker the host said so of takes that id for root's; a host must
    // not, or a folder of another user would pass for root's.
    // SAFETY: `geteuid` has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("unshare")
            .args(["--user", "--map-root-user"])
            .args(args)
            .output()
    };
    if !root || !unshare(&["true".as_ref()]).is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: needs root and unshare --user");
        return;
    }
    let dir = scratch("contain-children-userns").join("other");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        &crate::util::samples().hello,
        dir.join("libhello_plugin.so"),
    )
    .unwrap();
    std::os::unix::fs::chown(&dir, Some(1234), Some(1234)).unwrap();
    let host = sample_plugins::host_binary();
    let output = unshare(&[
        host.as_os_str(),
        "list".as_ref(),
        "--plugins-dir".as_ref(),
        dir.as_os_str(),
    ])
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is owned by user", dir.display())),
        "{stderr}"
    );
}

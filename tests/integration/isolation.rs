//! Plugins in child processes: the same library files isolated, plugin programs in Python and
//! Node.js, and what the supervisor does when a child crashes, hangs or breaks the protocol.
//! Real processes and real sockets throughout.

use crate::util::{
    check_config, fixture, http, process_options, sample_program, samples, scratch, serve,
};
use plugin_host::ErrorKind;
use plugin_host::process::{ChildState, ProcessOptions, ProcessPlugin};
use serde_json::json;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether `node` runs; without it the Node.js sample is skipped, except under CI.
fn have_node() -> bool {
    let found = Command::new("node").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "`node` is not installed"
    );
    found
}

fn health(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&http(addr, "GET", "/healthz", b"").body).unwrap()
}

/// Polls `/healthz` until the process of `plugin` is in `state`; fails after 10 s.
fn wait_for_state(addr: SocketAddr, plugin: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = health(addr);
        if health["processes"][plugin]["state"] == state {
            return health;
        }
        assert!(Instant::now() < deadline, "never {state}: {health}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether a process with this pid exists.
fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 checks for existence and permission; it sends nothing.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn plugin_programs_in_python_and_node_serve_through_plugin_host() {
    let node = have_node();
    let mut text = format!(
        "[[plugin]]\nexec = {:?}\nname = \"quotes\"\n[plugin.config]\nquotes = [\"one\", \"two\"]\n\n\
         [[plugin]]\npath = {:?}\n",
        sample_program("quote.py").display().to_string(),
        samples().hello.display().to_string(),
    );
    if node {
        text.push_str(&format!(
            "\n[[plugin]]\nexec = {:?}\n[plugin.config]\nzone = \"Europe/Paris\"\n",
            sample_program("clock.js").display().to_string()
        ));
    }
    let served = serve("programs", &text);
    let addr = served.addr;
    assert!(
        served
            .summary
            .contains("quote            1.0.0      serving     program pid"),
        "{}",
        served.summary
    );
    assert_eq!(http(addr, "GET", "/quote", b"").text(), "one");
    assert_eq!(http(addr, "GET", "/quote", b"").text(), "two");
    assert_eq!(http(addr, "GET", "/quote/1", b"").text(), "two");
    assert_eq!(http(addr, "GET", "/quote/7", b"").status, 404);
    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let echoed = crate::util::http_raw(
        addr,
        "POST",
        "/quote/echo",
        &[("content-type", "application/x-raw")],
        &body,
        None,
    );
    assert_eq!(echoed.header("content-type"), Some("application/x-raw"));
    assert!(echoed.body == body, "raw bytes come back unchanged");
    // Four calls of 400 ms at once take about 400 ms: the program answers them concurrently.
    let started = Instant::now();
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| scope.spawn(move || http(addr, "GET", "/quote/sleep?ms=400", b"").status))
            .collect();
        for call in calls {
            assert_eq!(call.join().unwrap(), 200);
        }
    });
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(http(addr, "GET", "/hello", b"").text(), "hello from Rust");
    if node {
        let clock: serde_json::Value =
            serde_json::from_slice(&http(addr, "GET", "/clock", b"").body).unwrap();
        assert_eq!(clock["zone"], "Europe/Paris");
        assert_eq!(http(addr, "POST", "/clock/reverse", b"abc").text(), "cba");
    }
    let health = health(addr);
    assert_eq!(health["processes"]["quotes"]["mode"], "program");
    let pid = health["processes"]["quotes"]["pid"].as_u64().unwrap();
    assert!(alive(pid));
    let (status, stderr) = served.terminate_within(Duration::from_secs(8));
    assert!(status.success(), "{status}\n{stderr}");
    // The program's log message, tagged with the plugin and instance names.
    assert!(
        stderr.contains("serving 2 quotes plugin=\"quote\" instance=\"quotes\""),
        "{stderr}"
    );
    assert!(!alive(pid), "the program outlived the host");
}

#[test]
fn a_program_run_by_hand_says_it_is_started_by_plugin_host_and_fails() {
    let mut commands = vec![Command::new(sample_program("quote.py"))];
    if have_node() {
        let mut node = Command::new("node");
        node.arg(sample_program("clock.js"));
        commands.push(node);
    }
    for mut program in commands {
        let output = program.env_remove("PLUGLET_PLUGIN_FD").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{program:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim(),
            "this is a plugin for plugin-host: it is started by plugin-host serve, not by hand"
        );
    }
}

#[test]
fn a_crashing_isolated_plugin_costs_only_its_own_calls_and_is_restarted() {
    let crash = fixture!("FIXTURE_CRASH");
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\n\n\
         [[plugin]]\npath = {:?}\n\n[[plugin]]\npath = {:?}\nisolation = \"process\"\n",
        crash.display().to_string(),
        samples().hello.display().to_string(),
        samples().greeter.display().to_string(),
    );
    let served = serve("crash-isolated", &text);
    let addr = served.addr;
    let first = health(addr)["processes"]["crashy"]["pid"].as_u64().unwrap();
    let outcome = std::thread::scope(|scope| {
        // Load on the other plugins, in-process and isolated, for the whole crash.
        let load: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    let target = if i % 2 == 0 { "/hello" } else { "/c/hello" };
                    (0..60)
                        .map(|_| http(addr, "GET", target, b"").status)
                        .filter(|&status| status != 200)
                        .count()
                })
            })
            .collect();
        // Three calls of the crashing plugin in flight when it dies.
        let sleeping: Vec<_> = (0..3)
            .map(|_| scope.spawn(move || http(addr, "GET", "/crash/sleep", b"")))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let crashed = http(addr, "GET", "/crash/segv", b"");
        let sleeping: Vec<_> = sleeping.into_iter().map(|t| t.join().unwrap()).collect();
        let failures: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
        (crashed, sleeping, failures)
    });
    let (crashed, sleeping, failures) = outcome;
    assert_eq!(failures, 0, "requests to other plugins failed");
    for response in sleeping.iter().chain([&crashed]) {
        assert_eq!(response.status, 502, "{}", response.text());
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            (&body["plugin"], &body["kind"]),
            (&json!("crashy"), &json!("process_ended"))
        );
    }
    // Restarted after its backoff, with a new pid, and serving again.
    let health = wait_for_state(addr, "crashy", "serving");
    let second = health["processes"]["crashy"]["pid"].as_u64().unwrap();
    assert_ne!(first, second);
    assert!(!alive(first));
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    let (status, stderr) = served.terminate_within(Duration::from_secs(8));
    assert!(status.success(), "{status}\n{stderr}");
    // The child's own crash line, and the supervisor's account of it, are in the host's log.
    assert!(
        stderr.contains("fatal SIGSEGV in plugin instance \\\"crashy\\\"")
            || stderr.contains("fatal SIGSEGV in plugin instance \"crashy\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("the plugin process ended (signal: 11 (SIGSEGV)")
            && stderr.contains("restarting it in 100ms"),
        "{stderr}"
    );
}

#[test]
fn a_plugin_that_crashes_too_often_is_quarantined() {
    let crash = fixture!("FIXTURE_CRASH");
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\nmax_crashes = 3\n\n\
         [[plugin]]\npath = {:?}\n",
        crash.display().to_string(),
        samples().hello.display().to_string(),
    );
    let served = serve("quarantine", &text);
    let addr = served.addr;
    for crash in 0..3 {
        if crash > 0 {
            wait_for_state(addr, "crashy", "serving");
        }
        assert_eq!(http(addr, "GET", "/crash/abort", b"").status, 502);
    }
    let health = wait_for_state(addr, "crashy", "quarantined");
    assert_eq!(health["status"], "degraded");
    assert!(health["processes"]["crashy"]["pid"].is_null(), "{health}");
    let response = http(addr, "GET", "/crash/ok", b"");
    assert_eq!(response.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["kind"], "quarantined");
    assert_eq!(http(addr, "GET", "/hello", b"").status, 200);
    assert_eq!(http(addr, "GET", "/healthz", b"").status, 503);
    let (_, stderr) = served.terminate_within(Duration::from_secs(8));
    assert!(
        stderr.contains("it crashed 3 times within 60s, so it is quarantined: its routes answer 503 until a reload replaces it (SIGHUP, or serve --watch, once its file or its entry changed) or the host restarts"),
        "{stderr}"
    );
}

#[test]
fn sigkill_of_the_host_leaves_no_child_behind() {
    let mut text = String::new();
    for (file, extra) in [
        (samples().hello.clone(), "isolation = \"process\""),
        (sample_program("quote.py"), ""),
    ] {
        let key = if extra.is_empty() { "exec" } else { "path" };
        text.push_str(&format!(
            "[[plugin]]\n{key} = {:?}\n{extra}\n\n",
            file.display().to_string()
        ));
    }
    let mut served = serve("sigkill", &text);
    let health = health(served.addr);
    let pids: Vec<u64> = health["processes"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{health}");
    assert!(pids.iter().all(|&pid| alive(pid)));
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "a child outlived its host: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `plugin-host check --config` of one misbehaving program between two good plugins: its own
/// verdict is a clear error, and the others pass.
fn check_misbehaving(mode: &str, extra: &str) -> String {
    let text = format!(
        "[[plugin]]\npath = {hello:?}\n\n[[plugin]]\nexec = {program:?}\nargs = [{mode:?}]\n\
         name = \"bad\"\n{extra}\n\n[[plugin]]\npath = {greeter:?}\nisolation = \"process\"\n",
        hello = samples().hello.display().to_string(),
        program = crate::util::program("misbehave.py").display().to_string(),
        greeter = samples().greeter.display().to_string(),
    );
    let started = Instant::now();
    let (code, stdout) = check_config(&format!("misbehave-{mode}"), &text);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ok    "), "{stdout}");
    assert!(
        lines[2].starts_with("ok    ") && lines[2].contains("isolated pid"),
        "{stdout}"
    );
    assert_eq!(lines[3], "1 of 3 failed", "{stdout}");
    let verdict = lines[1];
    assert!(
        verdict.starts_with("FAIL  ")
            && verdict.contains(":4: plugin `bad` (")
            && verdict.contains("the plugin process did not start: "),
        "{verdict}"
    );
    verdict.to_owned()
}

#[test]
fn a_program_that_never_answers_hello_is_a_clear_error() {
    let verdict = check_misbehaving("silent", "handshake_timeout = 1");
    assert!(
        verdict.contains("no welcome within 1s (nothing was received)"),
        "{verdict}"
    );
}

#[test]
fn a_program_that_writes_garbage_is_a_clear_error() {
    let verdict = check_misbehaving("garbage", "");
    assert!(
        verdict.contains("instead of welcome it sent a malformed frame: expected value"),
        "{verdict}"
    );
}

#[test]
fn an_oversize_frame_is_refused_without_being_allocated() {
    let verdict = check_misbehaving("oversize", "");
    assert!(
        verdict.contains("instead of welcome it sent a frame of 4294967280 bytes, over the limit"),
        "{verdict}"
    );
}

#[test]
fn a_program_that_exits_at_once_is_a_clear_error() {
    let verdict = check_misbehaving("exit", "");
    assert!(
        verdict.contains("without a welcome and exited (exit status: 3)"),
        "{verdict}"
    );
}

/// A program instance started through the library with `options`, started.
fn program(mode: &str, options: ProcessOptions) -> plugin_host::Registry {
    let plugin = ProcessPlugin::program(
        crate::util::program("misbehave.py"),
        &[mode.to_owned()],
        &[],
        options,
    );
    let registry = plugin_host::Registry::new();
    registry
        .register(plugin.create(None, &json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    registry
}

fn process_of(registry: &plugin_host::Registry, name: &str) -> (Option<u32>, ChildState) {
    let instance = registry.get(name).unwrap();
    let (_, pid, state) = instance.process().unwrap();
    (pid, state)
}

/// Waits at most 10 s for `name`'s child to be in `state` with a pid other than `old`.
fn wait_for_restart(registry: &plugin_host::Registry, name: &str, old: Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (pid, state) = process_of(registry, name);
        if state == ChildState::Serving && pid != old {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted: {state:?} {pid:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hung_child_is_killed_by_the_liveness_check_and_restarted() {
    let options = ProcessOptions {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(300),
        ..process_options()
    };
    let registry = program("deaf", options);
    let router = registry.router().unwrap();
    let (before, _) = process_of(&registry, "deaf");
    // Its first call makes it stop reading: the call is lost, and so is the next ping.
    let error = router
        .dispatch(&plugin_host::Request::new("GET", "/deaf"))
        .expect_err("the call dies with the child");
    assert!(
        matches!(error.kind(), ErrorKind::ChildLost { .. }),
        "{error:?}"
    );
    wait_for_restart(&registry, "deaf", before);
    assert!(!alive(u64::from(before.unwrap())));
    drop(router);
    registry.stop_all().unwrap();
}

#[test]
fn a_program_breaking_the_protocol_after_start_is_restarted() {
    let registry = program("junk", process_options());
    let router = registry.router().unwrap();
    let (before, _) = process_of(&registry, "junk");
    let error = router
        .dispatch(&plugin_host::Request::new("GET", "/junk"))
        .expect_err("a malformed answer");
    assert!(
        error
            .to_string()
            .contains("the plugin process broke the protocol: it sent a malformed frame"),
        "{error}"
    );
    wait_for_restart(&registry, "junk", before);
    drop(router);
    registry.stop_all().unwrap();
}

#[test]
fn an_isolated_plugin_has_the_same_checks_as_an_in_process_one() {
    // A pin that does not match: refused by the host before any child starts.
    let load = plugin_host::LoadOptions {
        sha256: Some("0".repeat(64)),
        ..Default::default()
    };
    let error =
        ProcessPlugin::isolated(&samples().hello, &load, process_options()).expect_err("refused");
    assert!(
        matches!(error.kind(), ErrorKind::ChecksumMismatch { .. }),
        "{error:?}"
    );
    // The right pin: the worker loads its private copy of the pinned bytes, and serves.
    let load = plugin_host::LoadOptions {
        sha256: Some(plugin_host::sha256_hex(
            &std::fs::read(&samples().hello).unwrap(),
        )),
        ..Default::default()
    };
    let plugin = ProcessPlugin::isolated(&samples().hello, &load, process_options()).unwrap();
    let instance = plugin.create(Some("pinned"), &json!({})).unwrap();
    assert_eq!(
        (instance.name(), instance.plugin_name()),
        ("pinned", "hello")
    );
    let registry = plugin_host::Registry::new();
    registry.register(instance).unwrap();
    registry.start_all().unwrap();
    let router = registry.router().unwrap();
    let response = router
        .dispatch(&plugin_host::Request::new("GET", "/hello/ada%20l"))
        .unwrap();
    assert_eq!(response.body, b"hello, ada l");
    drop(router);
    registry.stop_all().unwrap();
    // A plugin that refuses its configuration: the worker's refusal, word for word.
    let plugin =
        ProcessPlugin::isolated(&samples().counter, &Default::default(), process_options())
            .unwrap();
    let Err(error) = plugin.create(None, &json!({ "start": "forty" })) else {
        panic!("refused")
    };
    assert!(
        error.to_string().contains("it refused to run: ")
            && error
                .to_string()
                .contains("invalid configuration at `start`"),
        "{error}"
    );
}

#[test]
fn a_program_that_ignores_stop_and_sigterm_is_killed() {
    let options = ProcessOptions {
        stop_timeout: Duration::from_millis(300),
        ..process_options()
    };
    let registry = program("stubborn", options);
    let (pid, _) = process_of(&registry, "stubborn");
    let pid = u64::from(pid.unwrap());
    let begun = Instant::now();
    // It answers `stop`, then neither exits nor dies of SIGTERM: SIGKILL ends it.
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(2300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!alive(pid));
}

#[test]
fn memory_and_cpu_limits_are_applied_in_the_child() {
    let options = ProcessOptions {
        memory_limit: Some(512 << 20),
        cpu_limit: Some(Duration::from_secs(30)),
        ..process_options()
    };
    let registry = program("limits", options);
    let router = registry.router().unwrap();
    let response = router
        .dispatch(&plugin_host::Request::new("GET", "/limits"))
        .unwrap();
    let limits: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        limits,
        json!({ "memory": [536870912, 536870912], "cpu": [30, 31] })
    );
    drop(router);
    registry.stop_all().unwrap();
}

#[test]
fn a_call_past_its_deadline_is_504_and_the_program_keeps_serving() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nhandler_timeout = 0.3\n",
        sample_program("quote.py").display().to_string()
    );
    let served = serve("program-deadline", &text);
    let begun = Instant::now();
    let response = http(served.addr, "GET", "/quote/sleep?ms=3000", b"");
    assert_eq!(response.status, 504, "{}", response.text());
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "{:?}",
        begun.elapsed()
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        (&body["plugin"], &body["kind"]),
        (&json!("quote"), &json!("timeout"))
    );
    assert_eq!(http(served.addr, "GET", "/quote", b"").status, 200);
    let health = health(served.addr);
    assert_eq!(
        health["calls_past_deadline"]["quote"]["total"], 1,
        "{health}"
    );
}

#[test]
fn a_quarantined_plugin_stays_quarantined_when_its_file_changes() {
    // A copy of the program, to change, beside the module it imports.
    let dir = scratch("quarantine-file");
    let program = dir.join("crashy.py");
    std::fs::copy(crate::util::program("misbehave.py"), &program).unwrap();
    let frames = crate::util::program("frames.py");
    std::fs::copy(&frames, dir.join("frames.py")).unwrap();
    let options = ProcessOptions {
        max_crashes: 1,
        ping_interval: Duration::from_millis(100),
        ..process_options()
    };
    let plugin = ProcessPlugin::program(&program, &["crashy".to_owned()], &[], options);
    let registry = plugin_host::Registry::new();
    registry
        .register(plugin.create(None, &json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap();
    let router = registry.router().unwrap();
    let call = || router.dispatch(&plugin_host::Request::new("GET", "/crashy"));
    let error = call().expect_err("it exits when called");
    assert!(
        matches!(error.kind(), ErrorKind::ChildLost { .. }),
        "{error:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_of(&registry, "crashy").1 != ChildState::Quarantined {
        assert!(Instant::now() < deadline, "not quarantined");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still quarantined a while later: nothing changed.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(process_of(&registry, "crashy").1, ChildState::Quarantined);
    let error = call().expect_err("quarantined");
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Unavailable {
                state: "quarantined"
            }
        ),
        "{error:?}"
    );
    // A new version of the file does not restart it: an instance is not silently given other
    // code; a reload replaces it with a new one (`reload::an_isolated_library_restarts_...`).
    let mut text = std::fs::read_to_string(&program).unwrap();
    text.push_str("\n# a new version\n");
    std::fs::write(&program, text).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(process_of(&registry, "crashy").1, ChildState::Quarantined);
    drop(router);
    registry.stop_all().unwrap();
}

#[test]
fn an_application_linking_the_library_is_its_own_worker() {
    let example = sample_plugins::host_example("isolated");
    let output = Command::new(&example)
        .arg(&samples().hello)
        .args(["GET", "/hello/ada"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    let pid: u32 = lines
        .next()
        .and_then(|l| l.strip_prefix("worker pid "))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_ne!(pid, std::process::id());
    assert_eq!(lines.next(), Some("200 hello, ada"));
    // Started by hand, with the worker's variable but not by a host, the worker part says so.
    let output = Command::new(&example)
        .env("PLUGLET_WORKER_LIBRARY", &samples().hello)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("it is started by plugin-host serve"),
        "{output:?}"
    );
}

/// How many files this process has open, and how many threads it runs.
fn fds_and_threads() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).unwrap().count();
    (count("/proc/self/fd"), count("/proc/self/task"))
}

#[test]
fn stopped_children_leave_no_thread_or_file_behind() {
    let plugin =
        ProcessPlugin::isolated(&samples().hello, &Default::default(), process_options()).unwrap();
    let cycle = || {
        let instance = plugin.create(None, &json!({})).unwrap();
        instance.start().unwrap();
        instance.stop().unwrap();
    };
    // Once first: the spawner thread and what else is made once per process.
    cycle();
    let before = fds_and_threads();
    for _ in 0..10 {
        cycle();
    }
    // Threads end a moment after their child: give them that moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (fds, threads) = fds_and_threads();
        // Other tests of this binary run at the same time: a little slack, far below the 10
        // threads and 10 files that one leak per child would leave.
        if fds <= before.0 + 4 && threads <= before.1 + 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 10 children: {fds} files (was {}), {threads} threads (was {})",
            before.0,
            before.1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_program_that_only_logs_still_meets_the_handshake_deadline() {
    let verdict = check_misbehaving("chatty", "handshake_timeout = 1");
    assert!(
        verdict.contains("no welcome within 1s (only ")
            && verdict.contains(" log message(s) were received)"),
        "{verdict}"
    );
}

#[test]
fn what_a_program_starts_is_stopped_with_it() {
    // Without a PID namespace (the fallback), whose pids would not be this process's: the
    // process group alone contains the grandchild. With one, see `contain_children`.
    let options = ProcessOptions {
        pid_namespace: false,
        ..process_options()
    };
    let registry = program("spawner", options);
    let router = registry.router().unwrap();
    let response = router
        .dispatch(&plugin_host::Request::new("GET", "/spawner"))
        .unwrap();
    let grandchild: u64 = String::from_utf8(response.body).unwrap().parse().unwrap();
    assert!(alive(grandchild));
    drop(router);
    registry.stop_all().unwrap();
    // Its process group is killed once it has exited, before it is reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(grandchild) {
        assert!(
            Instant::now() < deadline,
            "the grandchild {grandchild} outlived its program"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

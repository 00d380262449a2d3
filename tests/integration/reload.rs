//! Reload: `plugin-host serve` on SIGHUP and with `--watch` starts only what changed, swaps the
//! router, drains the old one and stops what was removed or replaced; a failing reload changes
//! nothing. And the library's `Deployment` underneath.

use crate::util::{
    KeepAlive, Served, capture_logs, faulty, fixture, go_library, http, logs_of, running,
    sample_program, samples, scratch, unique,
};
use plugin_host::config::PluginEntry;
use plugin_host::{Deployment, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The two builds of the `version` fixture: `GET /version` answers 8192 times `a`, or `b`.
fn build(mark: char) -> PathBuf {
    match mark {
        'a' => fixture!("FIXTURE_VERSION_A"),
        _ => fixture!("FIXTURE_VERSION_B"),
    }
}

/// Which build answered `body`: `Some('a')` or `Some('b')` for a whole body of one build.
fn version_of(body: &[u8]) -> Option<char> {
    let first = *body.first()?;
    (body.len() == 8192 && body.iter().all(|&b| b == first) && matches!(first, b'a' | b'b'))
        .then_some(first as char)
}

/// `GET /version`: which build answered; fails on any other answer.
#[track_caller]
fn served_version(served: &Served) -> char {
    let response = http(served.addr, "GET", "/version", b"");
    assert_eq!(response.status, 200, "{}", response.text());
    version_of(&response.body).unwrap_or_else(|| panic!("a torn body: {}", response.text()))
}

/// Writes `bytes` over `file` in place (the same inode, as `cp` does).
fn overwrite(file: &Path, bytes: &[u8]) {
    std::fs::write(file, bytes).unwrap();
}

/// A `serve` of the configuration `text` (written to `plugins.toml` in `dir`), with `extra`
/// arguments, whose log goes to `dir/host.log`.
struct Host {
    served: Served,
    config: PathBuf,
    log: PathBuf,
}

impl Host {
    fn start(dir: &Path, text: &str, extra: &[&str]) -> Self {
        let config = dir.join("plugins.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("host.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), config.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let served = Served::start_with(&args, None, stderr.into());
        Self {
            served,
            config,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM and waits for the exit; its status and log.
    fn terminate(self) -> (std::process::ExitStatus, String) {
        let (status, _) = self.served.terminate_within(Duration::from_secs(15));
        (status, std::fs::read_to_string(&self.log).unwrap())
    }

    /// The lines that report a reload's outcome, in order.
    fn outcomes(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                (l.contains(" reload: ") && l.contains(" started="))
                    || l.contains(" reload failed: ")
            })
            .map(str::to_owned)
            .collect()
    }

    /// Waits at most 20 s for the outcome of one more reload than `before`, and returns it.
    #[track_caller]
    fn next_outcome(&self, before: usize) -> String {
        self.outcome_saying(before, "")
    }

    /// Waits at most 20 s for the outcome of a reload after the first `before` that says
    /// `needle`, and returns it: with `--watch`, one change may take more than one reload (a
    /// file written in steps further apart than the debounce).
    #[track_caller]
    fn outcome_saying(&self, before: usize, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self
                .outcomes()
                .iter()
                .skip(before)
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no reload said `{needle}` within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the configuration `text`, sends SIGHUP and returns the reload's log line.
    #[track_caller]
    fn reload(&self, text: &str) -> String {
        std::fs::write(&self.config, text).unwrap();
        self.hangup()
    }

    /// Sends SIGHUP and returns the reload's log line.
    #[track_caller]
    fn hangup(&self) -> String {
        let before = self.outcomes().len();
        let pid = self.served.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        self.next_outcome(before)
    }
}

/// A `[[plugin]]` table for `path` named `name`, with `extra` lines.
fn table(path: &Path, name: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = {name:?}\n{extra}\n\n",
        path.display().to_string()
    )
}

/// The counter sample as `visits`, counting from `start`.
fn visits(start: i64) -> String {
    table(
        &samples().counter,
        "visits",
        &format!("[plugin.config]\npath = \"/visits\"\nstart = {start}"),
    )
}

/// The counter's value.
#[track_caller]
fn value(served: &Served) -> serde_json::Value {
    http(served.addr, "GET", "/visits", b"").json()["value"].clone()
}

#[test]
fn a_reload_adds_and_removes_plugins_and_keeps_the_others_running() {
    let dir = scratch("reload-add");
    let host = Host::start(&dir, &visits(41), &[]);
    // The counter's state shows that it is the same instance, not one created anew.
    let response = http(host.served.addr, "POST", "/visits", b"");
    assert_eq!(response.json()["value"], 42);
    let hello = table(&samples().hello, "hello", "");
    let line = host.reload(&format!("{hello}{}", visits(41)));
    assert!(
        line.contains("INFO") && line.contains("added hello; kept visits"),
        "{line}"
    );
    assert_eq!(
        http(host.served.addr, "GET", "/hello", b"").text(),
        "hello from Rust"
    );
    assert_eq!(value(&host.served), 42);
    let line = host.reload(&hello);
    assert!(line.contains("removed visits; kept hello"), "{line}");
    assert_eq!(http(host.served.addr, "GET", "/visits", b"").status, 404);
    let line = host.hangup();
    assert!(line.contains("nothing changed; kept hello"), "{line}");
}

#[test]
fn a_library_written_over_in_place_serves_its_new_build_and_the_old_stays_loaded() {
    let dir = scratch("reload-in-place");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let text = table(&library, "version", "");
    let host = Host::start(&dir, &text, &[]);
    assert_eq!(served_version(&host.served), 'a');
    // `dlopen` of the same path would give the old library back: the new build must be loaded
    // from a path of its own.
    overwrite(&library, &std::fs::read(build('b')).unwrap());
    let line = host.hangup();
    assert!(
        line.contains("replaced version")
            && line.contains("(1 old library version(s) stay loaded)"),
        "{line}"
    );
    assert_eq!(served_version(&host.served), 'b');
    // Back to the first build: the version still loaded serves again.
    overwrite(&library, &std::fs::read(build('a')).unwrap());
    let line = host.hangup();
    assert!(line.contains("replaced version"), "{line}");
    assert_eq!(served_version(&host.served), 'a');
}

#[test]
fn a_changed_config_table_replaces_the_instance() {
    let dir = scratch("reload-config");
    let host = Host::start(&dir, &visits(41), &[]);
    assert_eq!(value(&host.served), 41);
    let line = host.reload(&visits(100));
    assert!(line.contains("replaced visits"), "{line}");
    assert_eq!(value(&host.served), 100);
    // Moved within the file, unchanged: kept.
    let line = host.reload(&format!("# a comment\n\n{}", visits(100)));
    assert!(line.contains("nothing changed; kept visits"), "{line}");
}

#[test]
fn a_failing_reload_changes_nothing_and_names_the_line_or_the_plugin() {
    let dir = scratch("reload-failing");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let good = format!("{}{}", table(&library, "version", ""), visits(41));
    let host = Host::start(&dir, &good, &[]);
    let response = http(host.served.addr, "POST", "/visits", b"");
    assert_eq!(response.json()["value"], 42);
    let config = host.config.display().to_string();
    // A library refused for its permissions.
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    let insecure = open.join("libversion.so");
    std::fs::copy(build('b'), &insecure).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&insecure, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let start_fails = table(faulty(), "f", "[plugin.config]\nfail_in = \"start\"");
    // Each case adds an entry after `good`, at this line.
    let line = good.lines().count() + 1;
    let cases = [
        (
            format!("{good}[[plugin]\n"),
            format!("{config}:{line}:"),
            "unclosed array table",
        ),
        (
            format!("{good}{}", table(&insecure, "other", "")),
            format!(
                "{config}:{line}: plugin file {}: refused",
                insecure.display()
            ),
            "is writable by its group or by others",
        ),
        (
            format!("{good}{}", table(&build('b'), "second", "")),
            format!("{config}:{line}: plugin `second`"),
            "route GET /version conflicts with GET /version of plugin `version`",
        ),
        (
            format!("{good}{start_fails}"),
            format!("{config}:{line}: plugin `f`"),
            "start failed: deliberate failure in start",
        ),
        (
            format!("{good}{}", table(&samples().hello, "visits", "")),
            format!("{config}:{line}: plugin `visits`"),
            "a plugin named `visits` is already registered",
        ),
    ];
    for (text, place, says) in &cases {
        let line = host.reload(text);
        assert!(
            line.contains("ERROR")
                && line.contains(&format!("reload failed: {place}"))
                && line.contains(says)
                && line.contains("; the running plugins keep serving"),
            "{line}"
        );
        assert_eq!(served_version(&host.served), 'a', "after {line}");
        assert_eq!(value(&host.served), 42, "after {line}");
    }
    // And a good reload after them all.
    let line = host.reload(&visits(41));
    assert!(line.contains("removed version; kept visits"), "{line}");
}

/// The process ids of `pid`'s descendants.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(parent) = todo.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// Waits at most 10 s for every process of `pids` to end.
#[track_caller]
fn assert_gone(pids: &[u32], context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| running(pid)) {
        assert!(Instant::now() < deadline, "{context}: {pids:?} still run");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_isolated_plugin_reloads_into_a_new_child_and_its_old_child_ends() {
    let dir = scratch("reload-isolated");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(
        &dir,
        &table(&library, "version", "isolation = \"process\""),
        &[],
    );
    assert_eq!(served_version(&host.served), 'a');
    let before = descendants(host.served.child.id());
    assert!(!before.is_empty(), "no child process");
    overwrite(&library, &std::fs::read(build('b')).unwrap());
    let line = host.hangup();
    assert!(line.contains("replaced version"), "{line}");
    assert_eq!(served_version(&host.served), 'b');
    let after = descendants(host.served.child.id());
    assert!(
        after.iter().any(|pid| !before.contains(pid)),
        "{before:?} {after:?}"
    );
    let old: Vec<u32> = before
        .into_iter()
        .filter(|pid| !after.contains(pid))
        .collect();
    assert!(!old.is_empty(), "the old child still runs: {after:?}");
    assert_gone(&old, "the old child");
}

#[test]
fn a_program_reloads_into_a_new_process_when_its_config_changes() {
    let dir = scratch("reload-program");
    std::fs::copy(sample_program("quote.py"), dir.join("quote.py")).unwrap();
    let program = |quote: &str| {
        format!("[[plugin]]\nexec = \"quote.py\"\n[plugin.config]\nquotes = [\"{quote}\"]\n")
    };
    let host = Host::start(&dir, &program("one"), &[]);
    assert_eq!(http(host.served.addr, "GET", "/quote", b"").text(), "one");
    let before = descendants(host.served.child.id());
    let line = host.reload(&program("two"));
    assert!(line.contains("replaced quote"), "{line}");
    assert_eq!(http(host.served.addr, "GET", "/quote", b"").text(), "two");
    let after = descendants(host.served.child.id());
    let old: Vec<u32> = before
        .into_iter()
        .filter(|pid| !after.contains(pid))
        .collect();
    assert!(!old.is_empty(), "the old process still runs: {after:?}");
    assert_gone(&old, "the old program");
    // Its file changed: replaced too.
    let mut text = std::fs::read_to_string(dir.join("quote.py")).unwrap();
    text.push_str("\n# changed\n");
    std::fs::write(dir.join("quote.py"), text).unwrap();
    let line = host.hangup();
    assert!(line.contains("replaced quote"), "{line}");
}

#[test]
fn watch_reloads_when_a_plugin_file_is_replaced() {
    let dir = scratch("reload-watch");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(&dir, &table(&library, "version", ""), &["--watch"]);
    assert_eq!(served_version(&host.served), 'a');
    // As a build does: a new file renamed over the old one.
    let staged = dir.join("libversion.so.new");
    std::fs::copy(build('b'), &staged).unwrap();
    std::fs::rename(&staged, &library).unwrap();
    let line = host.next_outcome(0);
    assert!(line.contains("replaced version"), "{line}");
    assert_eq!(served_version(&host.served), 'b');
    // The configuration too.
    let text = format!("{}{}", table(&library, "version", ""), visits(7));
    replace_file(&host.config, &text);
    let line = host.outcome_saying(1, "added visits");
    assert!(line.contains("added visits; kept version"), "{line}");
    assert_eq!(value(&host.served), 7);
    // A reload reads every file it watches: reading is no change, and starts no other reload.
    std::thread::sleep(Duration::from_secs(1));
    let outcomes = host.outcomes();
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
}

/// Writes `text` to `path` as editors do: a new file renamed over the old one, so that a
/// watcher never reads it half-written.
fn replace_file(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// Runs `rounds` reloads that each write the other build over the library of a `version`
/// entry (with the lines `extra`), while 4 client threads send `GET /version`, waiting `pause`
/// after each; asserts that every answer was 200 and whole, from one build or the other, and
/// that both builds answered.
fn reload_under_load(test: &str, extra: &str, rounds: usize, pause: Duration) {
    let dir = scratch(test);
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(&dir, &table(&library, "version", extra), &[]);
    let addr = host.served.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = http(addr, "GET", "/version", b"");
                    seen.push((response.status, version_of(&response.body)));
                }
                seen
            })
        })
        .collect();
    for round in 0..rounds {
        let mark = if round % 2 == 0 { 'b' } else { 'a' };
        overwrite(&library, &std::fs::read(build(mark)).unwrap());
        let line = host.hangup();
        assert!(line.contains("replaced version"), "{line}");
        std::thread::sleep(pause);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<(u16, Option<char>)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let bad: Vec<_> = seen
        .iter()
        .filter(|(status, body)| *status != 200 || body.is_none())
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} failed or torn: {bad:?}",
        bad.len(),
        seen.len()
    );
    for mark in ['a', 'b'] {
        assert!(
            seen.iter().any(|(_, body)| *body == Some(mark)),
            "no answer from build {mark}"
        );
    }
}

#[test]
fn reloads_under_load_drop_no_request_and_tear_no_body() {
    reload_under_load("reload-load", "", 5, Duration::from_millis(50));
}

/// `entry` as a configuration file would give it, at `line` of `file`.
fn at_line(text: &str, file: &Path) -> Vec<PluginEntry> {
    plugin_host::config::parse_config(text, file).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_deployment_keeps_old_library_versions_within_its_limit() {
    let dir = scratch("reload-retained");
    let library = dir.join("libversion.so");
    let file = dir.join("plugins.toml");
    let text = table(&library, "version", "");
    let mut deployment = Deployment::new(false).with_retained_limit(1);
    let mut load = |bytes: &[u8]| {
        overwrite(&library, bytes);
        deployment
            .reload(&at_line(&text, &file))
            .map(|r| (r.to_string(), r.router.is_some()))
    };
    assert_eq!(
        load(&std::fs::read(build('a')).unwrap()).unwrap().0,
        "added version"
    );
    assert_eq!(
        load(&std::fs::read(build('b')).unwrap()).unwrap().0,
        "replaced version"
    );
    // A third version would keep two old ones.
    let third = std::fs::read(fixture!("FIXTURE_VALID")).unwrap();
    let error = load(&third).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::TooManyLibraries { limit: 1 }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}:1: plugin file {}:",
            file.display(),
            library.display()
        )) && message.contains("restart the host, or run the plugin isolated"),
        "{message}"
    );
    // A version still loaded is used again.
    assert_eq!(
        load(&std::fs::read(build('a')).unwrap()).unwrap().0,
        "replaced version"
    );
    assert_eq!(deployment.retained(), 1);
}

#[test]
fn a_failed_deployment_reload_stops_what_it_started_in_reverse() {
    capture_logs();
    let dir = scratch("reload-rollback");
    let file = dir.join("plugins.toml");
    let (first, second) = (unique("rollback-a"), unique("rollback-b"));
    let faulty_at = |name: &str, path: &str| {
        table(
            faulty(),
            name,
            &format!("[plugin.config]\npath = \"{path}\""),
        )
    };
    let mut deployment = Deployment::new(false);
    let hello = table(&samples().hello, "hello", "");
    deployment.reload(&at_line(&hello, &file)).unwrap();
    // Both start; the third conflicts with the first.
    let text = format!(
        "{hello}{}{}{}",
        faulty_at(&first, "/one"),
        faulty_at(&second, "/two"),
        faulty_at("third", "/one")
    );
    let error = deployment.reload(&at_line(&text, &file)).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::RouteConflict { .. }),
        "{error:?}"
    );
    // The third's `[[plugin]]`, two lines above its name.
    let name = text.lines().position(|l| l == "name = \"third\"").unwrap();
    assert_eq!(
        error.location(),
        Some((file.as_path(), name - 1)),
        "{error}"
    );
    let calls: Vec<(String, String)> = logs_of(&[&first, &second])
        .into_iter()
        .map(|l| (l.instance, l.message))
        .collect();
    let call = |name: &str, what: &str| (name.to_owned(), what.to_owned());
    let expected = [
        call(&first, "create"),
        call(&first, "start"),
        call(&first, "routes"),
        call(&second, "create"),
        call(&second, "start"),
        call(&second, "routes"),
        call(&second, "stop"),
        call(&first, "stop"),
    ];
    assert_eq!(calls, expected);
    // Nothing changed: the old set reloads as kept.
    let reload = deployment.reload(&at_line(&hello, &file)).unwrap();
    assert_eq!(reload.to_string(), "nothing changed; kept hello");
}

#[test]
fn a_retired_plugin_busy_past_the_grace_is_stopped_once_its_call_returns() {
    let dir = scratch("reload-busy");
    let f = table(faulty(), "f", "[plugin.config]\npath = \"/f\"");
    let with_f = format!("{f}{}", visits(1));
    let host = Host::start(&dir, &with_f, &["--grace", "0.3"]);
    let addr = host.served.addr;
    // Retires `f` while a call runs in it for 3 s, past the drain's grace; the call answers.
    let retire_busy = |host: &Host| {
        let sleeper = std::thread::spawn(move || http(addr, "GET", "/f/sleep?ms=3000", b""));
        std::thread::sleep(Duration::from_millis(500));
        let line = host.reload(&visits(1));
        assert!(line.contains("removed f; kept visits"), "{line}");
        assert_eq!(sleeper.join().unwrap().status, 200);
    };
    retire_busy(&host);
    let log = host.log();
    assert!(
        log.contains(
            "requests still ran on the old router after 300ms (in f, left started until their \
             calls return); raise --grace to give them longer"
        ) && log.contains(
            "it stays started, out of service, until its call returns, and is stopped at the \
             next reload or when the host stops (raise --grace"
        ),
        "{log}"
    );
    let stopped = "stopped f, which a reload retired while a call still ran in it";
    assert!(!log.contains(stopped), "{log}");
    // The next reload stops it, though it changes nothing.
    let line = host.hangup();
    assert!(line.contains("nothing changed"), "{line}");
    assert_eq!(host.log().matches(stopped).count(), 1, "{}", host.log());
    // Retired busy again, then the host stops: it stops it too, cleanly.
    let line = host.reload(&with_f);
    assert!(line.contains("added f"), "{line}");
    retire_busy(&host);
    let (status, log) = host.terminate();
    assert_eq!(log.matches(stopped).count(), 2, "{log}");
    assert_eq!(status.code(), Some(0), "{log}");
}

/// `/healthz` of `served`.
fn health(served: &Served) -> serde_json::Value {
    http(served.addr, "GET", "/healthz", b"").json()
}

/// Polls `/healthz` until the process of `plugin` is in `state`; fails after 10 s.
#[track_caller]
fn wait_for_state(served: &Served, plugin: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = health(served);
        if health["processes"][plugin]["state"] == state {
            return health;
        }
        assert!(Instant::now() < deadline, "never {state}: {health}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Kills the process of the isolated `plugin` with SIGKILL (a crash), and waits until the host
/// has seen it go.
fn kill_child(served: &Served, plugin: &str) {
    let pid = wait_for_state(served, plugin, "serving")["processes"][plugin]["pid"].clone();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(served)["processes"][plugin]["pid"] == pid {
        assert!(Instant::now() < deadline, "pid {pid} still serves");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn an_isolated_library_restarts_the_bytes_it_was_loaded_from_and_a_reload_lifts_its_quarantine() {
    let dir = scratch("reload-isolated-restart");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let text = table(
        &library,
        "version",
        "isolation = \"process\"\nmax_crashes = 2",
    );
    let host = Host::start(&dir, &text, &[]);
    assert_eq!(served_version(&host.served), 'a');
    // A new build lands, but no reload takes it in: a crash restarts the code that was
    // compared and checked, from the host's private copy, not the new file.
    overwrite(&library, &std::fs::read(build('b')).unwrap());
    kill_child(&host.served, "version");
    wait_for_state(&host.served, "version", "serving");
    assert_eq!(served_version(&host.served), 'a');
    assert!(!host.log().contains("SHA-256 mismatch"), "{}", host.log());
    // A second crash within the minute quarantines it; its changed file does not release it...
    kill_child(&host.served, "version");
    wait_for_state(&host.served, "version", "quarantined");
    // The log, read from the host's standard error, may come a moment after `/healthz` says so.
    let said = "so it is quarantined: its routes answer 503 until a reload replaces it (SIGHUP, \
                or serve --watch, once its file or its entry changed) or the host restarts";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host.log().contains(said) {
        assert!(Instant::now() < deadline, "{}", host.log());
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(300));
    let response = http(host.served.addr, "GET", "/version", b"");
    assert_eq!(response.status, 503, "{}", response.text());
    // ...a reload that sees it does: a new instance of the new build.
    let line = host.hangup();
    assert!(line.contains("replaced version"), "{line}");
    assert_eq!(served_version(&host.served), 'b');
    wait_for_state(&host.served, "version", "serving");
}

#[test]
fn a_failed_reload_keeps_the_versions_it_loaded_and_counts_each_once() {
    let dir = scratch("reload-failed-retained");
    let library = dir.join("libversion.so");
    let file = dir.join("plugins.toml");
    std::fs::copy(build('a'), &library).unwrap();
    let version = table(&library, "version", "");
    let mut deployment = Deployment::new(false);
    deployment.reload(&at_line(&version, &file)).unwrap();
    assert_eq!(deployment.retained(), 0);
    // The new build loads, then a start fails: the reload fails, and the build stays mapped.
    overwrite(&library, &std::fs::read(build('b')).unwrap());
    let failing = format!(
        "{version}{}",
        table(faulty(), "f", "[plugin.config]\nfail_in = \"start\"")
    );
    for _ in 0..3 {
        let error = deployment.reload(&at_line(&failing, &file)).unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::StartFailed { .. }),
            "{error:?}"
        );
        // Counted once, however often the same content fails: it is loaded once.
        assert_eq!(deployment.retained(), 2);
    }
    // Tried again without the failing entry: the version already loaded serves.
    let reload = deployment.reload(&at_line(&version, &file)).unwrap();
    assert_eq!(reload.to_string(), "replaced version");
    assert_eq!(deployment.retained(), 2);
}

#[test]
fn watch_after_a_failed_reload_reloads_on_a_change_to_a_running_file_or_a_new_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("reload-watch-failed");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(&dir, &table(&library, "version", ""), &["--watch"]);
    assert_eq!(served_version(&host.served), 'a');
    // The new configuration names a file in another folder, refused for its permissions.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    let refused = other.join("libversion.so");
    std::fs::copy(build('b'), &refused).unwrap();
    std::fs::set_permissions(&refused, std::fs::Permissions::from_mode(0o666)).unwrap();
    replace_file(&host.config, &table(&refused, "version", ""));
    let line = host.next_outcome(0);
    assert!(
        line.contains("reload failed") && line.contains("writable"),
        "{line}"
    );
    // A change to the file that runs counts still.
    let staged = dir.join("libversion.so.new");
    std::fs::copy(build('b'), &staged).unwrap();
    std::fs::rename(&staged, &library).unwrap();
    let line = host.next_outcome(1);
    assert!(line.contains("reload failed"), "{line}");
    assert_eq!(served_version(&host.served), 'a');
    // And so does a fix to the file the failed reload read.
    let fixed = other.join("libversion.so.new");
    std::fs::copy(build('b'), &fixed).unwrap();
    std::fs::set_permissions(&fixed, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&fixed, &refused).unwrap();
    let line = host.outcome_saying(2, "replaced version");
    assert!(line.contains("replaced version"), "{line}");
    assert_eq!(served_version(&host.served), 'b');
}

#[test]
fn a_new_version_of_a_go_library_in_process_is_refused_naming_the_entry() {
    let Some(go) = go_library(env!("FIXTURE_GO")) else {
        return;
    };
    let dir = scratch("reload-go");
    let library = dir.join("libgo.so");
    let file = dir.join("plugins.toml");
    std::fs::copy(&go, &library).unwrap();
    let text = format!("# Go\n{}", table(&library, "gopher", ""));
    let mut deployment = Deployment::new(false);
    deployment.reload(&at_line(&text, &file)).unwrap();
    // Another build: the same library with a byte more at its end (ELF ignores it).
    let mut bytes = std::fs::read(&go).unwrap();
    bytes.push(0);
    overwrite(&library, &bytes);
    let error = deployment.reload(&at_line(&text, &file)).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::GoLibraryReloaded),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}:2: plugin file {}: it is a Go library",
            file.display(),
            library.display()
        )) && message.contains("run it with `isolation = \"process\"`"),
        "{message}"
    );
    // Nothing changed: the version loaded runs on.
    overwrite(&library, &std::fs::read(&go).unwrap());
    let reload = deployment.reload(&at_line(&text, &file)).unwrap();
    assert_eq!(reload.to_string(), "nothing changed; kept gopher");
    deployment.registry().close_and_stop_all().unwrap();
}

#[test]
fn a_reload_of_the_same_entries_keeps_the_router_and_one_that_reorders_them_swaps_it() {
    let dir = scratch("reload-same");
    let file = dir.join("plugins.toml");
    let (hello, counter) = (table(&samples().hello, "hello", ""), visits(1));
    let mut deployment = Deployment::new(false);
    let first = deployment
        .reload(&at_line(&format!("{hello}{counter}"), &file))
        .unwrap();
    assert!(first.router.is_some());
    let same = deployment
        .reload(&at_line(&format!("# moved\n{hello}{counter}"), &file))
        .unwrap();
    assert_eq!(same.to_string(), "nothing changed; kept hello, visits");
    assert!(same.router.is_none() && !same.changed());
    let reordered = deployment
        .reload(&at_line(&format!("{counter}{hello}"), &file))
        .unwrap();
    assert_eq!(reordered.to_string(), "reordered; kept visits, hello");
    assert!(reordered.changed() && reordered.reordered);
    let router = reordered.router.expect("a new router, in the new order");
    assert_eq!(router.plugins(), ["visits", "hello"]);
    drop(router);
    deployment.registry().close_and_stop_all().unwrap();
}

#[test]
fn private_copies_of_in_process_libraries_are_memory_files_not_in_tmpdir() {
    // A temporary folder that cannot be used (a `noexec` /tmp fails the same way, later).
    let output = crate::util::host()
        .env("TMPDIR", "/nonexistent/tmp")
        .arg("check")
        .arg(build('a'))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok "),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // And the served library is mapped from one, named after the file.
    let dir = scratch("reload-memfd");
    let host = Host::start(&dir, &table(&build('a'), "version", ""), &[]);
    assert_eq!(served_version(&host.served), 'a');
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", host.served.child.id())).unwrap();
    let name = build('a')
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(maps.contains(&format!("/memfd:{name}")), "{maps}");
}

#[test]
fn a_kept_alive_connection_gets_whole_answers_across_reloads() {
    let dir = scratch("reload-keepalive");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(&dir, &table(&library, "version", ""), &[]);
    let addr = host.served.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // One connection for the whole run: before, during and after the reloads.
            let mut connection = KeepAlive::connect(addr);
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = connection.get("/version", &[]);
                seen.push((response.status, version_of(&response.body)));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for round in 0..4 {
        let mark = if round % 2 == 0 { 'b' } else { 'a' };
        overwrite(&library, &std::fs::read(build(mark)).unwrap());
        let line = host.hangup();
        assert!(line.contains("replaced version"), "{line}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = client.join().unwrap();
    let bad: Vec<_> = seen
        .iter()
        .filter(|(status, body)| *status != 200 || body.is_none())
        .collect();
    assert!(bad.is_empty(), "{} of {}: {bad:?}", bad.len(), seen.len());
    // The same connection met both builds.
    for mark in ['a', 'b'] {
        assert!(seen.iter().any(|(_, body)| *body == Some(mark)), "{seen:?}");
    }
}

#[test]
fn an_isolated_plugin_reloaded_under_load_fails_no_request() {
    let isolated = "isolation = \"process\"";
    reload_under_load(
        "reload-isolated-load",
        isolated,
        4,
        Duration::from_millis(100),
    );
}

/// The value of the sample `series` (name and labels, as the text format writes them) in the
/// metrics of `served`.
fn metric(served: &Served, series: &str) -> Option<f64> {
    let text = http(served.addr, "GET", "/metrics", b"").text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[test]
fn metrics_count_reloads_drop_a_removed_plugin_and_go_on_counting_a_kept_route() {
    let dir = scratch("reload-metrics");
    let hello = table(&samples().hello, "hello", "");
    let host = Host::start(&dir, &format!("{hello}{}", visits(1)), &[]);
    for _ in 0..3 {
        assert_eq!(http(host.served.addr, "GET", "/hello", b"").status, 200);
    }
    for _ in 0..2 {
        value(&host.served);
    }
    let kept =
        r#"pluglet_requests_total{class="2xx",method="GET",plugin="visits",route="/visits"}"#;
    assert_eq!(metric(&host.served, kept), Some(2.0));
    let line = host.reload(&visits(1));
    assert!(line.contains("removed hello; kept visits"), "{line}");
    let line = host.reload("[[plugin]\n");
    assert!(line.contains("reload failed"), "{line}");
    value(&host.served);
    let text = http(host.served.addr, "GET", "/metrics", b"").text();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("pluglet_requests_total{") && l.contains("plugin=\"hello\"")),
        "{text}"
    );
    assert_eq!(metric(&host.served, kept), Some(3.0));
    let reloads = |result: &str| {
        metric(
            &host.served,
            &format!("pluglet_reloads_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!((reloads("ok"), reloads("failed")), (Some(1.0), Some(1.0)));
}

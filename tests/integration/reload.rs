//! Reload: `plugin-host serve` on SIGHUP and with `--watch` starts only what changed, swaps the
//! router, drains the old one and stops what was removed or replaced; a failing reload changes
//! nothing. And the library's `Deployment` underneath.

use crate::util::{
    Served, capture_logs, faulty, fixture, http, logs_of, running, sample_program, samples,
    scratch, unique,
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

    /// The lines that report a reload's outcome, in order.
    fn outcomes(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("reload: ") || l.contains("reload failed: "))
            .filter(|l| !l.contains("reload: requests still ran"))
            .map(str::to_owned)
            .collect()
    }

    /// Waits at most 20 s for the outcome of one more reload than `before`, and returns it.
    #[track_caller]
    fn next_outcome(&self, before: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.outcomes().get(before) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no reload reported within 20 s:\n{}",
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
    std::fs::write(
        &host.config,
        format!("{}{}", table(&library, "version", ""), visits(7)),
    )
    .unwrap();
    let line = host.next_outcome(1);
    assert!(line.contains("added visits; kept version"), "{line}");
    assert_eq!(value(&host.served), 7);
}

#[test]
fn reloads_under_load_drop_no_request_and_tear_no_body() {
    let dir = scratch("reload-load");
    let library = dir.join("libversion.so");
    std::fs::copy(build('a'), &library).unwrap();
    let host = Host::start(&dir, &table(&library, "version", ""), &[]);
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
    for round in 0..5 {
        let mark = if round % 2 == 0 { 'b' } else { 'a' };
        overwrite(&library, &std::fs::read(build(mark)).unwrap());
        let line = host.hangup();
        assert!(line.contains("replaced version"), "{line}");
        std::thread::sleep(Duration::from_millis(50));
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
            .map(|r| (r.to_string(), r.router.routes().len()))
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

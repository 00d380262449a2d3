//! What plugins write cannot exhaust or forge the host's log: output without a newline keeps
//! the host's memory flat, control characters are escaped (one plugin message is one host
//! line), each plugin's log is rate-limited with a report of what was dropped, and output pipes
//! a descendant keeps open leak no thread and no file over restarts.
//!
//! The host is a `plugin-host serve` process whose memory and log are measured from outside
//! (other tests run in the same process as these), except for the restarts, which run through
//! the library to turn off the PID namespace and count only this plugin's files and threads.

use crate::util::{Served, fixture, http, process_options, program, rss, scratch, serve};
use parking_lot::Mutex;
use plugin_host::process::{ChildState, ProcessOptions, ProcessPlugin};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn output_library() -> PathBuf {
    fixture!("FIXTURE_OUTPUT")
}

/// The most memory the host may hold while a plugin writes without newlines.
const RSS_BOUND_KIB: u64 = 100 * 1024;

/// A `plugin-host serve` of the configuration `text`, its standard error read line by line as
/// it comes (so that a full pipe never holds the host's log back).
struct Logged {
    served: Served,
    lines: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Logged {
    fn start(test: &str, text: &str) -> Self {
        let started = Instant::now();
        let mut served = serve(test, text);
        let stderr = served.child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                sink.lock()
                    .push(String::from_utf8_lossy(&line).into_owned());
                line.clear();
            }
        });
        Self {
            served,
            lines,
            started,
        }
    }

    /// The lines holding `needle`.
    fn with(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits at most `limit` for a line holding every one of `needles`.
    fn wait_for(&self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} within {limit:?}; the log ends with:\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the log, for failure messages.
    fn tail(&self) -> String {
        let lines = self.lines.lock();
        let from = lines.len().saturating_sub(30);
        lines[from..].concat()
    }
}

/// Samples the host's memory every 100 ms for `time`: it must stay under [`RSS_BOUND_KIB`]
/// (the host is killed at once when it does not, before it takes the machine's memory).
fn assert_memory_flat(served: &mut Served, time: Duration) {
    let pid = served.child.id();
    let begun = Instant::now();
    let mut samples = Vec::new();
    while begun.elapsed() < time {
        let kib = rss(pid) / 1024;
        assert!(kib > 0, "the host (pid {pid}) is gone");
        samples.push(kib);
        if kib > RSS_BOUND_KIB {
            let _ = served.child.kill();
            panic!(
                "host RSS reached {} MiB after {:?} (samples in KiB: {samples:?})",
                kib / 1024,
                begun.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "host RSS over {time:?}: {} to {} KiB",
        samples[0],
        samples.iter().max().unwrap()
    );
}

#[test]
fn a_program_writing_without_newlines_leaves_the_host_memory_flat() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"nonewline\"]\nname = \"nonewline\"\n",
        program("noisy.py").display().to_string()
    );
    let mut logged = Logged::start("nonewline", &text);
    assert_memory_flat(&mut logged.served, Duration::from_secs(4));
    // The first 4 KiB of its endless line were logged once, cut; the rest was discarded.
    let cut = logged.wait_for(&["xxxxxxxx"], Duration::from_secs(5));
    assert_eq!(logged.with("xxxxxxxx").len(), 1, "{}", logged.tail());
    assert!(
        cut.contains("[cut]") && cut.len() < plugin_host::limits::LOG_LINE_MAX + 200,
        "{cut}"
    );
}

#[test]
fn an_isolated_library_writing_without_newlines_leaves_the_host_memory_flat() {
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"spew\"\nisolation = \"process\"\n",
        output_library().display().to_string()
    );
    let mut logged = Logged::start("spew", &text);
    let response = http(logged.served.addr, "GET", "/output/spew", b"");
    assert_eq!(response.text(), "spewing");
    assert_memory_flat(&mut logged.served, Duration::from_secs(4));
    assert_eq!(logged.with("xxxxxxxx").len(), 1, "{}", logged.tail());
}

#[test]
fn a_plugin_cannot_forge_a_host_log_line() {
    let text = format!(
        "[[plugin]]\nexec = {program:?}\nargs = [\"forge\"]\nname = \"forge\"\n\n\
         [[plugin]]\npath = {library:?}\nname = \"cforge\"\n",
        program = program("noisy.py").display().to_string(),
        library = output_library().display().to_string(),
    );
    let logged = Logged::start("forge", &text);
    assert_eq!(
        http(logged.served.addr, "GET", "/output/forge", b"").text(),
        "forged"
    );
    let limit = Duration::from_secs(10);
    // A log frame (a program) and the log callback (an in-process library): the newline is
    // escaped, and the forged access line stays inside the plugin's line.
    let frame = logged.wait_for(&["py-forge"], limit);
    let callback = logged.wait_for(&["c-forge"], limit);
    let stdout = logged.wait_for(&["py-stdout"], limit);
    let forged = logged.with("path=/admin/FORGED");
    assert_eq!(forged.len(), 2, "{forged:#?}");
    for line in [&frame, &callback] {
        assert!(line.contains(" INFO plugin: "), "{line}");
        assert!(
            line.contains("-forge\\n2026-01-01T00:00:00.000000Z  INFO plugin_host::access:"),
            "{line}"
        );
    }
    assert!(
        callback.contains("carriage\\rreturn \\x1b[31mred"),
        "{callback}"
    );
    // A stdout line: its carriage return, escape sequence and tab are escaped; the line's own
    // CR LF ending is not part of it.
    assert!(
        stdout.contains("py-stdout carriage\\rreturn \\x1b[31mred\\x1b[0m tab\\tend "),
        "{stdout:?}"
    );
    assert!(
        !stdout.contains('\r') && !stdout.contains('\u{1b}'),
        "{stdout:?}"
    );
    let all = logged.lines.lock();
    assert!(
        !all.iter().any(|l| l.starts_with("2026-01-01T")),
        "a forged line: {all:#?}"
    );
}

#[test]
fn a_program_cannot_give_itself_a_name_that_forges_a_line() {
    let args = ["badname".to_owned()];
    let plugin = ProcessPlugin::program(program("noisy.py"), &args, &[], process_options());
    let error = plugin
        .create(None, &serde_json::json!({}))
        .err()
        .expect("a name holding a newline is refused");
    assert!(
        matches!(error.kind(), plugin_host::ErrorKind::Handshake { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("a plugin's name must be 1 to 128 bytes of text without control characters"),
        "{error}"
    );
}

/// The most lines a plugin may have logged `elapsed` after it started, with `rate` and
/// `burst`: its burst, its rate over the time, and a little slack for timing.
fn allowed(rate: u32, burst: u32, elapsed: Duration) -> usize {
    burst as usize + (f64::from(rate) * elapsed.as_secs_f64()).ceil() as usize + 10
}

#[test]
fn a_log_flood_is_cut_to_the_rate_limit_and_reported() {
    let text = format!(
        "[[plugin]]\nexec = {program:?}\nargs = [\"logflood\"]\nname = \"logflood\"\n\n\
         [[plugin]]\nexec = {program:?}\nargs = [\"outflood\"]\nname = \"outflood\"\n\
         log_rate = 20\nlog_burst = 50\n\n\
         [[plugin]]\npath = {library:?}\nname = \"cflood\"\nlog_rate = 30\nlog_burst = 100\n",
        program = program("noisy.py").display().to_string(),
        library = output_library().display().to_string(),
    );
    let logged = Logged::start("flood", &text);
    for _ in 0..3 {
        assert_eq!(
            http(logged.served.addr, "GET", "/output/flood", b"").text(),
            "flooded"
        );
    }
    // The programs flood for 2 s; then each plugin's lines are counted against what its limit
    // allows.
    std::thread::sleep(Duration::from_secs(3));
    let elapsed = logged.started.elapsed();
    let counts = [
        ("py-logflood line", allowed(100, 1000, elapsed)),
        ("py-outflood line", allowed(20, 50, elapsed)),
        ("c-flood line", allowed(30, 100, elapsed)),
    ];
    for (needle, bound) in counts {
        let count = logged.with(needle).len();
        eprintln!("{needle}: {count} lines in {elapsed:?} (at most {bound})");
        assert!(count > 0, "no line of {needle}:\n{}", logged.tail());
        assert!(
            count <= bound,
            "{count} lines of {needle} in {elapsed:?}, over {bound}"
        );
    }
    // What was dropped is reported, one line per plugin and interval, naming the plugin: after
    // the plugins fell silent too.
    let limit = Duration::from_secs(25);
    let reports = [
        ("\"logflood\"", "(rate limit 100/s, burst 1000)"),
        ("\"outflood\"", "(rate limit 20/s, burst 50)"),
        ("\"cflood\"", "(rate limit 30/s, burst 100)"),
    ];
    for (name, limits) in reports {
        let report = logged.wait_for(&[&format!("plugin {name}: "), limits], limit);
        assert!(
            report.contains(" WARN ") && report.contains(" log lines dropped in the last "),
            "{report}"
        );
    }
}

/// The pipes (`pipe:[inode]`) process `pid` has open as its standard output and error.
fn stdio_pipes(pid: u32) -> HashSet<String> {
    ["1", "2"]
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .map(|link| link.display().to_string())
        .filter(|link| link.starts_with("pipe:"))
        .collect()
}

/// How many of this process's files are one of `pipes`.
fn open_among(pipes: &HashSet<String>) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| pipes.contains(&link.display().to_string()))
        .count()
}

/// How many threads of this process have the name `name` (as the kernel keeps it: 15 bytes).
fn threads_named(name: &str) -> usize {
    let name = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Kills the grandchildren whose pids name the files of a folder, when the test ends.
struct Grandchildren(PathBuf);

impl Grandchildren {
    fn pids(&self) -> Vec<u32> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }
}

impl Drop for Grandchildren {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: `kill` touches no memory; the pid is a `sleep` this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_grandchild_holding_the_output_pipes_leaks_nothing_over_restarts() {
    let dir = scratch("pipeholder");
    let grandchildren = Grandchildren(dir.clone());
    let name = "pipes-held";
    let options = ProcessOptions {
        // The grandchild must outlive its parent, as it does where neither a namespace nor a
        // subreaper contains it: no namespace, and no worker executable to run a subreaper
        // (this test binary never called `worker_main`), leaves the process group alone.
        pid_namespace: false,
        worker: None,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_crashes: 100,
        ..process_options()
    };
    let args = ["pipeholder".to_owned(), dir.display().to_string()];
    let plugin = ProcessPlugin::program(program("noisy.py"), &args, &[], options);
    let registry = plugin_host::Registry::new();
    registry
        .register(plugin.create(Some(name), &serde_json::json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let instance = registry.get(name).unwrap();
    let copier = format!("out:{name}");
    let mut pipes = HashSet::new();
    for round in 1..=6 {
        // Its grandchild is running and holds the program's stdout and stderr.
        let deadline = Instant::now() + Duration::from_secs(10);
        while grandchildren.pids().len() < round {
            assert!(Instant::now() < deadline, "no grandchild in round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in grandchildren.pids() {
            pipes.extend(stdio_pipes(pid));
        }
        let (_, old, _) = instance.process().unwrap();
        // A call makes the program exit; the supervisor restarts it.
        let _ = router.dispatch(&plugin_host::Request::new("GET", "/pipeholder"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, pid, state) = instance.process().unwrap();
            if state == ChildState::Serving && pid.is_some() && pid != old {
                break;
            }
            assert!(Instant::now() < deadline, "not restarted in round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The grandchildren still hold their pipes, the host none of them: once an old child is
    // reaped, its output copier ends and closes them (a moment later: wait for it).
    let held: usize = grandchildren
        .pids()
        .iter()
        .map(|&pid| stdio_pipes(pid).len())
        .sum();
    assert!(held >= 12, "the grandchildren hold {held} pipes");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (files, threads) = (open_among(&pipes), threads_named(&copier));
        // Only the current child's copier is left (its pipes are not among those).
        if files == 0 && threads <= 1 {
            eprintln!("after 6 restarts: {files} of their pipes open, {threads} output thread(s)");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 6 restarts the host still holds {files} of the {} pipes of the children's \
             output, and {threads} output threads",
            pipes.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(router);
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    drop(grandchildren);
}

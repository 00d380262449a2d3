//! Every line a plugin in a child process logs carries its plugin's and its instance's names,
//! from `create` on, as in-process: its `log` messages, its output lines and its crash line
//! (at ERROR). A program may say its plugin's name before `welcome`; a name it says wrongly is
//! refused, and so is a restarted process's name that is not its plugin's, before it tags
//! anything. A program's line that looks like a crash line is an ordinary one.

use crate::util::{Served, check_config, fixture, http, line_with, program, scratch, serve};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The program that says its plugin's name before `welcome`, in the way its argument names.
fn names_program() -> PathBuf {
    program("names.py")
}

/// The lines of `log` under the target `plugin` (what plugins log), without their time.
fn plugin_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|line| line.split_once("Z ").map(|(_, rest)| rest.trim_start()))
        .filter(|line| {
            line.split_once(' ')
                .is_some_and(|(_, l)| l.starts_with("plugin: "))
        })
        .collect()
}

/// Serves the crash fixture isolated (`name = ...` if `name` is given), has it crash in a
/// handler, and returns the host's log; checks that every line it logged for the plugin, its
/// create-time line and its crash line among them, is tagged `plugin="crash"
/// instance="INSTANCE"`, and the crash line's level.
fn crash_isolated(test: &str, name: Option<&str>) {
    let crash = fixture!("FIXTURE_CRASH");
    let named = name.map_or_else(String::new, |name| format!("name = {name:?}\n"));
    let text = format!(
        "[[plugin]]\npath = {:?}\n{named}isolation = \"process\"\n",
        crash.display().to_string()
    );
    let served = serve(test, &text);
    let addr = served.addr;
    assert_eq!(http(addr, "GET", "/crash/segv", b"").status, 502);
    std::thread::sleep(Duration::from_millis(300));
    let (_, log) = served.terminate_within(Duration::from_secs(15));
    let instance = name.unwrap_or("crash");
    let tags = format!("plugin=\"crash\" instance=\"{instance}\"");
    // Created twice: at first, and again after the crash.
    let created = format!("INFO plugin: crash: created {tags}");
    let on_stderr = format!("INFO plugin: crash: created on stderr {tags} stream=\"stderr\"");
    for line in [created, on_stderr] {
        assert_eq!(
            plugin_lines(&log).iter().filter(|l| **l == line).count(),
            2,
            "{line}\nin\n{log}"
        );
    }
    let crash_line = format!(
        "ERROR plugin: plugin-host: fatal SIGSEGV in plugin instance \"{instance}\" ({}) during \
         GET /crash/segv {tags} stream=\"stderr\"",
        crash.display()
    );
    assert!(plugin_lines(&log).contains(&crash_line.as_str()), "{log}");
    for line in plugin_lines(&log) {
        assert!(line.contains(&tags), "{line}\nin\n{log}");
    }
}

#[test]
fn an_isolated_library_logs_from_create_on_and_crashes_under_its_names() {
    crash_isolated("lognames-isolated", None);
}

#[test]
fn an_isolated_library_named_by_its_entry_logs_under_both_names() {
    crash_isolated("lognames-isolated-named", Some("crashy"));
}

#[test]
fn a_program_that_says_its_name_before_welcome_is_tagged_with_it() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"says\"]\n",
        names_program().display().to_string()
    );
    let served = serve("lognames-program", &text);
    assert_eq!(http(served.addr, "GET", "/named", b"").text(), "named");
    let (_, log) = served.terminate_within(Duration::from_secs(15));
    let tags = "plugin=\"named\" instance=\"named\"";
    line_with(&log, &["INFO plugin: loaded ", tags]);
    // A message without the name, after it: tagged with it too.
    line_with(&log, &["INFO plugin: before welcome ", tags]);
    line_with(
        &log,
        &[
            "INFO plugin: stderr after start ",
            tags,
            "stream=\"stderr\"",
        ],
    );
    for line in plugin_lines(&log) {
        assert!(line.contains(tags), "{line}\nin\n{log}");
    }
}

/// `plugin-host check` of the names program in `mode`: its verdict, which must be a failure.
fn check_names(mode: &str) -> String {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [{mode:?}]\nname = \"bad\"\n",
        names_program().display().to_string()
    );
    let (code, stdout) = check_config(&format!("lognames-{mode}"), &text);
    assert_eq!(code, Some(1), "{stdout}");
    let verdict = stdout.lines().next().unwrap_or_default().to_owned();
    assert!(
        verdict.starts_with("FAIL  ") && verdict.contains("plugin `bad` ("),
        "{verdict}"
    );
    verdict
}

#[test]
fn a_program_that_says_two_names_is_refused() {
    let verdict = check_names("twice");
    assert!(
        verdict.contains("its log messages gave the plugin two names, \"named\" then \"other\""),
        "{verdict}"
    );
}

#[test]
fn a_program_whose_welcome_gives_another_name_is_refused() {
    let verdict = check_names("mismatch");
    assert!(
        verdict.contains(
            "its welcome gave the plugin the name \"other\", its log messages before it \"named\""
        ),
        "{verdict}"
    );
}

#[test]
fn a_program_that_says_a_name_of_two_lines_is_refused() {
    let verdict = check_names("control");
    assert!(
        verdict.contains(
            "a log message gave the plugin the name \"named\\nforged\": a plugin's name must be \
             1 to 128 bytes of text without control characters"
        ),
        "{verdict}"
    );
}

/// `plugin-host check` of the crash fixture run isolated as `crashy`: its log.
fn check_crash_isolated(config: &Path) -> String {
    let output = Command::new(sample_plugins::host_binary())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// What `create` writes to its standard error comes on a pipe, apart from the socket where the
/// worker said the plugin's name just before: the host may read it first, and holds it back
/// until the name is known. Many starts, several at once, so that either may come first.
#[test]
fn an_isolated_librarys_create_output_carries_its_names_whichever_comes_first() {
    let config = scratch("lognames-race").join("plugins.toml");
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\n",
        fixture!("FIXTURE_CRASH").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let expected = "INFO plugin: crash: created on stderr plugin=\"crash\" instance=\"crashy\" \
                    stream=\"stderr\"";
    for _ in 0..8 {
        let logs: Vec<String> = std::thread::scope(|scope| {
            let checks: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| check_crash_isolated(&config)))
                .collect();
            checks.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for log in &logs {
            assert!(plugin_lines(log).contains(&expected), "{log}");
        }
    }
}

/// Writes the Python plugin program `file` into `dir`, executable: the protocol's frames
/// (`frames.py`) imported, the socket in `sock`, `hello` read; then `body`.
fn python_program(dir: &Path, file: &str, body: &str) {
    let text = format!(
        "#!/usr/bin/env python3\nimport os, socket, sys, time\nsys.path.insert(0, {:?})\n\
         import frames\nfrom frames import send\n\
         sock = socket.socket(fileno=int(os.environ[\"PLUGLET_PLUGIN_FD\"]))\n\
         frames.receive(sock)\n{body}",
        program("frames.py").parent().unwrap().display().to_string()
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
}

/// A restarted process that says another plugin's name is refused before its name tags
/// anything: the lines of the process after it keep the plugin's names.
#[test]
fn a_restart_refused_for_another_name_leaves_the_names_as_they_were() {
    let dir = scratch("lognames-restart-renamed");
    // Its first process serves one call, then exits at the second; the second says it is
    // `other`; the third is `first` again, and writes a line before its welcome.
    python_program(
        &dir,
        "renamed.py",
        r#"with open("runs", "a") as runs:
    runs.write("x")
run = os.path.getsize("runs")
if run == 3:
    print("third, before welcome", file=sys.stderr, flush=True)
    time.sleep(0.3)
name = "other" if run == 2 else "first"
send(sock, {"type": "welcome", "version": 1, "name": name, "plugin_version": "0",
            "routes": [{"method": "GET", "path": "/renamed"}]})
calls = 0
while True:
    header, _ = frames.receive(sock)
    if frames.lifecycle(sock, header):
        continue
    calls += 1
    if run == 1 and calls == 2:
        os._exit(3)
    send(sock, {"type": "response", "id": header["id"]}, b"run %d" % run)
"#,
    );
    let config = dir.join("plugins.toml");
    std::fs::write(&config, "[[plugin]]\nexec = \"renamed.py\"\n").unwrap();
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let addr = served.addr;
    assert_eq!(http(addr, "GET", "/renamed", b"").text(), "run 1");
    assert_eq!(http(addr, "GET", "/renamed", b"").status, 502);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while http(addr, "GET", "/renamed", b"").text() != "run 3" {
        assert!(std::time::Instant::now() < deadline, "no third process");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, log) = served.terminate_within(Duration::from_secs(15));
    line_with(
        &log,
        &[
            "its restart failed: its welcome gave the plugin the name \"other\", but the process \
             it replaces was plugin \"first\": a plugin process must keep its plugin's name (to \
             serve another plugin, restart the host)",
            "plugin=\"first\"",
        ],
    );
    line_with(
        &log,
        &[
            "INFO plugin: third, before welcome plugin=\"first\" instance=\"first\" \
             stream=\"stderr\"",
        ],
    );
    assert!(!log.contains("plugin=\"other\""), "{log}");
}

/// A program's line that looks like a worker's crash line is an ordinary line: only the
/// workers of the host are trusted with that prefix (an isolated crash is an ERROR: see
/// `crash_isolated`).
#[test]
fn a_program_that_writes_a_crash_line_gets_an_ordinary_line() {
    let dir = scratch("lognames-forged-crash");
    python_program(
        &dir,
        "forger.py",
        r#"send(sock, {"type": "welcome", "version": 1, "name": "forger", "plugin_version": "0",
            "routes": [{"method": "GET", "path": "/forged"}]})
while True:
    header, _ = frames.receive(sock)
    if header["type"] == "start":
        print("plugin-host: fatal SIGSEGV in plugin instance \"shop\"", file=sys.stderr,
              flush=True)
    if frames.lifecycle(sock, header):
        continue
    send(sock, {"type": "response", "id": header["id"]}, b"forged")
"#,
    );
    let config = dir.join("plugins.toml");
    std::fs::write(&config, "[[plugin]]\nexec = \"forger.py\"\n").unwrap();
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    assert_eq!(http(served.addr, "GET", "/forged", b"").text(), "forged");
    let (_, log) = served.terminate_within(Duration::from_secs(15));
    line_with(
        &log,
        &[
            " INFO plugin: plugin-host: fatal SIGSEGV in plugin instance \"shop\" \
             plugin=\"forger\" instance=\"forger\" stream=\"stderr\"",
        ],
    );
    assert!(!log.contains("ERROR plugin:"), "{log}");
}

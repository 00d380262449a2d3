//! Every line a plugin in a child process logs carries its plugin's and its instance's names,
//! from `create` on, as in-process: its `log` messages, its output lines and its crash line
//! (at ERROR). A program may say its plugin's name before `welcome`; a name it says wrongly is
//! refused.

use crate::util::{Served, fixture, http, line_with, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn names_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/programs/names.py")
}

/// Serves `text` as a configuration of a scratch folder.
fn serve(test: &str, text: &str) -> Served {
    let config = scratch(test).join("plugins.toml");
    std::fs::write(&config, text).unwrap();
    Served::start(&["--config".as_ref(), config.as_os_str()], None)
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
    assert_eq!(
        plugin_lines(&log).iter().filter(|l| **l == created).count(),
        2,
        "{log}"
    );
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
    let dir = scratch(&format!("lognames-{mode}"));
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [{mode:?}]\nname = \"bad\"\n",
        names_program().display().to_string()
    );
    std::fs::write(dir.join("plugins.toml"), text).unwrap();
    let output = Command::new(sample_plugins::host_binary())
        .args(["check", "--config"])
        .arg(dir.join("plugins.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
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

//! What the README says agrees with what the code does:
//! - `cargo run --example demo` shows the plugins of the table `serve` prints there, the ones
//!   `plugin-host list` shows for the same staged configuration, each answering a request, and
//!   its log holds no colour codes when it goes to a pipe;
//! - the minimum Go version it names is the `go` directive of the Go template's, the Go
//!   sample's and the Go fixture's `go.mod` (which the CI builds with its Go).

use crate::util::{host, samples, scratch};
use std::path::Path;
use std::process::Command;

/// The first column of the lines of `text` after the line `header` starts, up to the first
/// line that does not start a row: a blank line, or one `end` starts.
fn column<'a>(text: &'a str, header: &str, end: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| !line.starts_with(header))
        .skip(1)
        .take_while(|line| !line.trim().is_empty() && !line.starts_with(end))
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

/// The instances of the table `serve` prints in the README.
fn readme_plugins() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let (_, table) = readme
        .split_once("`serve` prints the plugins")
        .expect("the README shows what `serve` prints");
    column(table, "PLUGIN ", "METHOD")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_shows_the_plugins_the_readme_and_list_show() {
    let dir = scratch("demo");
    let output = Command::new(sample_plugins::host_example("demo"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let shown = column(&stdout, "plugins (start order):", "routes:");
    // The Go sample is built, and staged, only where `go` is installed.
    let expected: Vec<String> = readme_plugins()
        .into_iter()
        .filter(|plugin| plugin != "shout" || samples().shout.is_some())
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(shown, expected, "{stdout}");
    // The configuration the demo staged, as `list` shows it.
    let list = host()
        .args(["list", "--config"])
        .arg(dir.join("plugins.toml"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(column(&listed, "PLUGIN ", "METHOD"), shown, "{listed}");
    // One request to each, answered.
    let answers = column(&stdout, "requests:", "\0");
    assert_eq!(answers.len(), shown.len(), "{stdout}");
    for line in stdout.lines().skip_while(|l| *l != "requests:").skip(1) {
        assert!(line.contains(" -> 200 "), "{line}\nin\n{stdout}");
    }
    // Its log goes to a pipe here: text, without colour codes.
    assert!(stderr.contains("INFO plugin: starting"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr}");
}

/// The `go` directive of a `go.mod`, such as `1.19`.
fn go_directive(go_mod: &Path) -> String {
    let text = std::fs::read_to_string(go_mod).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("go "))
        .unwrap_or_else(|| panic!("no `go` directive in {}", go_mod.display()))
        .trim()
        .to_owned()
}

#[test]
fn the_minimum_go_version_of_the_readme_is_the_go_mod_directive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // One line: the README wraps its paragraphs anywhere.
    let readme = std::fs::read_to_string(root.join("README.md"))
        .unwrap()
        .replace('\n', " ");
    let (_, go) = readme
        .split_once("## A Go plugin")
        .expect("the README has a Go section");
    let (_, after) = go
        .split_once("It needs Go ")
        .expect("the Go section names the Go it needs");
    let (minimum, _) = after.split_once(" or later").unwrap();
    for go_mod in [
        "host/src/bin/plugin-host/templates/go/go.mod",
        "sample-plugins/shout/go.mod",
        "tests/fixtures/goplugin/go.mod",
    ] {
        assert_eq!(go_directive(&root.join(go_mod)), minimum, "{go_mod}");
    }
}

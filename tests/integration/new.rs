//! `plugin-host new`: every template builds with its own build file, as its README says,
//! passes `check --config plugin.toml`, and serves its route; `include-dir` writes the header and
//! `sdk-dir` the Rust SDK.

use crate::util::{Served, build_outside_project, host, http, path_with_host, run, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `tool` runs; a missing tool skips the calling test, except under CI.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "`{tool}` is not installed"
    );
    if !found {
        eprintln!("skipped: no `{tool}`");
    }
    found
}

/// Environment variables for a command.
type Env = std::collections::HashMap<&'static str, std::ffi::OsString>;

/// Runs `plugin-host new NAME --lang LANG` in a scratch folder and returns the project's folder
/// and the environment its build runs in (the binary on the PATH, a private data folder).
fn new_project(name: &str, lang: &str) -> (PathBuf, Env) {
    let scratch = scratch(&format!("new-{lang}"));
    let dir = scratch.join(name);
    let output = host()
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("plugin `{name}`")), "{stdout}");
    let env = Env::from([
        ("PATH", path_with_host()),
        ("XDG_DATA_HOME", scratch.join("data").into_os_string()),
    ]);
    (dir, env)
}

/// Checks the project with its own `plugin.toml`, serves it, and asks its route: every
/// template's answer says its content type.
fn check_and_serve(dir: &Path, name: &str, expected: &str) {
    let config = dir.join("plugin.toml");
    let output = host()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "plugin `{name}` 0.1.0, ABI 1.{}, 1 route(s): GET /{name}",
            plugin_api::abi::PLUGIN_ABI_MINOR
        )),
        "{stdout}"
    );
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let response = http(served.addr, "GET", &format!("/{name}?who=ada"), b"");
    assert_eq!(
        (response.status, response.text()),
        (200, expected.to_owned())
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn the_rust_template_builds_checks_and_serves() {
    let (dir, env) = new_project("hello-rs", "rust");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!(
            "pluglet-api = {{ version = \"{}\", path = \"vendor/pluglet-api\" }}",
            plugin_api::VERSION
        )),
        "{manifest}"
    );
    assert_holds(&dir.join("vendor/pluglet-api"), plugin_api::SDK_SOURCE);
    build_outside_project(&dir, &env);
    check_and_serve(&dir, "hello-rs", "hello, ada, from hello-rs\n");
}

#[test]
fn the_c_template_builds_with_make_checks_and_serves() {
    if !have("make") {
        return;
    }
    let (dir, env) = new_project("hello-c", "c");
    run(Command::new("make")
        .current_dir(&dir)
        .envs(&env)
        .arg("CFLAGS=-O2 -Wall -Wextra -Wpedantic -Werror"));
    run(Command::new("make")
        .current_dir(&dir)
        .envs(&env)
        .arg("check"));
    check_and_serve(&dir, "hello-c", "hello from hello-c\n");
}

#[test]
fn the_cpp_template_builds_with_cmake_checks_and_serves() {
    if !have("cmake") {
        return;
    }
    let (dir, env) = new_project("hello-cpp", "cpp");
    run(Command::new("cmake").current_dir(&dir).envs(&env).args([
        "-S",
        ".",
        "-B",
        "build",
        "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Wpedantic -Werror",
    ]));
    run(Command::new("cmake")
        .current_dir(&dir)
        .envs(&env)
        .args(["--build", "build"]));
    check_and_serve(&dir, "hello-cpp", "hello from hello-cpp\n");
}

#[test]
fn the_go_template_builds_with_make_checks_and_serves() {
    if !have("go") || !have("make") {
        return;
    }
    let (dir, env) = new_project("hello-go", "go");
    run(Command::new("make")
        .current_dir(&dir)
        .envs(&env)
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local"));
    check_and_serve(&dir, "hello-go", "hello from hello-go\n");
}

#[test]
fn new_refuses_a_bad_name_and_a_folder_in_use() {
    let dir = scratch("new-refusals");
    let output = host()
        .args(["new", "My Plugin", "--lang", "c", "--dir"])
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`My Plugin` cannot name a plugin"),
        "{stderr}"
    );
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let output = host()
        .args(["new", "fine", "--lang", "c", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing was written"
    );
}

/// Asserts that `dir` holds `files` (paths relative to it, and texts), each readable by all.
#[track_caller]
fn assert_holds(dir: &Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, text) in files {
        let file = dir.join(path);
        let written = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        assert!(written == *text, "{} is not this host's", file.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{}", file.display());
    }
}

/// Checks `plugin-host COMMAND [DIR]`, which writes `files` to DIR, or by default to
/// `$XDG_DATA_HOME/pluglet/VERSION/LEAF`, and prints the folder: with a folder given (twice:
/// the second run leaves the files alone), and with the default, where a stale file is
/// replaced.
fn check_writes(command: &str, leaf: &str, files: &[(&str, &str)]) {
    let dir = scratch(command);
    // A folder given.
    let output = host().arg(command).arg(dir.join("given")).output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        dir.join("given").display().to_string()
    );
    assert_holds(&dir.join("given"), files);
    // Again: the files already right are left alone (a rename would give a new inode).
    let inode = |dir: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.join(files[0].0)).unwrap().ino()
    };
    let before = inode(&dir.join("given"));
    run(host().arg(command).arg(dir.join("given")));
    assert_eq!(inode(&dir.join("given")), before);
    // The default: under XDG_DATA_HOME, per host version; a stale file is replaced.
    let expected = dir.join(format!("data/pluglet/{}/{leaf}", env!("CARGO_PKG_VERSION")));
    let (stale, _) = files[files.len() - 1];
    std::fs::create_dir_all(expected.join(stale).parent().unwrap()).unwrap();
    std::fs::write(expected.join(stale), "stale").unwrap();
    let output = host()
        .arg(command)
        .env("XDG_DATA_HOME", dir.join("data"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        expected.display().to_string()
    );
    assert_holds(&expected, files);
}

#[test]
fn include_dir_writes_the_header_this_host_speaks() {
    check_writes(
        "include-dir",
        "include",
        &[("plugin_api.h", plugin_api::C_HEADER)],
    );
}

#[test]
fn sdk_dir_writes_the_sdk_this_host_speaks() {
    check_writes("sdk-dir", "pluglet-api", plugin_api::SDK_SOURCE);
}

#[test]
fn sdk_dir_names_the_file_it_cannot_write() {
    let dir = scratch("sdk-dir-refused");
    std::fs::write(dir.join("file"), "not a folder").unwrap();
    let output = host()
        .arg("sdk-dir")
        .arg(dir.join("file/sdk"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot write {}: ",
            dir.join("file/sdk/Cargo.toml").display()
        )) && stderr.contains("; give a folder you can write to"),
        "{stderr}"
    );
}

//! The plugins shown in README.md build, load and serve: the C one with the documented command,
//! the Rust ones (with routes, and with hooks) as crates of their own, with the SDK where the
//! README's command puts it.

use crate::util::{Served, build_outside_project, http, http_raw, path_with_host, run, scratch};
use plugin_host::Factory;
use std::path::Path;
use std::process::Command;

/// The README's code blocks of language `lang` whose text starts with `first_line`.
fn blocks(lang: &str, first_line: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    readme
        .split(&format!("```{lang}\n"))
        .skip(1)
        .map(|block| block[..block.find("```").expect("a closed block")].to_owned())
        .filter(|block| block.starts_with(first_line))
        .collect()
}

#[test]
fn the_readme_rust_plugins_build_and_serve() {
    let [manifest] = &blocks("toml", "# Cargo.toml\n")[..] else {
        panic!("README has one Cargo.toml")
    };
    let [greet, ping, gate] = &blocks("rust", "// src/lib.rs\n")[..] else {
        panic!("README has three Rust plugins")
    };
    let [config] = &blocks("toml", "# plugin.toml\n")[..] else {
        panic!("README has one plugin.toml")
    };
    let [sdk] = &blocks("sh", "# in the plugin's folder")[..] else {
        panic!("README has one block of commands to run in the plugin's folder")
    };
    let dir = scratch("readme-rust");
    let mut entries = config.clone();
    for (name, source) in [("greet", greet), ("ping", ping), ("gate", gate)] {
        let project = dir.join(name);
        std::fs::create_dir_all(project.join("src")).unwrap();
        // A workspace of its own: the scratch folder is inside this repository's.
        let manifest = manifest.replace("name = \"greet\"", &format!("name = {name:?}"));
        std::fs::write(project.join("Cargo.toml"), manifest + "\n[workspace]\n").unwrap();
        std::fs::write(project.join("src/lib.rs"), source).unwrap();
        for line in sdk.lines().filter(|line| !line.starts_with('#')) {
            let Some(("plugin-host", args)) = line.split_once(' ') else {
                panic!("not a plugin-host command: {line}")
            };
            run(Command::new(sample_plugins::host_binary())
                .current_dir(&project)
                .args(args.split_whitespace()));
        }
        build_outside_project(&project, std::iter::empty::<(&str, &str)>());
        match name {
            "ping" => entries.push_str("\n[[plugin]]\npath = \"target/debug/libping.so\"\n"),
            // In front of `/ping` only: `/greet` answers as above.
            "gate" => entries.push_str(
                "\n[[plugin]]\npath = \"target/debug/libgate.so\"\nhook_paths = [\"/ping\"]\n",
            ),
            _ => {}
        }
    }
    // The README's plugin.toml sits beside the greet project; both builds share one target.
    let config = dir.join("greet/plugin.toml");
    std::fs::write(&config, entries).unwrap();
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let response = http(served.addr, "GET", "/greet/ada", b"");
    assert_eq!(
        (response.status, response.text()),
        (200, "Hello, ada!".to_owned())
    );
    assert_eq!(response.header("x-greeting"), Some("Hello"));
    let response = http(served.addr, "GET", "/greet/nobody", b"");
    assert_eq!(response.status, 500);
    // The body names the plugin; the reason (`cannot greet nobody`) goes to the log only.
    assert!(
        response.text().contains("plugin `greet`") && !response.text().contains("cannot greet"),
        "{}",
        response.text()
    );
    let response = http(
        served.addr,
        "GET",
        &format!("/greet/{}", "a".repeat(33)),
        b"",
    );
    assert_eq!(
        (response.status, response.text()),
        (422, "too long\n".to_owned())
    );
    // The gate answers for the route, or lets the request through and marks the answer.
    let response = http(served.addr, "GET", "/ping", b"");
    assert_eq!(
        (response.status, response.text()),
        (403, "which team?\n".to_owned())
    );
    assert_eq!(response.header("x-gate"), None);
    let response = http_raw(
        served.addr,
        "GET",
        "/ping",
        &[("x-team", "blue")],
        b"",
        None,
    );
    assert_eq!((response.status, response.text()), (200, "pong".to_owned()));
    assert_eq!(response.header("x-gate"), Some("passed"));
}

#[test]
fn the_readme_c_plugin_builds_checks_and_serves_as_written() {
    let [source] = &blocks("c", "/* hello.c")[..] else {
        panic!("README has one hello.c")
    };
    let [commands] = &blocks("sh", "# in the folder of hello.c\n")[..] else {
        panic!("README has one block of commands for hello.c")
    };
    let dir = scratch("readme-c");
    std::fs::write(dir.join("hello.c"), source).unwrap();
    // As an author has it: `plugin-host` on the PATH, no checkout of this repository, its own
    // data folder for the header.
    let path = path_with_host();
    for line in commands.lines().filter(|line| !line.starts_with('#')) {
        run(Command::new("sh")
            .current_dir(&dir)
            .env("PATH", &path)
            .env("XDG_DATA_HOME", dir.join("data"))
            .args(["-c", line]));
    }
    let library = dir.join("libhello_c.so");
    let factory = Factory::load(&library).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((factory.name(), factory.version()), ("hello-c", "1.0.0"));
    let served = Served::start(&["--plugins-dir".as_ref(), dir.as_os_str()], None);
    let response = http(served.addr, "GET", "/hello-c", b"");
    assert_eq!(
        (response.status, response.text()),
        (200, "hello from C".to_owned())
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

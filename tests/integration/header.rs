//! The committed C header is what cbindgen generates, and it compiles as strict C and C++.

use crate::util::{run, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn header_is_fresh() {
    let root = workspace();
    let crate_dir = root.join("plugin-api");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::generate_with_config(&crate_dir, config)
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = root.join("include/plugin_api.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/plugin_api.h");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/plugin_api.h is stale: refresh it with\n    \
         UPDATE_HEADER=1 cargo test -p plugin-tests --test integration header\n\
         and commit the result"
    );
}

/// Compiles `fixtures/header_check.c` with `compiler` in `language` mode.
fn compile_header_check(compiler: &str, language: &[&str]) {
    let root = workspace();
    let out = scratch("header-check").join("header_check.o");
    let mut command = Command::new(compiler);
    command
        .args(language)
        .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-c", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/fixtures/header_check.c"));
    run(&mut command);
}

#[test]
fn header_compiles_as_strict_c11() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    compile_header_check(&cc, &["-x", "c", "-std=c11"]);
}

#[test]
fn header_compiles_as_strict_cpp17() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    compile_header_check(&cxx, &["-x", "c++", "-std=c++17"]);
}

//! The C header compiles as strict C11 and C++17 with every declaration in use.

use crate::util::{run, scratch};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

//! The C header compiles as strict C11 and C++17 with every declaration in use.

use crate::util::{run, scratch};
use std::path::Path;
use std::process::Command;

/// Compiles `fixtures/header_check.c` as C, or as C++ when `cpp`, with the workspace's strict
/// flags.
fn compile_header_check(compiler: &str, cpp: bool) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/header_check.c");
    let out = scratch("header-check").join("header_check.o");
    let mut command = sample_plugins::compile::strict(Command::new(compiler), cpp);
    command
        .args(["-x", if cpp { "c++" } else { "c" }, "-c", "-o"])
        .arg(&out)
        .arg(source);
    run(&mut command);
}

#[test]
fn header_compiles_as_strict_c11() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    compile_header_check(&cc, false);
}

#[test]
fn header_compiles_as_strict_cpp17() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    compile_header_check(&cxx, true);
}

/// Compiles `source` as strict C11 and returns whether the compiler accepted it, with its output.
fn compiles_as_c(name: &str, source: &str) -> (bool, String) {
    let dir = scratch(name);
    std::fs::write(dir.join("check.c"), source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = sample_plugins::compile::strict(Command::new(cc), false)
        .args(["-c", "-o"])
        .arg(dir.join("check.o"))
        .arg(dir.join("check.c"))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn plugin_no_entry_prototypes_lets_cgo_declare_the_factory() {
    // What cgo writes into _cgo_export.h for `//export plugin_factory`: no `const`.
    let cgo = "extern PluginDescriptor *plugin_factory(PluginFactoryArgs *args);\n";
    let (accepted, stderr) =
        compiles_as_c("cgo-conflict", &format!("#include \"plugin_api.h\"\n{cgo}"));
    assert!(
        !accepted && stderr.contains("conflicting types"),
        "{stderr}"
    );
    let (accepted, stderr) = compiles_as_c(
        "cgo-prototypes",
        &format!("#define PLUGIN_NO_ENTRY_PROTOTYPES\n#include \"plugin_api.h\"\n{cgo}"),
    );
    assert!(accepted, "{stderr}");
}

//! Compiles the C fixtures: one library per way a descriptor can be wrong.

use sample_plugins::compile::shared_library;
use std::path::{Path, PathBuf};

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/descriptor.c");
    let variants: &[(&str, &[&str])] = &[
        ("fixture_valid", &[]),
        ("fixture_no_factory", &["FIXTURE_NO_FACTORY"]),
        ("fixture_refuse", &["FIXTURE_REFUSE"]),
        ("fixture_bad_magic", &["FIXTURE_MAGIC=0xDEADBEEF"]),
        ("fixture_major", &["FIXTURE_MAJOR=(PLUGIN_ABI_MAJOR+1)"]),
        ("fixture_minor", &["FIXTURE_MINOR=(PLUGIN_ABI_MINOR+1)"]),
        ("fixture_empty_name", &["FIXTURE_NAME=\"\""]),
        ("fixture_bad_utf8_name", &["FIXTURE_NAME=\"bad\\xff\\xfe\""]),
        ("fixture_null_create", &["FIXTURE_NULL_CREATE"]),
        ("fixture_conflict", &["FIXTURE_ROUTE=\"/c/hello\""]),
    ];
    for (name, defines) in variants {
        let library = shared_library(&source, &out_dir, name, defines);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    println!("cargo:rerun-if-changed=../include/plugin_api.h");
}

//! Compiles the C and C++ sample plugins against `include/plugin_api.h`, and the Go sample when
//! `go` is installed.

#[path = "src/compile.rs"]
mod compile;

use std::path::{Path, PathBuf};

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, source, env) in [
        ("greeter", "greeter/greeter.c", "SAMPLE_GREETER"),
        ("wordcount", "wordcount/wordcount.cpp", "SAMPLE_WORDCOUNT"),
    ] {
        let library = compile::shared_library(&here.join(source), &out_dir, name, &[]);
        println!("cargo:rustc-env={env}={}", library.display());
    }
    let shout = compile::go_shared_library(&here.join("shout"), &out_dir, "shout");
    let path = shout.map(|l| l.display().to_string()).unwrap_or_default();
    println!("cargo:rustc-env=SAMPLE_SHOUT={path}");
    println!("cargo:rerun-if-changed=../include/plugin_api.h");
    // Build the Rust samples with the same profile as this crate.
    let profile = std::env::var("PROFILE").expect("cargo sets PROFILE");
    println!("cargo:rustc-env=SAMPLES_PROFILE={profile}");
}

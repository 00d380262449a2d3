//! Compiles the C fixtures: one library per way a descriptor can be wrong, libraries whose
//! initialisers leave a mark, plugins that crash the host, and a plugin with hooks; and, when
//! `go` is installed, a plugin in Go.

use sample_plugins::compile::{go_shared_library, shared_library};
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
        // Without an ABI mark, the same mistakes are found in the descriptor after loading.
        ("fixture_unmarked", &["FIXTURE_NO_MARK"]),
        (
            "fixture_unmarked_bad_magic",
            &["FIXTURE_NO_MARK", "FIXTURE_MAGIC=0xDEADBEEF"],
        ),
        (
            "fixture_unmarked_major",
            &["FIXTURE_NO_MARK", "FIXTURE_MAJOR=(PLUGIN_ABI_MAJOR+1)"],
        ),
        (
            "fixture_unmarked_minor",
            &["FIXTURE_NO_MARK", "FIXTURE_MINOR=(PLUGIN_ABI_MINOR+1)"],
        ),
        ("fixture_empty_name", &["FIXTURE_NAME=\"\""]),
        ("fixture_bad_utf8_name", &["FIXTURE_NAME=\"bad\\xff\\xfe\""]),
        // U+2028, a line separator: a name that would break the log's lines.
        (
            "fixture_line_separator_name",
            &["FIXTURE_NAME=\"bad\\xe2\\x80\\xa8line\""],
        ),
        ("fixture_null_create", &["FIXTURE_NULL_CREATE"]),
        ("fixture_conflict", &["FIXTURE_ROUTE=\"/c/hello\""]),
        // Descriptors that lie.
        ("fixture_null_name", &["FIXTURE_NAME_FIELD={NULL,7}"]),
        (
            "fixture_huge_name",
            &["FIXTURE_NAME_FIELD={(const uint8_t *)\"fixture\",(size_t)-1}"],
        ),
        ("fixture_null_destroy", &["FIXTURE_NULL_DESTROY"]),
        ("fixture_reserved", &["FIXTURE_RESERVED=1"]),
        ("fixture_needs_config", &["FIXTURE_NEEDS_CONFIG"]),
    ];
    for (name, defines) in variants {
        let library = shared_library(&source, &out_dir, name, defines);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    // A library whose initialiser writes a marker file: one that fails inspection (its code must
    // never run) and one that passes (the control: its marker appears when it is loaded).
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/constructor.c");
    let constructors: &[(&str, &[&str])] = &[
        ("constructor_refused", &["FIXTURE_BAD_MARK"]),
        ("constructor_loaded", &[]),
    ];
    for (name, defines) in constructors {
        let marker = out_dir.join(format!("{name}.marker"));
        let define = format!("FIXTURE_MARKER=\"{}\"", marker.display());
        let defines: Vec<&str> = defines.iter().copied().chain([define.as_str()]).collect();
        let library = shared_library(&source, &out_dir, name, &defines);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
        println!(
            "cargo:rustc-env={}_MARKER={}",
            name.to_uppercase(),
            marker.display()
        );
    }
    // A plugin that crashes the host on request, and one that crashes it in `start`.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/crash.c");
    let crashes: &[(&str, &[&str])] = &[
        ("fixture_crash", &[]),
        ("fixture_crash_start", &["CRASH_IN_START"]),
    ];
    for (name, defines) in crashes {
        let library = shared_library(&source, &out_dir, name, defines);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    // A plugin that writes to stdout without newlines, forges log lines and floods the log.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/output.c");
    let library = shared_library(&source, &out_dir, "fixture_output", &[]);
    println!("cargo:rustc-env=FIXTURE_OUTPUT={}", library.display());
    // A plugin with all four hooks written against the header alone (ABI 1.1): with routes, and
    // with hooks only.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hooks.c");
    let hooks: &[(&str, &[&str])] = &[
        ("fixture_hooks", &[]),
        ("fixture_hooks_only", &["HOOKS_ONLY"]),
    ];
    for (name, defines) in hooks {
        let library = shared_library(&source, &out_dir, name, defines);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    // Plugins written for ABI 1.0, in C (with garbage after its descriptor) and C++, compiled
    // against the frozen 1.0 header next to their sources.
    for (file, name) in [
        ("fixtures/abi-1.0/compat.c", "compat_c"),
        ("fixtures/abi-1.0/compat.cpp", "compat_cpp"),
    ] {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let library = shared_library(&source, &out_dir, name, &[]);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    // Two builds of one plugin that answer differently, for the reload tests.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/version.c");
    for (name, mark) in [("fixture_version_a", "a"), ("fixture_version_b", "b")] {
        let define = format!("VERSION_MARK='{mark}'");
        let library = shared_library(&source, &out_dir, name, &[define.as_str()]);
        println!(
            "cargo:rustc-env={}={}",
            name.to_uppercase(),
            library.display()
        );
    }
    println!("cargo:rerun-if-changed=fixtures/abi-1.0/plugin_api.h");
    go_fixture(&out_dir);
    println!("cargo:rerun-if-changed=../include/plugin_api.h");
}

/// Builds the Go plugin (`fixtures/goplugin`) if `go` is on the PATH, and sets `FIXTURE_GO` to
/// its path, or to nothing when there is no `go`.
fn go_fixture(out_dir: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/goplugin");
    let library = go_shared_library(&source, out_dir, "fixture_go");
    let path = library.map(|l| l.display().to_string()).unwrap_or_default();
    println!("cargo:rustc-env=FIXTURE_GO={path}");
}

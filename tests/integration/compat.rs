//! Compatibility: plugins built for ABI 1.0 (before the hooks), in C, C++ and Rust, load on
//! the current host with no hooks and serve real HTTP requests next to plugins of ABI 1.1.
//!
//! - C: `tests/fixtures/abi-1.0/compat.c`, compiled against the frozen 1.0 header, with garbage
//!   after its descriptor where 1.1 has its hook pointers (the host must not read past the
//!   1.0 descriptor).
//! - C++: `tests/fixtures/abi-1.0/compat.cpp`, against the same header.
//! - Rust: the unchanged `hello` sample built against the frozen 1.0 SDK
//!   (`tests/fixtures/sdk-1.0`), whose descriptor's Rust layout is a prefix of the host's.
//!
//! The refusals (a newer minor, a skewed SDK of an older minor) are in `loading`.

use crate::util::{HttpResponse, Served, fixture, hooky, http_raw, serve};
use plugin_host::{Factory, HookSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `hello` built against the 1.0 SDK, built once.
fn rust_1_0() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdk-1.0/Cargo.toml");
        sample_plugins::build_rust_plugins_in(&manifest, &["hello-sdk-1-0"])
            .remove("hello-sdk-1-0")
            .expect("built")
    })
}

/// The three 1.0 plugins, as (library, plugin name).
fn plugins_1_0() -> [(PathBuf, &'static str); 3] {
    [
        (fixture!("COMPAT_C"), "compat-c"),
        (fixture!("COMPAT_CPP"), "compat-cpp"),
        (rust_1_0().to_owned(), "hello"),
    ]
}

/// A `[[plugin]]` entry for `path` named `name`, with the lines `extra`.
fn entry(path: &Path, name: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = {name:?}\n{extra}\n\n",
        path.display().to_string()
    )
}

/// A `[[plugin]]` entry of `hooky` (ABI 1.1, all four hooks) named and tagged `tag`.
fn hooky_entry(tag: &str) -> String {
    entry(hooky(), tag, &format!("[plugin.config]\ntag = {tag:?}"))
}

fn get(served: &Served, target: &str) -> HttpResponse {
    http_raw(served.addr, "GET", target, &[], b"", None)
}

#[test]
fn plugins_built_for_abi_1_0_load_with_abi_1_0_and_no_hooks() {
    for (path, name) in plugins_1_0() {
        let factory = Factory::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(factory.name(), name);
        assert_eq!(factory.abi_version(), (1, 0), "{name}");
        assert_eq!(factory.hooks(), HookSet::default(), "{name}");
        let instance = factory
            .create(name, &serde_json::json!({}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(instance.hooks(), HookSet::default(), "{name}");
    }
}

#[test]
fn plugins_built_for_abi_1_0_serve_between_hook_plugins_of_abi_1_1() {
    // The 1.0 plugins are registered between two instances of a 1.1 plugin with hooks.
    let mut text = hooky_entry("a");
    for (path, name) in plugins_1_0() {
        text.push_str(&entry(&path, name, ""));
    }
    text.push_str(&hooky_entry("b"));
    let served = serve("compat-serve", &text);
    for (target, says) in [
        ("/compat/c/ada", "hello from C 1.0, ada"),
        ("/compat/cpp/bob", "hello from C++ 1.0, bob"),
        ("/hello/eve", "hello, eve"),
        ("/hello", "hello from Rust"),
    ] {
        let response = get(&served, target);
        assert_eq!((response.status, response.text().as_str()), (200, says));
        // The 1.1 plugins' response hooks ran around the 1.0 route, the last registered first.
        assert_eq!(
            response.header_values("x-hook-trail"),
            ["b", "a"],
            "{target}"
        );
    }
    // The request hooks ran in order, with the 1.0 plugins between them taking no part.
    let echo = get(&served, "/hooky/b/echo");
    assert_eq!(echo.json()["x-hook-trail"], "a,b", "{}", echo.text());
}

#[test]
fn an_isolated_plugin_built_for_abi_1_0_serves_with_no_hooks() {
    // The worker process reads the C plugin's descriptor, with its garbage after it, and lists
    // no hooks in its `welcome`.
    let text = [
        hooky_entry("a"),
        entry(&fixture!("COMPAT_C"), "compat-c", "isolation = \"process\""),
    ]
    .concat();
    let served = serve("compat-isolated", &text);
    let response = get(&served, "/compat/c/ada");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "hello from C 1.0, ada")
    );
    assert_eq!(response.header_values("x-hook-trail"), ["a"]);
}

//! The sample plugins, built on demand, so that tests, examples and benchmarks need no manual
//! build step.
//!
//! - The C (`greeter`) and C++ (`wordcount`) samples are compiled by this crate's build script,
//!   and the Go sample (`shout`) too when `go` is installed.
//! - Rust plugins (`hello`, `counter`, the hook plugins `timing`, `ratelimit` and `apikey`, and
//!   any test fixture) are workspace crates built with `cargo build -p ...` by
//!   [`build_rust_plugins`], in this crate's profile.
#![deny(missing_docs)]

pub mod compile;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where `stage-samples` stages the samples by default: `target/samples/` of the workspace.
pub fn staging_dir() -> PathBuf {
    workspace_root().join("target/samples")
}

/// Copies the sample libraries into `dir` and writes `dir/plugins.toml`, a configuration that
/// serves them all (the counter twice, with two configurations; the Go sample when it was
/// built). Returns the configuration's path.
///
/// The hook plugins come first, each scoped so that the routes of the other samples answer as
/// the README shows and take any load: `timing` on every path, `ratelimit` on `/likes` only
/// (3 requests at once, then one every 5 seconds), `apikey` on `/hello` only, with the key
/// [`DEMO_KEY`] of the owner `demo`.
pub fn stage(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let samples = samples();
    for library in [
        &samples.timing,
        &samples.ratelimit,
        &samples.apikey,
        &samples.hello,
        &samples.greeter,
        &samples.wordcount,
        &samples.counter,
    ]
    .into_iter()
    .chain(&samples.shout)
    {
        let name = library.file_name().expect("a library file name");
        std::fs::copy(library, dir.join(name))?;
    }
    let name = |library: &Path| library.file_name().unwrap().to_string_lossy().into_owned();
    let shout = samples.shout.as_deref().map_or_else(String::new, |shout| {
        format!("\n[[plugin]]\npath = \"{}\"\n", name(shout))
    });
    let config = format!(
        r#"# The sample plugins: hooks first (timing, ratelimit, apikey: Rust), then routes: Rust
# (hello, counter), C (greeter), C++ (wordcount), Go (shout).

# server-timing on every answer
[[plugin]]
path = "{timing}"

# per client address: 3 requests at once, then one every 5 s; 429 past that
[[plugin]]
path = "{ratelimit}"
hook_paths = ["/likes"]
[plugin.config]
rate = 0.2
burst = 3

# 401 without the key; /hello/{{name}} stays open
[[plugin]]
path = "{apikey}"
hook_paths = ["/hello"]
[plugin.config]
keys = {{ demo = "{DEMO_KEY}" }}

[[plugin]]
path = "{hello}"

[[plugin]]
path = "{greeter}"

[[plugin]]
path = "{wordcount}"

[[plugin]]
path = "{counter}"
name = "visits"
[plugin.config]
path = "/visits"
start = 41

[[plugin]]
path = "{counter}"
name = "likes"
enabled = true
[plugin.config]
path = "/likes"
step = 10
{shout}"#,
        timing = name(&samples.timing),
        ratelimit = name(&samples.ratelimit),
        apikey = name(&samples.apikey),
        hello = name(&samples.hello),
        greeter = name(&samples.greeter),
        wordcount = name(&samples.wordcount),
        counter = name(&samples.counter),
    );
    let file = dir.join("plugins.toml");
    std::fs::write(&file, config)?;
    Ok(file)
}

/// The API key of the staged `apikey` instance: `curl -H 'x-api-key: KEY' .../hello`.
pub const DEMO_KEY: &str = "pluglet-demo-key";

/// The library files of the samples.
#[derive(Debug, Clone)]
pub struct Samples {
    /// `hello` (Rust).
    pub hello: PathBuf,
    /// `counter` (Rust, stateful, configurable).
    pub counter: PathBuf,
    /// `greeter` (C).
    pub greeter: PathBuf,
    /// `wordcount` (C++).
    pub wordcount: PathBuf,
    /// `shout` (Go), or `None` when `go` was not installed when this crate was built.
    pub shout: Option<PathBuf>,
    /// `timing` (Rust, hooks only): `server-timing` with the time spent in plugins.
    pub timing: PathBuf,
    /// `ratelimit` (Rust, hooks only): a token bucket per client address.
    pub ratelimit: PathBuf,
    /// `apikey` (Rust, hooks only): an API-key check.
    pub apikey: PathBuf,
}

/// Builds the samples once per process and returns their paths. Panics with cargo's output if
/// the build fails.
pub fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let rust = build_rust_plugins(&[
            "hello-plugin",
            "counter-plugin",
            "timing-plugin",
            "ratelimit-plugin",
            "apikey-plugin",
        ]);
        Samples {
            hello: rust["hello-plugin"].clone(),
            counter: rust["counter-plugin"].clone(),
            greeter: PathBuf::from(env!("SAMPLE_GREETER")),
            wordcount: PathBuf::from(env!("SAMPLE_WORDCOUNT")),
            shout: Some(env!("SAMPLE_SHOUT"))
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            timing: rust["timing-plugin"].clone(),
            ratelimit: rust["ratelimit-plugin"].clone(),
            apikey: rust["apikey-plugin"].clone(),
        }
    })
}

/// The workspace's root folder.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sample-plugins is inside the workspace")
}

/// Builds the given packages of this workspace with cargo and returns the shared library each
/// one produced, by package name. Panics with cargo's output if the build fails.
pub fn build_rust_plugins(packages: &[&str]) -> HashMap<String, PathBuf> {
    build_rust_plugins_in(&workspace_root().join("Cargo.toml"), packages)
}

/// Like [`build_rust_plugins`], for the packages of another workspace (a test fixture), built
/// into this workspace's target folder so that shared dependencies are compiled once.
pub fn build_rust_plugins_in(manifest: &Path, packages: &[&str]) -> HashMap<String, PathBuf> {
    let mut args = Vec::new();
    for package in packages {
        args.extend(["-p", package]);
    }
    let mut libraries = HashMap::new();
    for artifact in cargo_build(manifest, &args) {
        let is_cdylib = artifact["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        let name = artifact["package_id"].as_str().and_then(package_name);
        if let (true, Some(name)) = (is_cdylib, name.filter(|n| packages.contains(n))) {
            let library = artifact["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX));
            if let Some(library) = library {
                libraries.insert(name.to_owned(), PathBuf::from(library));
            }
        }
    }
    for package in packages {
        assert!(
            libraries.contains_key(*package),
            "cargo built no shared library for {package}"
        );
    }
    libraries
}

/// Builds the `plugin-host` binary (in this crate's profile) and returns its path.
pub fn host_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_executable(&["--bin", "plugin-host"]))
}

/// Builds the example `name` of the host crate (in this crate's profile) and returns its path.
pub fn host_example(name: &str) -> PathBuf {
    build_executable(&["--example", name])
}

/// Builds one executable of the host crate, chosen by `target` (`--bin NAME`, `--example NAME`).
fn build_executable(target: &[&str]) -> PathBuf {
    let manifest = workspace_root().join("Cargo.toml");
    let args: Vec<&str> = ["-p", "pluglet-host"]
        .iter()
        .chain(target)
        .copied()
        .collect();
    cargo_build(&manifest, &args)
        .iter()
        .find_map(|artifact| artifact["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable for {target:?}"))
}

/// Runs `cargo build` with `args` on `manifest` and returns its `compiler-artifact` messages.
/// Panics with cargo's output if the build fails.
fn cargo_build(manifest: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--message-format=json-render-diagnostics")
        .args(args);
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        command
            .arg("--target-dir")
            .arg(workspace_root().join("target"));
    }
    if env!("SAMPLES_PROFILE") == "release" {
        command.arg("--release");
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .collect()
}

/// The package name in a cargo package id: `path+file:///.../hello#hello-plugin@0.1.0`, or
/// `path+file:///.../hello-plugin#0.1.0` when the folder has the package's name.
fn package_name(id: &str) -> Option<&str> {
    let (url, fragment) = id.rsplit_once('#')?;
    match fragment.split_once('@') {
        Some((name, _)) => Some(name),
        None => url.rsplit('/').next(),
    }
}

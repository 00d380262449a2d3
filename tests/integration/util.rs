//! Helpers: the plugin libraries under test, a unique-name source, and a log capture.

use parking_lot::Mutex;
use plugin_host::{Error, ErrorKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub use sample_plugins::samples;

/// The Rust fixture plugins, built once.
fn rust_fixtures() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| sample_plugins::build_rust_plugins(&["faulty-plugin"]))
}

/// `faulty`: a Rust plugin that fails or panics where its configuration says.
pub fn faulty() -> &'static Path {
    &rust_fixtures()["faulty-plugin"]
}

/// A C fixture library compiled by `tests/build.rs`.
macro_rules! fixture {
    ($name:literal) => {
        std::path::PathBuf::from(env!($name))
    };
}
pub(crate) use fixture;

/// A name no other test uses, so that tests running in parallel can tell their logs apart.
pub fn unique(base: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{base}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A scratch folder for files a test creates.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(name));
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// Runs `command` and fails the test, with its output, unless it succeeds.
#[track_caller]
pub fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts that `error` has the expected kind and that its message names `file`.
#[track_caller]
pub fn assert_error(error: &Error, file: &Path, kind: impl Fn(&ErrorKind) -> bool) {
    assert!(kind(error.kind()), "unexpected error kind: {error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&file.display().to_string()),
        "the message does not name {}: {message}",
        file.display()
    );
    assert_eq!(error.file(), Some(file), "{message}");
}

/// One log line a plugin wrote through the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub instance: String,
    pub message: String,
}

static LOGS: Mutex<Vec<LogLine>> = Mutex::new(Vec::new());

struct Capture;

#[derive(Default)]
struct Fields {
    instance: Option<String>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "instance" {
            self.instance = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (Some(instance), Some(message)) = (fields.instance, fields.message) {
            LOGS.lock().push(LogLine { instance, message });
        }
    }
}

/// Starts capturing plugin log lines (idempotent).
pub fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::registry()
            .with(Capture)
            .try_init()
            .expect("no other subscriber");
    });
}

/// The captured log lines of the given instances, in the order they were written.
pub fn logs_of(instances: &[&str]) -> Vec<LogLine> {
    LOGS.lock()
        .iter()
        .filter(|l| instances.contains(&l.instance.as_str()))
        .cloned()
        .collect()
}

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
    BUILT.get_or_init(|| sample_plugins::build_rust_plugins(&["faulty-plugin", "hooky-plugin"]))
}

/// `faulty`: a Rust plugin that fails or panics where its configuration says.
pub fn faulty() -> &'static Path {
    &rust_fixtures()["faulty-plugin"]
}

/// `hooky`: a Rust plugin with all four hooks, steered by request headers naming an instance's
/// `tag` (see `tests/fixtures/hooky/src/lib.rs` for the headers and its routes).
pub fn hooky() -> &'static Path {
    &rust_fixtures()["hooky-plugin"]
}

/// How `faulty`'s handlers fail, each as `(target, kind, what the client is told, the reason
/// that goes to the log only)`: the `kind` and `error` of its 500 answer's body, after
/// "plugin `faulty`: ".
pub const FAULTY_FAILURES: [(&str, &str, &str, &str); 2] = [
    (
        "/faulty/error",
        "failed",
        "the handler for GET /faulty/error failed",
        "deliberate handler failure",
    ),
    (
        "/faulty/panic",
        "panicked",
        "the handler panicked during GET /faulty/panic",
        // As the log has it: the panic message once, after what panicked.
        "panicked during GET /faulty/panic: deliberate handler panic",
    ),
];

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
    // Fresh on every run: names repeat from one run to the next.
    let _ = std::fs::remove_dir_all(&dir);
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

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the headers called `name` (case-insensitive), in the order received.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test, with the body, if it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// Where the head of a response in `raw` ends: the index of its blank line's `\r\n\r\n`.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The response whose head is `raw[..split]`, followed by `\r\n\r\n` and its body.
fn parse_response(raw: &[u8], split: usize) -> HttpResponse {
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status: status.unwrap_or_else(|| panic!("no status in {head:?}")),
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends one HTTP/1.1 request over a fresh connection to `addr` and reads the whole response.
/// `body` is sent as is, after a `content-length` header of `declared` bytes (its length when
/// `None`), so that a test can announce a body it does not send.
pub fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    declared: Option<usize>,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        declared.unwrap_or(body.len())
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(body).expect("send the body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = head_end(&raw)
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    parse_response(&raw, split)
}

/// One client connection to a server, kept open for several requests, counting the bytes it
/// sends and receives.
pub struct KeepAlive {
    stream: std::net::TcpStream,
    /// The bytes sent to the server so far.
    pub sent: u64,
    /// The bytes received from the server so far.
    pub received: u64,
}

impl KeepAlive {
    /// Connects to `addr`.
    pub fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            sent: 0,
            received: 0,
        }
    }

    /// The client's address of the connection, as the server sees it.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Sends `GET target` with `headers` and reads its response, which must have a
    /// `content-length`; the connection stays open.
    pub fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        use std::io::{Read, Write};
        let peer = self.stream.peer_addr().unwrap();
        let mut head = format!("GET {target} HTTP/1.1\r\nhost: {peer}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream
            .write_all(head.as_bytes())
            .expect("send the head");
        self.sent += head.len() as u64;
        let mut raw = Vec::new();
        let mut chunk = [0; 4096];
        let (split, length) = loop {
            if let Some(split) = head_end(&raw) {
                let response = parse_response(&raw, split);
                let length = response
                    .header("content-length")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("no content-length in {response:?}"));
                if raw.len() >= split + 4 + length {
                    break (split, length);
                }
            }
            let read = self.stream.read(&mut chunk).expect("read the response");
            assert!(
                read > 0,
                "the connection closed after {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&chunk[..read]);
        };
        assert_eq!(
            raw.len(),
            split + 4 + length,
            "more than one response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        self.received += raw.len() as u64;
        parse_response(&raw, split)
    }

    /// Asserts that the server closes the connection within `within`: the next read ends the
    /// stream without a byte.
    #[track_caller]
    pub fn assert_closed(&mut self, within: std::time::Duration) {
        use std::io::Read;
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut more = [0; 4096];
        match self.stream.read(&mut more) {
            Ok(0) => {}
            Ok(read) => panic!(
                "the server sent more: {:?}",
                String::from_utf8_lossy(&more[..read])
            ),
            Err(e) => panic!("the connection is still open {within:?} later ({e})"),
        }
    }
}

/// Sends a request with a body and reads the response.
pub fn http(addr: std::net::SocketAddr, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    http_raw(addr, method, target, &[], body, None)
}

/// A plugin server on an ephemeral port of 127.0.0.1, running the library's `serve` on its own
/// tokio runtime, with the given plugins started.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub registry: plugin_host::Registry,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl TestServer {
    pub fn start(entries: &[plugin_host::config::PluginEntry], body_limit: usize) -> Self {
        Self::start_with(
            entries,
            |service| service.with_body_limit(body_limit),
            plugin_host::server::ServeOptions::default(),
        )
    }

    /// A server whose service `configure` sets up, served with `options`.
    pub fn start_with(
        entries: &[plugin_host::config::PluginEntry],
        configure: impl FnOnce(plugin_host::server::PluginService) -> plugin_host::server::PluginService,
        options: plugin_host::server::ServeOptions,
    ) -> Self {
        let registry =
            plugin_host::config::deploy(entries, false).unwrap_or_else(|e| panic!("{e}"));
        registry.start_all().unwrap_or_else(|e| panic!("{e}"));
        let router = registry.router().unwrap_or_else(|e| panic!("{e}"));
        let service = configure(plugin_host::server::PluginService::new(router));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let drained = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let signal = async move {
                    let _ = signal.await;
                };
                plugin_host::server::serve(listener, service, signal, &options).await
            });
            // Calls still running on a stuck worker or the blocking pool are left to run.
            runtime.shutdown_timeout(std::time::Duration::ZERO);
            drained
        });
        Self {
            addr,
            registry,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Stops accepting, waits for the requests in flight, then stops the plugins in reverse.
    pub fn shutdown(&mut self) -> bool {
        let _ = self.shutdown.take().map(|s| s.send(()));
        let drained = self
            .thread
            .take()
            .is_none_or(|t| t.join().expect("server thread"));
        if let Err(e) = self.registry.close_and_stop_all() {
            panic!("{e}");
        }
        drained
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// An entry for `path` with a name and a configuration.
pub fn entry(
    path: &Path,
    name: &str,
    config: serde_json::Value,
) -> plugin_host::config::PluginEntry {
    plugin_host::config::PluginEntry {
        name: Some(name.to_owned()),
        config,
        ..plugin_host::config::PluginEntry::new(path)
    }
}

/// A `plugin-host serve` process on an ephemeral port of 127.0.0.1, started with `args` after
/// `serve --listen 127.0.0.1:0`; `addr` comes from its summary. Killed if the test fails first.
pub struct Served {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// What it printed before `listening on`.
    pub summary: String,
}

impl Served {
    /// Starts it with stderr piped, through `sh -c` when `shell_prefix` is given (`ulimit`).
    pub fn start(args: &[&std::ffi::OsStr], shell_prefix: Option<&str>) -> Self {
        Self::start_with(args, shell_prefix, std::process::Stdio::piped())
    }

    /// Starts it with the given stderr.
    pub fn start_with(
        args: &[&std::ffi::OsStr],
        shell_prefix: Option<&str>,
        stderr: std::process::Stdio,
    ) -> Self {
        use std::io::BufRead;
        let binary = sample_plugins::host_binary();
        let mut command = match shell_prefix {
            None => Command::new(binary),
            Some(prefix) => {
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                    .arg(binary);
                command
            }
        };
        let mut child = command
            .env_remove("RUST_LOG")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn plugin-host serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut summary = String::new();
        let addr = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "serve ended before listening:\n{summary}{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                break addr.parse().unwrap();
            }
            summary.push_str(&line);
        };
        Self {
            child,
            addr,
            summary,
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Sends SIGTERM and waits for the exit, which must come within `limit`; returns the status
    /// and stderr.
    pub fn terminate_within(
        self,
        limit: std::time::Duration,
    ) -> (std::process::ExitStatus, String) {
        let signalled = std::time::Instant::now();
        self.terminate();
        let (status, stderr) = self.wait();
        let took = signalled.elapsed();
        assert!(took < limit, "exited after {took:?}:\n{stderr}");
        (status, stderr)
    }

    /// Waits at most 15 s for the exit; returns the status and stderr (if piped).
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        wait_for_exit(&mut self.child)
    }
}

/// Serves the configuration `text`, written to `plugins.toml` in a scratch folder named after
/// `test`, so that relative paths in it are relative to that folder.
pub fn serve(test: &str, text: &str) -> Served {
    let config = scratch(test).join("plugins.toml");
    std::fs::write(&config, text).unwrap();
    Served::start(&["--config".as_ref(), config.as_os_str()], None)
}

/// Runs `plugin-host check --config` on the configuration `text`, written to `plugins.toml` in a
/// scratch folder named after `test`; returns its exit code and its standard output.
pub fn check_config(test: &str, text: &str) -> (Option<i32>, String) {
    let config = scratch(test).join("plugins.toml");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(sample_plugins::host_binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

/// Waits at most 15 s for `child` to exit (then kills it and fails); returns its status and
/// its stderr, if piped.
pub fn wait_for_exit(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let reader = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("plugin-host still running 15 s later");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.map_or_else(String::new, |r| r.join().unwrap());
    (status, stderr)
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A configuration file in `dir` with one entry per `(path, name, extra lines)`.
pub fn write_config(dir: &Path, plugins: &[(&Path, &str, &str)]) -> PathBuf {
    let mut text = String::new();
    for (path, name, extra) in plugins {
        text.push_str(&format!(
            "[[plugin]]\npath = {:?}\nname = {name:?}\n{extra}\n\n",
            path.display().to_string()
        ));
    }
    let file = dir.join("plugins.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The resident memory of process `pid`, in bytes (0 once it is gone).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The index of the first line of `text` holding every one of `needles`; fails without one.
#[track_caller]
pub fn line_with(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in\n{text}"))
}

/// A Go plugin library built by a build script, given the path it recorded (empty when `go` was
/// not on the PATH then); `None` skips the calling test, except under CI, where it must run.
pub fn go_library(path: &str) -> Option<PathBuf> {
    if path.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "a Go plugin was not built: `go` was not on the PATH when the build script ran \
             (install golang-go, then rebuild with `cargo clean -p plugin-tests -p sample-plugins`)"
        );
        eprintln!("skipped: no `go` when the Go plugins were built");
        return None;
    }
    Some(PathBuf::from(path))
}

/// The PATH with the folder of the `plugin-host` binary first, as an author who installed it
/// has it.
pub fn path_with_host() -> std::ffi::OsString {
    let bin = sample_plugins::host_binary()
        .parent()
        .expect("the binary's folder");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(&path)))
        .expect("a PATH of folders without `:`")
}

/// A cargo home of the tests' own, made on first use and kept across runs in this target folder
/// (its registry cache spares later runs the downloads): the registry serves third-party crates
/// but no `pluglet-api`, and no configuration of this machine applies, as on an outside author's
/// machine. A configuration or credentials file found in it is removed before it is used.
fn fresh_cargo_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fresh-cargo-home");
        std::fs::create_dir_all(&home).expect("create the cargo home");
        for file in std::fs::read_dir(&home).expect("read the cargo home") {
            let file = file.expect("read the cargo home").path();
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("config") || name.starts_with("credentials") {
                std::fs::remove_file(&file)
                    .unwrap_or_else(|e| panic!("cannot remove {}: {e}", file.display()));
            }
        }
        home
    })
}

/// Variables that change what `cargo build` does besides those named `CARGO` or `CARGO_*`: the
/// compiler wrappers and the compiler's flags.
const BUILD_VARIABLES: [&str; 4] = [
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
];

/// Fails unless no cargo configuration file applies in `dir`: none in `.cargo/` of it or of a
/// folder above it.
#[track_caller]
fn assert_no_cargo_config(dir: &Path) {
    let dir = dir
        .canonicalize()
        .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", dir.display()));
    for folder in dir.ancestors() {
        for name in ["config", "config.toml"] {
            let file = folder.join(".cargo").join(name);
            assert!(
                !file.exists(),
                "{} applies to a build in {}, which must see no cargo configuration of this \
                 machine: remove it, or give the tests a target folder (CARGO_TARGET_DIR) outside \
                 {}",
                file.display(),
                dir.display(),
                folder.display()
            );
        }
    }
}

/// Builds the Rust plugin project in `dir`, a crate outside this workspace, as an outside
/// author would: `cargo build` with `env` set, a fresh cargo home, no `CARGO*` variable, no
/// compiler wrapper or flags of this environment and no cargo configuration file (it fails if
/// one applies in `dir`), so that `pluglet-api` can only come from the copy of the SDK the
/// project holds. Asserts that it did (`Cargo.lock` has no registry source for it). The
/// project's `target` is a folder shared between runs, so that only the first run builds the
/// dependencies.
pub fn build_outside_project<K, V>(dir: &Path, env: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    assert_no_cargo_config(dir);
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outside-target");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, dir.join("target")).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text == "CARGO" || text.starts_with("CARGO_") || BUILD_VARIABLES.contains(&&*text) {
            command.env_remove(&name);
        }
    }
    run(command
        .current_dir(dir)
        .envs(env)
        .env("CARGO_HOME", fresh_cargo_home())
        .arg("build"));
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    let sdk = lock
        .split("[[package]]")
        .find(|package| package.contains("\nname = \"pluglet-api\"\n"))
        .unwrap_or_else(|| panic!("no pluglet-api in {}/Cargo.lock:\n{lock}", dir.display()));
    assert!(
        !sdk.contains("\nsource = "),
        "pluglet-api came from a registry, not the project's copy:{sdk}"
    );
}

/// `entry`, run isolated: loaded by a worker process (the `plugin-host` binary) of its own.
pub fn isolated(entry: plugin_host::config::PluginEntry) -> plugin_host::config::PluginEntry {
    plugin_host::config::PluginEntry {
        run: plugin_host::config::Run::Isolated(process_options()),
        ..entry
    }
}

/// Process options for tests: the `plugin-host` binary as the worker.
pub fn process_options() -> plugin_host::process::ProcessOptions {
    plugin_host::process::ProcessOptions {
        worker: Some(sample_plugins::host_binary().to_owned()),
        ..Default::default()
    }
}

/// `tests/fixtures/programs/FILE`: a plugin program written for the tests, such as
/// `answers.py`, for what PROTOCOL.md promises about calls; each says what it does at its top.
pub fn program(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/programs")
        .join(file)
}

/// `sample-plugins/programs/FILE`: a sample plugin program, such as `quote.py`.
pub fn sample_program(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sample-plugins/programs")
        .join(file)
}

/// A command for the `plugin-host` binary, without the `RUST_LOG` of the test's environment.
pub fn host() -> Command {
    let mut command = Command::new(sample_plugins::host_binary());
    command.env_remove("RUST_LOG");
    command
}

/// Serves the configuration `text` as [`serve`] does, with the log filter `filter` (to see
/// debug lines).
pub fn serve_logging(test: &str, text: &str, filter: &str) -> Served {
    let config = scratch(test).join("plugins.toml");
    std::fs::write(&config, text).unwrap();
    let args = [
        "--log-level".as_ref(),
        filter.as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    Served::start(&args, None)
}

/// `GET target` with `headers`, over a fresh connection.
pub fn get(served: &Served, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_raw(served.addr, "GET", target, headers, b"", None)
}

/// Asserts that `response` is the JSON error answer `status` of the plugin `plugin`, of `kind`,
/// whose error says `says` after "plugin `PLUGIN`: ".
#[track_caller]
pub fn assert_failure(response: &HttpResponse, status: u16, plugin: &str, kind: &str, says: &str) {
    let body = response.json();
    assert_eq!(
        (response.status, &body["plugin"], &body["kind"]),
        (status, &serde_json::json!(plugin), &serde_json::json!(kind)),
        "{body}"
    );
    assert_eq!(
        body["error"],
        format!("plugin `{plugin}`: {says}"),
        "{body}"
    );
}

/// Asserts that a connection to `addr` is closed without an answer to the request sent on it.
#[track_caller]
pub fn assert_closed_without_answer(addr: std::net::SocketAddr) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // Sending may fail already, when the server closed it first.
    let _ = std::io::Write::write_all(
        &mut stream,
        b"GET /hooky/a/echo HTTP/1.1\r\nhost: test\r\n\r\n",
    );
    let mut raw = Vec::new();
    match std::io::Read::read_to_end(&mut stream, &mut raw) {
        Ok(_) => assert!(
            raw.is_empty(),
            "answered: {:?}",
            String::from_utf8_lossy(&raw)
        ),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the connection was neither closed nor reset: {e}"
        ),
    }
}

/// Asserts that what an `on_disconnect` hook was told of a closed connection (`last`, as the
/// `hooky` fixture's stats route reports it) is what its client saw: its addresses, two
/// requests, every byte sent (`sent`) and received (`received`), and a duration of at least
/// 100 ms and at most `lifetime`. `context` starts the failure message.
#[track_caller]
pub fn assert_told(
    last: &serde_json::Value,
    client: std::net::SocketAddr,
    server: std::net::SocketAddr,
    (sent, received): (u64, u64),
    lifetime: std::time::Duration,
    context: &str,
) {
    use serde_json::json;
    assert_eq!(
        (&last["client"], &last["local"], &last["requests"]),
        (
            &json!(client.to_string()),
            &json!(server.to_string()),
            &json!(2)
        ),
        "{context}: {last}"
    );
    // Every byte of the two requests and the two answers, no more.
    assert_eq!(
        (&last["bytes_in"], &last["bytes_out"]),
        (&json!(sent), &json!(received)),
        "{context}: {last}"
    );
    let duration = std::time::Duration::from_micros(last["duration_us"].as_u64().unwrap());
    assert!(
        duration >= std::time::Duration::from_millis(100) && duration <= lifetime,
        "{context}: open for {duration:?}, within {lifetime:?}: {last}"
    );
}

/// Sends `GET target` with `headers` to hooky instances `a`, `b`, `c` whose `b` has a deadline
/// of 0.3 s, and which make `b` run 1.5 s: asserts that the client gets 504 naming `b` within
/// 1.2 s (a late call does not hold up its client), and that the next request passes all three
/// again. `context` starts the failure messages.
#[track_caller]
pub fn assert_b_late_then_serving(
    served: &Served,
    target: &str,
    headers: &[(&str, &str)],
    context: &str,
) {
    use serde_json::json;
    use std::time::{Duration, Instant};
    let sent = Instant::now();
    let response = get(served, target, headers);
    let took = sent.elapsed();
    assert_eq!(response.status, 504, "{context}: {}", response.text());
    let body = response.json();
    assert_eq!(
        (&body["plugin"], &body["kind"]),
        (&json!("b"), &json!("timeout")),
        "{context}: {body}"
    );
    assert!(
        took < Duration::from_millis(1200),
        "{context}: answered after {took:?}"
    );
    let response = get(served, "/hooky/a/echo", &[]);
    assert_eq!(response.status, 200, "{context}: {}", response.text());
    assert_eq!(response.json()["x-hook-trail"], "a,b,c", "{context}");
}

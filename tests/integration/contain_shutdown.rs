//! Shutdown of `plugin-host serve` with calls in flight: at the end of the grace period every
//! request gets a complete 503 naming its plugin (not a closed connection), whether it waits
//! for an isolated library, a program or the blocking pool; a busy child gets `stop`, then
//! SIGTERM (then SIGKILL) within the stop timeout, and nothing of it is left running; the exit
//! status says what happened.

use crate::util::{
    Served, faulty, line_with, program, running, sample_program, scratch, write_config,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The calls in flight when SIGTERM arrives.
const CLIENTS: usize = 100;
/// The grace period given to `serve`.
const GRACE: Duration = Duration::from_secs(1);
/// How long each call sleeps in the plugin: far past the grace period.
const CALL_MS: u64 = 30_000;
/// `serve`'s exit status when a plugin did not stop cleanly (see the README).
const INCOMPLETE_SHUTDOWN: i32 = 3;
/// `serve`'s exit status when requests were answered 503 at the end of the grace period, and
/// every plugin stopped cleanly.
const REQUESTS_CUT_SHORT: i32 = 4;

/// What one client got: when its read ended, the bytes, and the read error, if any.
struct Got {
    at: Instant,
    raw: Vec<u8>,
    error: Option<String>,
}

/// Sends one slow call (`GET target?ms=CALL_MS`) on a fresh connection, counts it in `sent`,
/// and reads until the server closes the connection (45 s at most).
fn slow_call(addr: SocketAddr, target: &str, sent: &AtomicUsize) -> Got {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let request =
        format!("GET {target}?ms={CALL_MS} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    sent.fetch_add(1, Ordering::Relaxed);
    let mut raw = Vec::new();
    let error = stream.read_to_end(&mut raw).err().map(|e| e.to_string());
    Got {
        at: Instant::now(),
        raw,
        error,
    }
}

/// The server-side connections on `port` whose received bytes were all read by the server:
/// requests that reached the service (from /proc/net/tcp: state 01 is ESTABLISHED).
fn requests_taken(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let unread = fields
                .get(4)
                .and_then(|q| q.split(':').nth(1))
                .and_then(|rx| u64::from_str_radix(rx, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01") && unread == Some(0)
        })
        .count()
}

/// The seconds since midnight (UTC) of a log line's timestamp (`2025-01-31T12:34:56.789012Z`).
fn seconds_of(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap_or("");
    let time = stamp
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    time.split(':')
        .map(|part| part.parse::<f64>().unwrap())
        .fold(0.0, |total, part| total * 60.0 + part)
}

/// The seconds from log line `from` to log line `to` of `log`.
fn between(log: &str, from: usize, to: usize) -> f64 {
    let lines: Vec<&str> = log.lines().collect();
    let seconds = seconds_of(lines[to]) - seconds_of(lines[from]);
    // A shutdown that spans midnight.
    if seconds < 0.0 {
        seconds + 86_400.0
    } else {
        seconds
    }
}

/// The processes (not zombies) whose initial environment names `library` as a worker's.
fn workers_of(library: &Path) -> Vec<u32> {
    let needle = format!("PLUGLET_WORKER_LIBRARY={}\0", library.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Unreadable (another user's, or gone): not ours. A zombie's environment is empty.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

/// Checks one client's answer: a complete 503 whose JSON body names the plugin and says that
/// the host is stopping.
fn assert_stopping_answer(got: &Got, plugin: &str) {
    let text = String::from_utf8_lossy(&got.raw);
    let context = format!("client got {text:?} (read error: {:?})", got.error);
    let split = got
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {context}"));
    let head = String::from_utf8_lossy(&got.raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503 "), "{context}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {context}"));
    let body = &got.raw[split + 4..];
    assert_eq!(body.len(), length, "a complete body: {context}");
    let json: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    assert_eq!(json["plugin"], plugin, "{context}");
    assert_eq!(json["kind"], "stopping", "{context}");
    let error = json["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!("plugin `{plugin}`: ")) && error.contains("host is stopping"),
        "{context}"
    );
}

/// What a shutdown with calls in flight gave.
struct Shutdown {
    answers: Vec<Got>,
    signalled: Instant,
    exited: Duration,
    status: std::process::ExitStatus,
    log: String,
}

/// Sends `clients` slow calls to `target` of `served`, waits until the server has read every
/// one, sends SIGTERM, and collects what the clients got and how `serve` ended.
fn shut_down_busy(served: Served, target: &str, clients: usize) -> Shutdown {
    shut_down_calling(served, &vec![target; clients])
}

/// Sends one slow call to each of `targets` of `served`, waits until the server has read every
/// one, sends SIGTERM, and collects what the clients got and how `serve` ended.
fn shut_down_calling(served: Served, targets: &[&str]) -> Shutdown {
    let addr = served.addr;
    let clients = targets.len();
    let sent = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let calls: Vec<_> = targets
            .iter()
            .map(|target| {
                let sent = &sent;
                std::thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn_scoped(scope, move || slow_call(addr, target, sent))
                    .unwrap()
            })
            .collect();
        // Every request read by the server (its call on its way) before the signal.
        let deadline = Instant::now() + Duration::from_secs(20);
        while sent.load(Ordering::Relaxed) < clients || requests_taken(addr.port()) < clients {
            assert!(
                Instant::now() < deadline,
                "{} requests sent, {} taken by the server",
                sent.load(Ordering::Relaxed),
                requests_taken(addr.port())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let signalled = Instant::now();
        served.terminate();
        let (status, log) = served.wait();
        let exited = signalled.elapsed();
        let answers = calls.into_iter().map(|c| c.join().unwrap()).collect();
        Shutdown {
            answers,
            signalled,
            exited,
            status,
            log,
        }
    })
}

impl Shutdown {
    /// Every client got a complete 503 naming `plugin`, at the end of the grace period.
    fn assert_all_answered(&self, plugin: &str) {
        let log = &self.log;
        let closed = self.answers.iter().filter(|g| g.raw.is_empty()).count();
        assert_eq!(
            closed,
            0,
            "{closed} of {} clients got a closed connection and no response\n{log}",
            self.answers.len()
        );
        for got in &self.answers {
            assert_stopping_answer(got, plugin);
            let after = got.at.duration_since(self.signalled);
            assert!(
                after < GRACE + Duration::from_secs(4),
                "answered {after:?} after SIGTERM\n{log}"
            );
        }
    }
}

/// Starts `serve` with `config` and the test's grace period.
fn serve(config: &Path) -> Served {
    let grace = GRACE.as_secs_f64().to_string();
    Served::start(
        &[
            "--grace".as_ref(),
            grace.as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        None,
    )
}

/// The pid of the child process of `plugin`, from `/healthz`.
fn pid_of(served: &Served, plugin: &str) -> u32 {
    let health: serde_json::Value =
        serde_json::from_slice(&crate::util::http(served.addr, "GET", "/healthz", b"").body)
            .unwrap();
    let pid = health["processes"][plugin]["pid"].as_u64();
    u32::try_from(pid.unwrap_or_else(|| panic!("no pid: {health}"))).unwrap()
}

/// Waits at most 5 s for `pid` and every worker of `library` (if given) to be gone.
fn assert_gone(pid: u32, library: Option<&Path>, log: &str) {
    let workers = || library.map_or_else(Vec::new, workers_of);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(pid) || !workers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "pid {pid} running: {}, workers of the library: {:?}\n{log}",
            running(pid),
            workers()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves the faulty library isolated, as `slow`, shuts `serve` down with `CLIENTS` slow calls
/// to it in flight, and checks what every shutdown of a busy isolated library guarantees.
/// Returns the log.
fn shut_down_busy_isolated(test: &str) -> String {
    let dir = scratch(test);
    // A copy of its own, so that its worker is told apart from other tests' workers.
    let library = dir.join("libslow.so");
    std::fs::copy(faulty(), &library).unwrap();
    let config = write_config(&dir, &[(&library, "slow", "isolation = \"process\"")]);
    let served = serve(&config);
    let pid = pid_of(&served, "slow");
    // The worker, or (in a PID namespace of its own) the worker and the child the host started.
    assert!(
        !workers_of(&library).is_empty(),
        "no worker of {}",
        library.display()
    );
    let stop_timeout = plugin_host::process::ProcessOptions::default().stop_timeout;
    let shutdown = shut_down_busy(served, "/faulty/sleep", CLIENTS);
    shutdown.assert_all_answered("slow");
    let log = shutdown.log;
    // The busy child gets `stop`, and ends within its stop timeout and SIGTERM's grace.
    let stop = line_with(&log, &["plugin=\"slow\"", "sending `stop`"]);
    let ended = line_with(&log, &["plugin=\"slow\"", "the plugin process ended"]);
    assert!(stop < ended, "order:\n{log}");
    let to_end = between(&log, stop, ended);
    let limit = stop_timeout + plugin_host::limits::SIGTERM_GRACE;
    assert!(
        to_end <= limit.as_secs_f64() + SLACK,
        "ended {to_end} s after stop:\n{log}"
    );
    // The exit status says that a plugin did not stop cleanly, and the log says which.
    assert_eq!(shutdown.status.code(), Some(INCOMPLETE_SHUTDOWN), "{log}");
    line_with(&log, &["`slow`", "stop failed"]);
    assert!(
        shutdown.exited < GRACE + limit + Duration::from_secs(4),
        "exited {:?} after SIGTERM:\n{log}",
        shutdown.exited
    );
    // Nothing of the plugin is left running.
    assert_gone(pid, Some(&library), &log);
    log
}

/// Seconds of slack between log lines, for a loaded machine.
const SLACK: f64 = 1.5;

#[test]
fn at_grace_end_busy_isolated_calls_answer_503_and_the_child_is_stopped() {
    // The calls run on the worker's pool: it refuses `stop` under them (a plugin is never
    // stopped under a running call), then ends once the host closes its socket.
    let log = shut_down_busy_isolated("contain-shutdown-pool-worker");
    line_with(
        &log,
        &[
            "`slow`",
            "stop failed",
            "a call to GET /faulty/sleep is still running",
        ],
    );
}

/// A configuration of `misbehave.py` programs in `deaf` mode, one per name, each serving
/// `GET /NAME`: after its first call it reads nothing more, neither `stop` nor the end of its
/// socket, and cannot exit by itself.
fn deaf_programs(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let program = program("misbehave.py");
    let config = dir.join("plugins.toml");
    let text: String = names
        .iter()
        .map(|name| {
            format!(
                "[[plugin]]\nexec = {:?}\nargs = [\"deaf\", \"/{name}\"]\nname = \"{name}\"\n",
                program.display().to_string()
            )
        })
        .collect();
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn at_grace_end_a_child_that_cannot_answer_stop_gets_sigterm() {
    let dir = scratch("contain-shutdown-deaf");
    let served = serve(&deaf_programs(&dir, &["deaf"]));
    let pid = pid_of(&served, "deaf");
    let shutdown = shut_down_busy(served, "/deaf", CLIENTS);
    shutdown.assert_all_answered("deaf");
    let log = &shutdown.log;
    let stop = line_with(log, &["plugin=\"deaf\"", "sending `stop`"]);
    let term = line_with(log, &["plugin=\"deaf\"", "sending SIGTERM"]);
    let ended = line_with(log, &["plugin=\"deaf\"", "the plugin process ended"]);
    assert!(stop < term && term < ended, "order:\n{log}");
    let stop_timeout = plugin_host::process::ProcessOptions::default().stop_timeout;
    let to_term = between(log, stop, term);
    assert!(
        to_term >= stop_timeout.as_secs_f64() - 0.1
            && to_term <= stop_timeout.as_secs_f64() + SLACK,
        "SIGTERM {to_term} s after stop:\n{log}"
    );
    line_with(log, &["`deaf`", "stop failed", "it was ended with SIGTERM"]);
    assert_eq!(shutdown.status.code(), Some(INCOMPLETE_SHUTDOWN), "{log}");
    assert_gone(pid, None, log);
}

#[test]
fn busy_children_are_stopped_together_not_one_after_another() {
    // Three programs that cannot answer `stop`: each needs its whole stop timeout and SIGTERM.
    // Stopped one after another, that is three stop timeouts; together, one.
    const PLUGINS: [&str; 3] = ["stuck1", "stuck2", "stuck3"];
    const CALLS: usize = 3;
    let dir = scratch("contain-shutdown-parallel");
    let served = serve(&deaf_programs(&dir, &PLUGINS));
    let pids: Vec<u32> = PLUGINS.iter().map(|name| pid_of(&served, name)).collect();
    let targets: Vec<String> = PLUGINS
        .iter()
        .flat_map(|name| std::iter::repeat_n(format!("/{name}"), CALLS))
        .collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let shutdown = shut_down_calling(served, &targets);
    let log = &shutdown.log;
    for got in &shutdown.answers {
        let text = String::from_utf8_lossy(&got.raw);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}\n{log}");
    }
    let stop_timeout = plugin_host::process::ProcessOptions::default().stop_timeout;
    let one_stop = stop_timeout + plugin_host::limits::SIGTERM_GRACE;
    let bound =
        GRACE + plugin_host::limits::SHUTDOWN_WRITE_TIME + one_stop + Duration::from_secs(3);
    assert!(
        shutdown.exited < bound,
        "exited {:?} after SIGTERM, over {bound:?}:\n{log}",
        shutdown.exited
    );
    // Each child got `stop` at about the same time, and SIGTERM one stop timeout later.
    for name in PLUGINS {
        let plugin = format!("plugin=\"{name}\"");
        let stop = line_with(log, &[&plugin, "sending `stop`"]);
        let term = line_with(log, &[&plugin, "sending SIGTERM"]);
        let ended = line_with(log, &[&plugin, "the plugin process ended"]);
        assert!(stop < term && term < ended, "order:\n{log}");
        assert!(
            between(log, stop, ended) <= one_stop.as_secs_f64() + SLACK,
            "{name} ended {} s after stop:\n{log}",
            between(log, stop, ended)
        );
    }
    assert_eq!(shutdown.status.code(), Some(INCOMPLETE_SHUTDOWN), "{log}");
    for pid in pids {
        assert_gone(pid, None, log);
    }
}

#[test]
fn at_grace_end_busy_program_calls_answer_503_and_the_status_says_requests_were_cut() {
    let dir = scratch("contain-shutdown-program");
    let program = sample_program("quote.py");
    let config = dir.join("plugins.toml");
    let text = format!(
        "[[plugin]]\nexec = {:?}\nname = \"quotes\"\n",
        program.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let served = serve(&config);
    let pid = pid_of(&served, "quotes");
    let shutdown = shut_down_busy(served, "/quote/sleep", 4);
    shutdown.assert_all_answered("quotes");
    let log = &shutdown.log;
    // The program answers `stop` and exits, calls or not: every plugin stopped cleanly.
    let stop = line_with(log, &["plugin=\"quotes\"", "sending `stop`"]);
    let ended = line_with(log, &["plugin=\"quotes\"", "the plugin process ended"]);
    assert!(stop < ended, "order:\n{log}");
    assert_eq!(shutdown.status.code(), Some(REQUESTS_CUT_SHORT), "{log}");
    assert_gone(pid, None, log);
}

#[test]
fn at_grace_end_calls_on_the_blocking_pool_answer_503_and_their_plugin_is_left_started() {
    let dir = scratch("contain-shutdown-pool");
    let config = write_config(&dir, &[(faulty(), "sleepy", "")]);
    let served = serve(&config);
    // A new route runs on the blocking pool: its calls cannot be interrupted, their clients
    // get 503 all the same.
    let shutdown = shut_down_busy(served, "/faulty/sleep", 4);
    shutdown.assert_all_answered("sleepy");
    let log = &shutdown.log;
    assert_eq!(shutdown.status.code(), Some(INCOMPLETE_SHUTDOWN), "{log}");
    line_with(
        log,
        &["`sleepy`", "not stopped: a call to GET /faulty/sleep"],
    );
}

#[test]
fn a_service_mounted_elsewhere_answers_its_waiting_requests_503_when_its_grace_ends() {
    let registry = plugin_host::config::deploy(
        &[crate::util::entry(
            faulty(),
            "sleepy",
            serde_json::json!({}),
        )],
        false,
    )
    .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let service = plugin_host::server::PluginService::new(registry.router().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (response, took) = runtime.block_on(async {
        let request = http::Request::get("/faulty/sleep?ms=5000")
            .body(String::new())
            .unwrap();
        let waiting = tokio::spawn({
            let service = service.clone();
            async move { service.handle(request).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = Instant::now();
        service.end_grace();
        let response = waiting.await.unwrap();
        (response, ended.elapsed())
    });
    assert!(
        took < Duration::from_secs(2),
        "answered {took:?} after end_grace"
    );
    assert_eq!(response.status(), 503);
    let body = response.into_body();
    let body = runtime
        .block_on(http_body_util::BodyExt::collect(body))
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&json["plugin"], &json["kind"]),
        (&"sleepy".into(), &"stopping".into())
    );
    // Later requests that would wait answer 503 at once too; the call still sleeping on the
    // blocking pool is left to run (it cannot be cancelled).
    let again = runtime.block_on(
        service.handle(
            http::Request::get("/faulty/sleep?ms=10")
                .body(String::new())
                .unwrap(),
        ),
    );
    assert_eq!(again.status(), 503);
    runtime.shutdown_background();
}

/// A request body whose one chunk arrives when the test says so.
struct LateBody(Option<tokio::sync::oneshot::Receiver<&'static str>>);

impl http_body::Body for LateBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let Some(receiver) = &mut self.0 else {
            return std::task::Poll::Ready(None);
        };
        let chunk = std::task::ready!(std::pin::Pin::new(receiver).poll(cx)).unwrap_or("");
        self.0 = None;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk.into()))))
    }
}

#[test]
fn after_the_grace_period_no_new_call_reaches_a_plugin() {
    crate::util::capture_logs();
    let (local, remote) = (
        crate::util::unique("late-local"),
        crate::util::unique("late-remote"),
    );
    let entries = [
        crate::util::entry(faulty(), &local, serde_json::json!({})),
        crate::util::isolated(crate::util::entry(
            faulty(),
            &remote,
            serde_json::json!({ "path": "/remote" }),
        )),
    ];
    let registry = plugin_host::config::deploy(&entries, false).unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let service = || plugin_host::server::PluginService::new(registry.router().unwrap());
    // One thread: nothing runs between the end of the grace period and the body's arrival.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A call on the blocking pool and a call to a child process, each waiting for its body
    // when the grace period ends, and the body arriving right then.
    for target in ["/faulty/sleep?ms=1", "/remote/sleep?ms=2"] {
        let service = service();
        let (send, receive) = tokio::sync::oneshot::channel();
        let request = http::Request::get(target)
            .body(LateBody(Some(receive)))
            .unwrap();
        let response = runtime.block_on(async {
            let waiting = tokio::spawn({
                let service = service.clone();
                async move { service.handle(request).await }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!waiting.is_finished());
            service.end_grace();
            send.send("a body").unwrap();
            waiting.await.unwrap()
        });
        assert_eq!(response.status(), 503, "{target}");
    }
    // Later requests, with a body or none.
    let service = service();
    service.end_grace();
    for (target, body) in [("/faulty/sleep?ms=3", ""), ("/remote/sleep?ms=4", "x")] {
        let request = http::Request::get(target).body(body.to_owned()).unwrap();
        let response = runtime.block_on(service.handle(request));
        assert_eq!(response.status(), 503, "{target}");
    }
    // The plugin logs `slept N ms` at the end of every call it gets: none may come.
    std::thread::sleep(Duration::from_millis(700));
    let called: Vec<_> = crate::util::logs_of(&[&local, &remote])
        .into_iter()
        .filter(|l| l.message.starts_with("slept"))
        .collect();
    assert!(
        called.is_empty(),
        "calls reached the plugins after the grace period: {called:?}"
    );
    drop(runtime);
    drop(service);
    registry
        .close_and_stop_all()
        .unwrap_or_else(|e| panic!("{e}"));
}

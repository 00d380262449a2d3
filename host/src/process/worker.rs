//! The worker: the child side of an isolated plugin library. It loads the library with every
//! check an in-process host applies, and serves it over the protocol; handler calls run
//! concurrently on a bounded pool of threads ([`WORKER_THREADS`](crate::limits::WORKER_THREADS),
//! as many as one plugin may hold in the host), except the calls of routes with a record of fast
//! calls, which run on the thread that reads the socket. Any fatal signal it gets, even one sent
//! with `kill`, ends it with a crash line naming its plugin (see `crate::ffi::crash`).

use super::wire::{self, CHILD_FD, FD_VARIABLE, Frame, Header, Outbox, ReadError, RouteSpec};
use crate::plugin::{Factory, Instance, LoadOptions};
use crate::{Lookup, Registry, Request, Router};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

/// The library a worker loads (set by the host when it starts one).
pub(crate) const LIBRARY_VARIABLE: &str = "PLUGLET_WORKER_LIBRARY";
/// The SHA-256 the library must have, if pinned.
pub(crate) const SHA256_VARIABLE: &str = "PLUGLET_WORKER_SHA256";
/// Set to `1` when insecure permissions are allowed.
pub(crate) const INSECURE_VARIABLE: &str = "PLUGLET_WORKER_INSECURE";

/// Turns this process into a worker when a host started it as one, and then never returns (it
/// exits when the host stops it, or goes away). Otherwise it returns at once.
///
/// Call it first thing in `main` of any executable that runs isolated plugins
/// ([`ProcessOptions::worker`](super::ProcessOptions::worker), or the application itself,
/// which is the default worker):
///
/// ```no_run
/// plugin_host::process::worker_main();
/// // ... the application ...
/// ```
pub fn worker_main() {
    let Some(library) = std::env::var_os(LIBRARY_VARIABLE) else {
        return;
    };
    if std::env::var_os(FD_VARIABLE).is_none() {
        eprintln!(
            "this process was asked to be a plugin worker, but not by plugin-host: it is started \
             by plugin-host serve, not by hand"
        );
        std::process::exit(2);
    }
    crate::install_crash_report();
    let options = LoadOptions {
        sha256: std::env::var(SHA256_VARIABLE).ok(),
        allow_insecure_permissions: std::env::var_os(INSECURE_VARIABLE).is_some(),
    };
    // What the plugin starts must neither become a worker nor inherit the socket.
    for variable in [
        LIBRARY_VARIABLE,
        SHA256_VARIABLE,
        INSECURE_VARIABLE,
        FD_VARIABLE,
    ] {
        // SAFETY: `worker_main` runs first thing in `main` (its documented contract), before
        // the process has other threads that could read the environment meanwhile.
        unsafe { std::env::remove_var(variable) };
    }
    // SAFETY: `fcntl` on a descriptor number touches no memory; a descriptor that is not open
    // fails with EBADF, which is checked.
    if unsafe { libc::fcntl(CHILD_FD, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        eprintln!(
            "plugin worker: no socket on descriptor {CHILD_FD}: it is started by plugin-host serve"
        );
        std::process::exit(2);
    }
    // SAFETY: the host started this process with its end of the socket pair as `CHILD_FD`
    // (and said so in `FD_VARIABLE`), open as just checked; nothing else in this process owns
    // that descriptor, which is now closed on exec.
    let socket = unsafe { UnixStream::from_raw_fd(CHILD_FD) };
    let code = match serve(socket, std::path::Path::new(&library), &options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("plugin worker: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The socket's outbox, shared by the threads that answer.
#[derive(Clone)]
struct Writer(Arc<Outbox>);

impl Writer {
    /// Sends a frame, at once when `now` and the socket takes it (see [`Outbox::send`]).
    fn send_now(&self, header: &Header, body: &[u8], now: bool) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(128 + body.len());
        wire::encode(header, body, &mut frame);
        self.0.send(frame, now)
    }

    /// Sends a frame at once if the socket takes it.
    fn send(&self, header: &Header, body: &[u8]) -> std::io::Result<()> {
        self.send_now(header, body, true)
    }

    /// Waits, at most a second, until everything sent before is written: before the process
    /// exits (a refusal must reach the host).
    fn flush(&self) {
        self.0.flush();
    }
}

fn serve(
    socket: UnixStream,
    library: &std::path::Path,
    options: &LoadOptions,
) -> Result<(), String> {
    // Calls that arrive together are read with one system call.
    let reader = socket.try_clone().map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
    // A failed write means the host is gone: the reader sees the end of the socket too.
    // Answers are never refused: the host reads them as they come.
    let writer = Writer(Outbox::start(socket, usize::MAX, |_| {}).map_err(|e| e.to_string())?);
    // The worker trusts its host: any frame it sends (a request body up to the server's own
    // limit, whatever that is) is read.
    let limit = u64::from(u32::MAX);
    let (instance_name, config) = match wire::read_frame(&mut reader, limit) {
        Ok(Frame {
            header: Header::Hello {
                instance, config, ..
            },
            ..
        }) => (instance, config),
        Ok(frame) => return Err(format!("expected hello, got {:?}", frame.header)),
        Err(e) => return Err(format!("no hello: {e}")),
    };
    // The plugin's log lines travel to the host as `log` frames.
    forward_logs(writer.clone());
    let refuse = |error: String| {
        let _ = writer.send(
            &Header::Refuse {
                error: error.clone(),
            },
            b"",
        );
        writer.flush();
        error
    };
    let factory = Factory::load_with(library, options).map_err(|e| refuse(e.to_string()))?;
    let name = if instance_name.is_empty() {
        factory.name().to_owned()
    } else {
        instance_name
    };
    // From now on any fatal signal, even one sent with `kill`, names this plugin.
    crate::ffi::describe_worker(&name, library);
    let instance = factory
        .create(&name, &config)
        .map_err(|e| refuse(e.to_string()))?;
    // Its lines are limited by the host, which reads them as `log` frames.
    instance.set_log_limit(crate::LogLimit::UNLIMITED);
    writer
        .send(
            &Header::Welcome {
                version: wire::VERSIONS[0],
                name: factory.name().to_owned(),
                plugin_version: factory.version().to_owned(),
                routes: Vec::new(),
            },
            b"",
        )
        .map_err(|e| e.to_string())?;
    let calls = Pool::new(crate::limits::WORKER_THREADS);
    let mut serving = Serving {
        instance,
        registry: Registry::new(),
        router: None,
    };
    loop {
        let frame = match wire::read_frame(&mut reader, limit) {
            Ok(frame) => frame,
            // The host closed the connection, or went away: the end.
            Err(ReadError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        match frame.header {
            Header::Ping { id } => writer
                .send(&Header::Pong { id }, b"")
                .map_err(|e| e.to_string())?,
            Header::Start { id } => {
                let answer = serving.start();
                writer
                    .send(&result(id, answer), b"")
                    .map_err(|e| e.to_string())?;
            }
            Header::Stop { id } => {
                let answer = serving.stop().map(|()| Vec::new());
                writer
                    .send(&result(id, answer), b"")
                    .map_err(|e| e.to_string())?;
            }
            Header::Call {
                id,
                method,
                path,
                query,
                headers,
                ..
            } => {
                let Some(router) = serving.router.clone() else {
                    let error = Some("called before start".to_owned());
                    let answer = response(id, error, false);
                    writer.send(&answer, b"").map_err(|e| e.to_string())?;
                    continue;
                };
                let writer = writer.clone();
                let body = frame.body;
                let inline = runs_inline(&router, &method, &path);
                // The answer of the last call of a burst (nothing more read ahead), or of a
                // call on the pool, goes out at once; the others of a burst go out together.
                let now = !inline || reader.buffer().is_empty();
                let call = move || {
                    let mut request = Request::new(&method, &path).body(&body);
                    request.query = &query;
                    for (name, value) in &headers {
                        request = request.header(name, value.as_bytes());
                    }
                    let (header, body) = answer(&router, id, &request);
                    // A failed write means the host is gone: the reader sees it too.
                    let _ = writer.send_now(&header, &body, now);
                };
                // A route with a record of fast calls runs right here, so that calls that
                // arrive together are answered together; any other goes to the pool.
                if inline {
                    call();
                } else {
                    calls.run(Box::new(call));
                }
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
}

/// A call waiting for a thread of the pool.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that run calls: at most `max`, started as calls need them and kept; calls that
/// find them all busy wait their turn, in order. The queue is bounded by what the host sends,
/// and the host bounds what it queues towards a child (`ProcessOptions::queue_limit`).
struct Pool {
    shared: Arc<PoolShared>,
    max: usize,
}

struct PoolShared {
    state: parking_lot::Mutex<PoolState>,
    ready: parking_lot::Condvar,
}

struct PoolState {
    jobs: std::collections::VecDeque<Job>,
    /// Threads started (and not failed to start).
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
}

impl Pool {
    fn new(max: usize) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                state: parking_lot::Mutex::new(PoolState {
                    jobs: std::collections::VecDeque::new(),
                    threads: 0,
                    idle: 0,
                }),
                ready: parking_lot::Condvar::new(),
            }),
            max: max.max(1),
        }
    }

    /// Runs `job` on a thread of the pool: an idle one, a new one while there are fewer than
    /// `max`, or the first to finish its call.
    fn run(&self, job: Job) {
        let mut state = self.shared.state.lock();
        state.jobs.push_back(job);
        // Jobs not yet taken beyond the idle threads that will take them: one more thread.
        if state.jobs.len() <= state.idle || state.threads >= self.max {
            drop(state);
            self.shared.ready.notify_one();
            return;
        }
        state.threads += 1;
        drop(state);
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("plugin-call".into())
            .spawn(move || shared.serve());
        if let Err(e) = started {
            let mut state = self.shared.state.lock();
            state.threads -= 1;
            tracing::warn!("plugin worker: cannot start a thread for calls: {e}");
            // With no thread at all, the call runs here rather than never.
            if state.threads == 0
                && let Some(job) = state.jobs.pop_front()
            {
                drop(state);
                job();
            }
        }
    }
}

impl PoolShared {
    /// A thread of the pool: runs jobs as they come, for as long as the worker lives.
    fn serve(&self) {
        loop {
            let job = {
                let mut state = self.state.lock();
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        break job;
                    }
                    state.idle += 1;
                    self.ready.wait(&mut state);
                    state.idle -= 1;
                }
            };
            // A panic of the worker's own code loses this call's answer (the host's deadline
            // answers it), not the thread; the panic hook has reported it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

/// Calls `request`'s route and records how long it took for the route's pacing (see
/// `crate::pacing`); returns the `response` frame.
fn answer(router: &Router, id: u64, request: &Request<'_>) -> (Header, Vec<u8>) {
    let Lookup::Found(route) = router.lookup(request.method, request.path) else {
        let error = format!("no route for {} {}", request.method, request.path);
        return (response(id, Some(error), false), Vec::new());
    };
    let started = Instant::now();
    let result = route.call(request);
    route
        .pacing()
        .record(started.elapsed() >= crate::limits::DEFAULT_BLOCKING_THRESHOLD);
    match result {
        Ok(answer) => (
            Header::Response {
                id,
                status: answer.status,
                headers: answer
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (n.to_string(), value)
                    })
                    .collect(),
                error: None,
                panicked: false,
            },
            answer.body,
        ),
        Err(error) => {
            let panicked = matches!(error.kind(), crate::ErrorKind::Panicked { .. });
            (response(id, Some(reason(&error)), panicked), Vec::new())
        }
    }
}

/// Whether a call to `method path` runs on the reader's thread: its route has a record of fast
/// calls (`crate::pacing`: a route earns that after 8 fast calls in a row, and loses it when 3 of
/// its last 8 were slow), so that calls that arrive together are answered together, without a
/// hop to another thread each. A call that hangs there stops the reading, and the host's
/// liveness check then restarts the worker; every other call runs on the pool.
fn runs_inline(router: &Router, method: &str, path: &str) -> bool {
    matches!(router.lookup(method, path), Lookup::Found(route) if route.pacing().inline())
}

/// What the worker serves once started.
struct Serving {
    instance: Instance,
    registry: Registry,
    router: Option<Arc<Router>>,
}

impl Serving {
    fn start(&mut self) -> Result<Vec<RouteSpec>, String> {
        self.registry
            .register(self.instance.clone())
            .map_err(|e| e.to_string())?;
        self.instance.start().map_err(|e| reason(&e))?;
        let router = self.registry.router().map_err(|e| e.to_string())?;
        let routes = router
            .routes()
            .into_iter()
            .map(|r| RouteSpec {
                method: r.method,
                path: r.path,
            })
            .collect();
        self.router = Some(Arc::new(router));
        Ok(routes)
    }

    fn stop(&mut self) -> Result<(), String> {
        // Calls still running keep their router; `close_and_stop` never stops under them.
        self.router = None;
        self.instance.close_and_stop().map_err(|e| reason(&e))
    }
}

/// The plugin's own reason, without the plugin and file the host adds again.
fn reason(error: &crate::Error) -> String {
    match error.kind() {
        crate::ErrorKind::HandlerFailed { reason, .. }
        | crate::ErrorKind::StartFailed { reason }
        | crate::ErrorKind::StopFailed { reason }
        | crate::ErrorKind::RoutesFailed { reason } => reason.clone(),
        crate::ErrorKind::Panicked { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn result(id: u64, answer: Result<Vec<RouteSpec>, String>) -> Header {
    match answer {
        Ok(routes) => Header::Result {
            id,
            ok: true,
            error: None,
            routes: Some(routes),
        },
        Err(error) => Header::Result {
            id,
            ok: false,
            error: Some(error),
            routes: None,
        },
    }
}

fn response(id: u64, error: Option<String>, panicked: bool) -> Header {
    Header::Response {
        id,
        status: 500,
        headers: Vec::new(),
        error,
        panicked,
    }
}

/// Sends the events the plugin logs through its `PluginHost` (target `plugin`) to the host as
/// `log` frames; everything else the worker logs goes to its standard error, which the host
/// copies into its log.
fn forward_logs(writer: Writer) {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(
            Forward(writer).with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target() == "plugin"
            })),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.target() != "plugin"
                })),
        );
    let _ = tracing::subscriber::set_global_default(subscriber);
}

use tracing_subscriber::Layer;

/// A tracing layer that sends each event to the host.
struct Forward(Writer);

impl<S: tracing::Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => plugin_api::abi::PLUGIN_LOG_ERROR,
            tracing::Level::WARN => plugin_api::abi::PLUGIN_LOG_WARN,
            tracing::Level::INFO => plugin_api::abi::PLUGIN_LOG_INFO,
            tracing::Level::DEBUG => plugin_api::abi::PLUGIN_LOG_DEBUG,
            tracing::Level::TRACE => plugin_api::abi::PLUGIN_LOG_TRACE,
        };
        let _ = self.0.send(
            &Header::Log {
                level,
                message: message.0,
            },
            b"",
        );
    }
}

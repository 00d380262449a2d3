//! The worker: the child side of an isolated plugin library. It loads the library with every
//! check an in-process host applies, and serves it over the protocol; handler calls run
//! concurrently on a bounded pool of threads ([`WORKER_THREADS`](crate::limits::WORKER_THREADS),
//! as many as one plugin may hold in the host), with at most
//! [`WORKER_QUEUE`](crate::limits::WORKER_QUEUE) calls waiting for them (more are answered
//! `busy`, and the host answers 503), and calls whose host deadline passed while they waited are
//! dropped; the calls of routes with a record of fast calls run on the thread that reads the
//! socket, which a watchdog relieves of the reading when one turns slow (see [`Reading`]). Hook
//! messages (protocol 1.1) run on the same pool, under the same bounds, through the library's
//! hook functions; it lists the hooks its library has in `welcome`. Any
//! fatal signal it gets, even one sent with `kill`, ends it with a crash line naming its plugin
//! (see `crate::ffi::crash`), written bare for the host to log at ERROR. It says its plugin's
//! name to the host in a first `log` message, as soon as it has loaded the library: the host
//! tags everything it logs, from `create` on, with the plugin's and the instance's names.

#[cfg(target_os = "linux")]
use super::ring;
use super::wire::{
    self, CHILD_FD, Edit, FD_VARIABLE, Frame, Header, HookRequest, HookResult, Outbox, ReadError,
    RouteSpec,
};
use crate::error::{Error, ErrorKind};
use crate::hook::{ConnectVerdict, Connection, ConnectionStats, HeaderEdit, RequestVerdict};
use crate::limits::{WORKER_QUEUE, WORKER_THREADS};
use crate::plugin::{Factory, HookAnswer, HookCall, Instance, Lease, LoadOptions};
use crate::{Lookup, Registry, Request, Response, Router};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The library a worker loads (set by the host when it starts one): the plugin's file, which
/// messages name.
pub(crate) const LIBRARY_VARIABLE: &str = "PLUGLET_WORKER_LIBRARY";
/// Set to `1` when the library's content comes with `hello` (a sealed memory file attached to
/// its first byte, before the shared memory's), rather than from its file.
pub(crate) const CONTENT_VARIABLE: &str = "PLUGLET_WORKER_CONTENT";
/// The SHA-256 the library must have.
pub(crate) const SHA256_VARIABLE: &str = "PLUGLET_WORKER_SHA256";
/// Set to `1` when insecure permissions are allowed.
pub(crate) const INSECURE_VARIABLE: &str = "PLUGLET_WORKER_INSECURE";

/// Turns this process into a worker when a host started it as one, or into the outer process
/// that contains a plugin process on Linux (see the README), and then never returns (it exits
/// when the host stops it, or goes away). Otherwise it returns at once.
///
/// Call it first thing in `main` of any executable that runs plugins in child processes
/// ([`ProcessOptions::worker`](super::ProcessOptions::worker), or the application itself,
/// which is the default worker):
///
/// ```no_run
/// plugin_host::process::worker_main();
/// // ... the application ...
/// ```
pub fn worker_main() {
    // A host asked for the outer process of a child (see `contain.rs`): never comes back.
    super::contain::init_main();
    // Whether the host runs this worker in a user namespace of its own (see `crate::trust`).
    crate::trust::note_user_namespace();
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
    crate::gate::symmetric_in_this_process();
    // Bare: the host logs them, with the time, the level and the plugin's names.
    crate::ffi::bare_crash_lines();
    crate::install_crash_report();
    let attached = std::env::var_os(CONTENT_VARIABLE).is_some();
    let options = LoadOptions {
        sha256: std::env::var(SHA256_VARIABLE).ok(),
        allow_insecure_permissions: std::env::var_os(INSECURE_VARIABLE).is_some(),
    };
    // What the plugin starts must neither become a worker nor inherit the socket.
    for variable in [
        LIBRARY_VARIABLE,
        CONTENT_VARIABLE,
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
    let library = std::path::Path::new(&library);
    let code = match serve(socket, library, attached, &options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("plugin worker: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The socket's outbox, shared by the threads that answer, and the ring of answers when the
/// host's shared memory was taken.
#[derive(Clone)]
struct Writer {
    outbox: Arc<Outbox>,
    #[cfg(target_os = "linux")]
    answers: Option<Arc<parking_lot::Mutex<ring::Producer>>>,
}

impl Writer {
    /// Sends a frame, at once when `now` and the socket takes it (see [`Outbox::send`]). An
    /// answer (`response`, `hook_result`) that fits a slot of the ring, while the ring has one
    /// free, goes there instead.
    fn send_now(&self, header: &Header, body: &[u8], now: bool) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(128 + body.len());
        wire::encode(header, &[body], &mut frame);
        #[cfg(target_os = "linux")]
        if let Some(answers) = &self.answers
            && matches!(header, Header::Response { .. } | Header::HookResult(_))
            && answers.lock().push(&frame) == Ok(true)
        {
            return Ok(());
        }
        self.outbox.send(frame, now)
    }

    /// Sends a frame at once if the socket takes it.
    fn send(&self, header: &Header, body: &[u8]) -> std::io::Result<()> {
        self.send_now(header, body, true)
    }

    /// Waits, at most a second, until everything sent before is written: before the process
    /// exits (a refusal must reach the host).
    fn flush(&self) {
        self.outbox.flush();
    }
}

/// Serves the plugin of `library`, its file; its content comes with `hello` if `attached`.
fn serve(
    socket: UnixStream,
    library: &std::path::Path,
    attached: bool,
    options: &LoadOptions,
) -> Result<(), String> {
    // The library's content, when the host hands it, and the shared memory it offers come with
    // `hello`'s first byte, in this order.
    #[cfg(target_os = "linux")]
    let (content, memory) = {
        let mut fds = ring::peek_fds(&socket).unwrap_or_default().into_iter();
        let content = if attached { fds.next() } else { None };
        (content, fds.next())
    };
    #[cfg(not(target_os = "linux"))]
    let content: Option<std::os::fd::OwnedFd> = {
        let _ = attached;
        None
    };
    // Calls that arrive together are read with one system call.
    let reader = socket.try_clone().map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
    // A failed write means the host is gone: the reader sees the end of the socket too.
    // Answers are never refused: the host reads them as they come.
    let outbox = Outbox::start(socket, usize::MAX, |_| {}).map_err(|e| e.to_string())?;
    // The worker trusts its host: any frame it sends (a request body up to the server's own
    // limit, whatever that is) is read.
    let limit = u64::from(u32::MAX);
    let (instance_name, config, offer) = match wire::read_frame(&mut reader, limit) {
        Ok(Frame {
            header:
                Header::Hello {
                    instance,
                    config,
                    ring,
                    ..
                },
            ..
        }) => (instance, config, ring),
        Ok(frame) => return Err(format!("expected hello, got {:?}", frame.header)),
        Err(e) => return Err(format!("no hello: {e}")),
    };
    // Taken when it is the memory this worker knows how to use.
    #[cfg(target_os = "linux")]
    let memory = memory
        .filter(|_| offer == Some(ring::offer()))
        .and_then(|fd| ring::Memory::map(fd).ok().map(Arc::new));
    #[cfg(not(target_os = "linux"))]
    let _ = offer;
    let writer = Writer {
        outbox,
        #[cfg(target_os = "linux")]
        answers: memory.as_ref().map(|memory| {
            let producer = ring::Producer::new(memory.clone(), ring::Direction::ToHost);
            Arc::new(parking_lot::Mutex::new(producer))
        }),
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
    let factory = match (attached, content) {
        (false, _) => Factory::load_with(library, options),
        (true, Some(content)) => read_content(content)
            .map_err(|source| Error::new(ErrorKind::Unreadable { source }).with_file(Some(library)))
            .and_then(|bytes| Factory::load_content(library, bytes, options)),
        (true, None) => {
            return Err(refuse(format!(
                "{}: the host did not hand over the library's content with hello",
                library.display()
            )));
        }
    }
    .map_err(|e| refuse(e.to_string()))?;
    let name = if instance_name.is_empty() {
        factory.name().to_owned()
    } else {
        instance_name
    };
    // From now on any fatal signal, even one sent with `kill`, names this plugin.
    crate::ffi::describe_worker(&name, library);
    // The host tags this process's lines with the plugin's name from this message on: those
    // `create` logs, and a crash line, come before `welcome`. Its output lines, which the host
    // reads from pipes apart from this socket, wait there until it has read this message.
    let loaded = Header::Log {
        level: plugin_api::abi::PLUGIN_LOG_DEBUG,
        message: format!("worker: loaded {}", library.display()),
        plugin: Some(factory.name().to_owned()),
    };
    writer.send(&loaded, b"").map_err(|e| e.to_string())?;
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
                hooks: instance
                    .hooks()
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                #[cfg(target_os = "linux")]
                ring: memory.is_some(),
                #[cfg(not(target_os = "linux"))]
                ring: false,
            },
            b"",
        )
        .map_err(|e| e.to_string())?;
    #[cfg(target_os = "linux")]
    let reader = match memory {
        Some(memory) => Source::Ring(RingSource::start(memory, reader, limit)?),
        None => Source::Socket(reader),
    };
    #[cfg(not(target_os = "linux"))]
    let reader = Source::Socket(reader);
    let reading = Arc::new(Reading {
        state: parking_lot::Mutex::new(ReadState {
            reader,
            serving: Serving {
                instance,
                registry: Registry::new(),
                router: None,
                hooks: None,
            },
        }),
        writer,
        calls: Pool::new(WORKER_THREADS, WORKER_QUEUE),
        limit,
        relay: Relay::default(),
    });
    // The watchdog begins on a thread of its own; this one reads. Whichever reads when the
    // connection ends ends the worker.
    let watchdog = reading.clone();
    let started = std::thread::Builder::new()
        .name("plugin-watchdog".into())
        .spawn(move || end(watchdog.take_turns(false)));
    if let Err(e) = started {
        tracing::warn!(
            "plugin worker: cannot start its watchdog thread ({e}): no call runs inline"
        );
    }
    reading.take_turns(true)
}

/// Ends the worker when the connection ended on a thread other than the first (which returns
/// to [`worker_main`] instead), with the same status.
/// The bytes of the library's content the host handed over (a sealed memory file), read from
/// its start: the host's descriptor and this one share an offset, which writing left at the end.
fn read_content(content: std::os::fd::OwnedFd) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(content);
    let size = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    let mut bytes = vec![0; size];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

fn end(result: Result<(), String>) -> ! {
    if let Err(e) = &result {
        eprintln!("plugin worker: {e}");
    }
    std::process::exit(i32::from(result.is_err()))
}

/// How often the watchdog looks at the inline call running, if any: one that it sees at two
/// looks in a row has run for one to two ticks, and the watchdog takes the reading over.
const TICK: Duration = Duration::from_millis(10);

/// Ticks without an inline call after which the watchdog sleeps until the next one: a second.
const IDLE_TICKS: u32 = 100;

/// What the threads that read the socket share. One thread reads at a time, and runs the
/// calls of routes with a record of fast calls (`crate::pacing`) itself, so that calls that
/// arrive together are answered together without a hop to another thread each; the others go
/// to the pool. A call that turns slow there must not stop the reading (the host's liveness
/// check would fail, and every call in flight with it), so another thread, the watchdog, takes
/// the reading over when an inline call runs for more than a tick or two, in the manner of Go's
/// `sysmon`; the thread of that call becomes the watchdog once it returns. Until then no thread
/// watches, and no call runs inline: at most one thread is ever stuck in an inline call. An
/// inline call costs an atomic add and a compare-and-swap, no system call.
struct Reading {
    /// The socket's reader and what the worker serves: held by the thread that reads, and
    /// released while it runs a call inline.
    state: parking_lot::Mutex<ReadState>,
    writer: Writer,
    calls: Pool,
    /// The largest frame read.
    limit: u64,
    relay: Relay,
}

struct ReadState {
    reader: Source,
    serving: Serving,
}

/// Where the frames from the host come from.
enum Source {
    /// The socket alone.
    Socket(std::io::BufReader<UnixStream>),
    /// The ring of calls, and the socket for the rest.
    #[cfg(target_os = "linux")]
    Ring(RingSource),
}

impl Source {
    /// The next frame, waiting for it.
    fn next(&mut self, limit: u64) -> Result<Frame, ReadError> {
        match self {
            Source::Socket(reader) => wire::read_frame(reader, limit),
            #[cfg(target_os = "linux")]
            Source::Ring(ring) => ring.next(),
        }
    }

    /// Whether more of the host's frames are read already (then an answer may wait to go out
    /// with the next ones).
    fn read_ahead(&self) -> bool {
        match self {
            Source::Socket(reader) => !reader.buffer().is_empty(),
            #[cfg(target_os = "linux")]
            Source::Ring(_) => false,
        }
    }
}

/// The ring of calls, read by the thread that reads, and the frames of the socket, read by a
/// thread of their own that rings the ring's bell for each.
#[cfg(target_os = "linux")]
struct RingSource {
    calls: ring::Consumer,
    socket: Arc<Inbox>,
    bytes: Vec<u8>,
}

/// The frames read from the socket, waiting for the thread that reads.
#[cfg(target_os = "linux")]
#[derive(Default)]
struct Inbox {
    frames: parking_lot::Mutex<std::collections::VecDeque<Result<Frame, ReadError>>>,
    count: std::sync::atomic::AtomicUsize,
}

#[cfg(target_os = "linux")]
impl RingSource {
    /// Starts the thread that reads the socket (until its end, or an error, which it passes
    /// on last).
    fn start(
        memory: Arc<ring::Memory>,
        mut reader: std::io::BufReader<UnixStream>,
        limit: u64,
    ) -> Result<RingSource, String> {
        let calls = ring::Consumer::new(memory, ring::Direction::ToChild);
        let socket = Arc::new(Inbox::default());
        let inbox = socket.clone();
        let bell = calls.bell();
        std::thread::Builder::new()
            .name("plugin-socket".into())
            .spawn(move || {
                loop {
                    let frame = wire::read_frame(&mut reader, limit);
                    let end = frame.is_err();
                    inbox.frames.lock().push_back(frame);
                    inbox.count.fetch_add(1, Ordering::SeqCst);
                    bell.ring();
                    if end {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(RingSource {
            calls,
            socket,
            bytes: Vec::with_capacity(ring::SLOT_SIZE),
        })
    }

    /// The next frame of either, waiting for one: spinning a little first (the host's next
    /// call often follows an answer closely), then sleeping on the ring's futex.
    fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if self.socket.count.load(Ordering::SeqCst) > 0 {
                self.socket.count.fetch_sub(1, Ordering::SeqCst);
                if let Some(frame) = self.socket.frames.lock().pop_front() {
                    return frame;
                }
            }
            match self.calls.pop(&mut self.bytes) {
                Ok(true) => {
                    let mut bytes = self.bytes.as_slice();
                    return wire::read_frame(&mut bytes, ring::SLOT_FRAME as u64);
                }
                Ok(false) => {}
                Err(ring::Violation(what)) => return Err(ReadError::Malformed(what)),
            }
            let socket = &self.socket;
            self.calls.wait(true, Duration::from_secs(1), || {
                socket.count.load(Ordering::SeqCst) > 0
            });
        }
    }
}

/// How the reading passes from a thread stuck in an inline call to the watchdog.
#[derive(Default)]
struct Relay {
    /// Odd while a call runs inline; moved on by one when it begins, and when it ends or the
    /// watchdog takes the reading over from it, whichever comes first (a compare-and-swap).
    inline: AtomicU64,
    /// Whether a thread watches: calls run inline only then.
    watched: AtomicBool,
    /// Set while the watchdog sleeps for want of inline calls: the next one wakes it.
    sleeping: AtomicBool,
    /// The thread that watches, to wake it.
    watchdog: parking_lot::Mutex<Option<std::thread::Thread>>,
}

/// How a turn at reading ended.
enum Turn {
    /// The connection ended, or broke: the worker ends.
    Ended(Result<(), String>),
    /// The watchdog took the reading over while this thread ran a call inline.
    HandedOver,
}

impl Reading {
    /// A thread's life in the worker's reading: it reads (from the start when `read`, else
    /// once it has taken the reading over from a stuck thread) and watches (from the start, or
    /// once its inline call returned to find the reading taken over), in turns, until the
    /// connection ends while it reads.
    fn take_turns(&self, mut read: bool) -> Result<(), String> {
        loop {
            if read && let Turn::Ended(result) = self.read() {
                return result;
            }
            self.watch();
            read = true;
        }
    }

    /// Reads and handles frames until the connection ends or the reading is taken over.
    fn read(&self) -> Turn {
        let mut state = self.state.lock();
        loop {
            let frame = match state.reader.next(self.limit) {
                Ok(frame) => frame,
                // The host closed the connection, or went away: the end.
                Err(ReadError::Closed) => return Turn::Ended(Ok(())),
                Err(e) => return Turn::Ended(Err(e.to_string())),
            };
            let sent = match frame.header {
                Header::Ping { id } => self.writer.send(&Header::Pong { id }, b""),
                Header::Start { id } => {
                    let answer = state.serving.start();
                    self.writer.send(&result(id, answer), b"")
                }
                Header::Stop { id } => {
                    let answer = state.serving.stop().map(|()| Vec::new());
                    self.writer.send(&result(id, answer), b"")
                }
                Header::Call {
                    id,
                    method,
                    path,
                    query,
                    headers,
                    deadline_ms,
                    ..
                } => {
                    let Some(router) = state.serving.router.clone() else {
                        let error = Some("called before start".to_owned());
                        let answer = response(id, error, false);
                        if let Err(e) = self.writer.send(&answer, b"") {
                            return Turn::Ended(Err(e.to_string()));
                        }
                        continue;
                    };
                    let inline = self.relay.watched.load(Ordering::Acquire)
                        && runs_inline(&router, &method, &path);
                    let call = Call {
                        id,
                        method,
                        path,
                        query,
                        headers,
                        body: frame.body,
                        router,
                        writer: self.writer.clone(),
                        // The answer of the last call of a burst (nothing more read ahead), or
                        // of a call on the pool, goes out at once; the others of a burst go out
                        // together.
                        now: !inline || !state.reader.read_ahead(),
                    };
                    if inline {
                        drop(state);
                        if !self.inline(call) {
                            return Turn::HandedOver;
                        }
                        state = self.state.lock();
                        Ok(())
                    } else {
                        let job = Job {
                            deadline: deadline(deadline_ms),
                            task: Task::Call(call),
                        };
                        if self.calls.run(job) {
                            Ok(())
                        } else {
                            self.writer.send(&busy(id), b"")
                        }
                    }
                }
                header @ (Header::OnRequest { .. }
                | Header::OnResponse { .. }
                | Header::OnConnect { .. }
                | Header::OnDisconnect { .. }) => self.hook(&state.serving, header, frame.body),
                other => return Turn::Ended(Err(format!("unexpected {other:?}"))),
            };
            if let Err(e) = sent {
                return Turn::Ended(Err(e.to_string()));
            }
        }
    }

    /// Runs a hook message on the pool, as a call that does not run inline; `on_disconnect`,
    /// which has no answer, is dropped when the pool's queue is full.
    fn hook(&self, serving: &Serving, header: Header, body: Vec<u8>) -> std::io::Result<()> {
        let (id, deadline_ms) = match &header {
            Header::OnRequest { id, request, .. } | Header::OnResponse { id, request, .. } => {
                (Some(*id), request.deadline_ms)
            }
            Header::OnConnect {
                id, deadline_ms, ..
            } => (Some(*id), *deadline_ms),
            _ => (None, None),
        };
        let Some(lease) = serving.hooks.clone() else {
            return match id {
                Some(id) => {
                    let answer = hook_failed(id, "called before start".to_owned());
                    self.writer.send(&answer, b"")
                }
                None => Ok(()),
            };
        };
        let hook = Hook {
            header,
            body,
            lease,
            writer: self.writer.clone(),
        };
        let job = Job {
            deadline: deadline(deadline_ms),
            task: Task::Hook(hook),
        };
        match (self.calls.run(job), id) {
            (false, Some(id)) => {
                let refused = HookResult {
                    id,
                    error: Some(busy_reason()),
                    busy: true,
                    ..HookResult::default()
                };
                self.writer.send(&Header::HookResult(refused), b"")
            }
            _ => Ok(()),
        }
    }

    /// Runs `call` on this thread; whether this thread still reads afterwards (the watchdog
    /// may have taken the reading over meanwhile).
    fn inline(&self, call: Call) -> bool {
        let relay = &self.relay;
        let running = relay.inline.fetch_add(1, Ordering::SeqCst) + 1;
        if relay.sleeping.load(Ordering::SeqCst)
            && let Some(watchdog) = &*relay.watchdog.lock()
        {
            watchdog.unpark();
        }
        call.run();
        relay
            .inline
            .compare_exchange(running, running + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Watches the calls that run inline, and returns when it has taken the reading over from
    /// one that ran for more than a tick.
    fn watch(&self) {
        let relay = &self.relay;
        *relay.watchdog.lock() = Some(std::thread::current());
        relay.watched.store(true, Ordering::Release);
        let mut last = relay.inline.load(Ordering::Acquire);
        let mut idle = 0;
        loop {
            if idle < IDLE_TICKS {
                std::thread::sleep(TICK);
            } else {
                relay.sleeping.store(true, Ordering::SeqCst);
                if relay.inline.load(Ordering::SeqCst) == last {
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                relay.sleeping.store(false, Ordering::SeqCst);
            }
            let now = relay.inline.load(Ordering::Acquire);
            // The same inline call at two looks in a row: it turned slow.
            if now == last && now % 2 == 1 {
                // Unwatched before the swap, not after: once the swap is done, the slow call's
                // thread may return, watch, and set it again, which must not be undone here.
                relay.watched.store(false, Ordering::Release);
                if relay
                    .inline
                    .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
                relay.watched.store(true, Ordering::Release);
            }
            idle = if now == last { idle + 1 } else { 0 };
            last = now;
        }
    }
}

/// A call read from the socket, with what it needs to run and be answered.
struct Call {
    id: u64,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    router: Arc<Router>,
    writer: Writer,
    /// Whether its answer goes out at once (see [`Writer::send_now`]).
    now: bool,
}

impl Call {
    /// Runs the call and sends its answer.
    fn run(self) {
        let mut request = Request::new(&self.method, &self.path).body(&self.body);
        request.query = &self.query;
        for (name, value) in &self.headers {
            request = request.header(name, value.as_bytes());
        }
        let (header, body) = answer(&self.router, self.id, &request);
        // A failed write means the host is gone: the reader sees it too.
        let _ = self.writer.send_now(&header, &body, self.now);
    }
}

/// When the host stops waiting for a message that says it does so `deadline_ms` from now.
fn deadline(deadline_ms: Option<u64>) -> Option<Instant> {
    deadline_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)))
}

/// A hook message read from the socket, with what it needs to run and be answered.
struct Hook {
    header: Header,
    /// The frame's body.
    body: Vec<u8>,
    /// The instance, kept started while its hooks run.
    lease: Arc<Lease>,
    writer: Writer,
}

impl Hook {
    /// Runs the hook and sends its answer (`on_disconnect` has none).
    fn run(self) {
        let Hook {
            header,
            body,
            lease,
            writer,
        } = self;
        if let Some((header, body)) = answer_hook(&lease, header, body) {
            // A failed write means the host is gone: the reader sees it too.
            let _ = writer.send(&header, &body);
        }
    }
}

/// Runs the hook of a hook message, through `lease`: its `hook_result` (none for
/// `on_disconnect`).
fn answer_hook(lease: &Lease, header: Header, body: Vec<u8>) -> Option<(Header, Vec<u8>)> {
    Some(match header {
        Header::OnRequest { id, request } => {
            let connection = connection(&request.client, &request.local);
            let answer = with_request(&request, &body, connection.as_ref(), |request| {
                lease.hook(HookCall::Request(request))
            });
            hook_result(id, answer)
        }
        Header::OnResponse {
            id,
            request,
            request_body_len,
            status,
            response_headers,
        } => {
            let Some((request_body, response_body)) = body.split_at_checked(request_body_len)
            else {
                let error = format!(
                    "request_body_len is {request_body_len}, the frame's body {} bytes",
                    body.len()
                );
                return Some((hook_failed(id, error), Vec::new()));
            };
            let mut response = Response {
                status,
                body: response_body.to_vec(),
                ..Response::default()
            };
            for (name, value) in &response_headers {
                let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) else {
                    let error = format!("an invalid response header `{name}`");
                    return Some((hook_failed(id, error), Vec::new()));
                };
                response.headers.append(name, value);
            }
            let connection = connection(&request.client, &request.local);
            let answer = with_request(&request, request_body, connection.as_ref(), |request| {
                lease.hook(HookCall::Response(request, &response))
            });
            hook_result(id, answer)
        }
        Header::OnConnect {
            id, client, local, ..
        } => {
            let connection = Connection { client, local };
            hook_result(id, lease.hook(HookCall::Connect(&connection)))
        }
        Header::OnDisconnect {
            client,
            local,
            requests,
            bytes_in,
            bytes_out,
            duration_us,
        } => {
            lease.on_disconnect(&ConnectionStats {
                connection: Connection { client, local },
                requests,
                bytes_in,
                bytes_out,
                duration: Duration::from_micros(duration_us),
            });
            return None;
        }
        other => unreachable!("only hook messages become hooks, not {other:?}"),
    })
}

/// The connection a hook message names: none when both addresses are empty (the request came
/// through no socket).
fn connection(client: &str, local: &str) -> Option<Connection> {
    (!client.is_empty() || !local.is_empty()).then(|| Connection {
        client: client.to_owned(),
        local: local.to_owned(),
    })
}

/// Runs `hook` with the request a hook message carries, with `body` and `connection`.
fn with_request<T>(
    request: &HookRequest,
    body: &[u8],
    connection: Option<&Connection>,
    hook: impl FnOnce(&Request<'_>) -> T,
) -> T {
    let mut built = Request::new(&request.method, &request.path).body(body);
    built.query = &request.query;
    for (name, value) in &request.headers {
        built = built.header(name, value.as_bytes());
    }
    if let Some(connection) = connection {
        built = built.connection(connection);
    }
    hook(&built)
}

/// The `hook_result` frame of a hook's answer, or of its failure.
fn hook_result(id: u64, answer: Result<HookAnswer, crate::Error>) -> (Header, Vec<u8>) {
    let mut result = HookResult {
        id,
        ..HookResult::default()
    };
    let mut body = Vec::new();
    match answer {
        Ok(HookAnswer::Request(RequestVerdict::Continue(edits))) => {
            result.edits = edits.into_iter().map(wire_edit).collect();
        }
        Ok(HookAnswer::Request(RequestVerdict::Respond(response))) => {
            result.respond = true;
            result.status = Some(response.status);
            result.headers = wire::map_headers(&response.headers);
            body = response.body;
        }
        Ok(HookAnswer::Response(edit)) => {
            result.status = edit.status;
            result.edits = edit.headers.into_iter().map(wire_edit).collect();
            if let Some(replaced) = edit.body {
                result.body = true;
                body = replaced;
            }
        }
        Ok(HookAnswer::Connect(ConnectVerdict::Accept)) => {}
        Ok(HookAnswer::Connect(ConnectVerdict::Refuse(reason))) => {
            result.refuse = true;
            result.error = reason;
        }
        Err(error) => {
            result.panicked = matches!(error.kind(), crate::ErrorKind::Panicked { .. });
            result.error = Some(reason(&error));
        }
    }
    (Header::HookResult(result), body)
}

/// The `hook_result` of a hook that could not run, for `error`.
fn hook_failed(id: u64, error: String) -> Header {
    Header::HookResult(HookResult {
        id,
        error: Some(error),
        ..HookResult::default()
    })
}

/// A header change as the protocol carries it (values as text: bytes that are not UTF-8
/// replaced).
fn wire_edit(edit: HeaderEdit) -> Edit {
    let text = |value: &http::HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    match edit {
        HeaderEdit::Add(name, value) => Edit::Add {
            name: name.to_string(),
            value: text(&value),
        },
        HeaderEdit::Set(name, value) => Edit::Set {
            name: name.to_string(),
            value: text(&value),
        },
        HeaderEdit::Remove(name) => Edit::Remove {
            name: name.to_string(),
        },
    }
}

/// What a thread of the pool runs.
enum Task {
    Call(Call),
    Hook(Hook),
}

/// A call or a hook waiting for a thread of the pool.
struct Job {
    /// When its host stops waiting for it, if the host said.
    deadline: Option<Instant>,
    task: Task,
}

impl Job {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| deadline <= now)
    }

    /// Runs the call or hook, unless its host has stopped waiting for it: then it is dropped
    /// without an answer. The host answered its client 504 and forgot it already (an answer
    /// could even overtake the host's own timer, which may fire late under load).
    fn run(self) {
        if self.expired(Instant::now()) {
            return;
        }
        match self.task {
            Task::Call(call) => call.run(),
            Task::Hook(hook) => hook.run(),
        }
    }
}

/// The threads that run calls: at most `max`, started as calls need them and kept; calls that
/// find them all busy wait their turn, in order, at most `queue` of them (with their bodies).
/// A call that finds the queue full is refused at once; calls whose host stopped waiting are
/// dropped unanswered (see [`Job::run`]), and leave the queue first when it is full.
struct Pool {
    shared: Arc<PoolShared>,
    max: usize,
    queue: usize,
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
    fn new(max: usize, queue: usize) -> Self {
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
            queue: queue.max(1),
        }
    }

    /// Runs `job` on a thread of the pool: an idle one, a new one while there are fewer than
    /// `max`, or the first to finish its call. Refuses it (false, and drops it) when `queue`
    /// jobs wait already, none of them past its deadline.
    fn run(&self, job: Job) -> bool {
        let mut state = self.shared.state.lock();
        let mut expired = std::collections::VecDeque::new();
        if state.jobs.len() >= self.queue {
            let now = Instant::now();
            let waiting = std::mem::take(&mut state.jobs);
            (expired, state.jobs) = waiting.into_iter().partition(|job| job.expired(now));
        }
        if state.jobs.len() >= self.queue {
            drop(state);
            drop((expired, job));
            return false;
        }
        state.jobs.push_back(job);
        // Jobs not yet taken beyond the idle threads that will take them: one more thread.
        let start = state.jobs.len() > state.idle && state.threads < self.max;
        if start {
            state.threads += 1;
        }
        drop(state);
        drop(expired);
        if !start {
            self.shared.ready.notify_one();
            return true;
        }
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
                job.run();
            }
        }
        true
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
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
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
                headers: wire::map_headers(&answer.headers),
                error: None,
                panicked: false,
                busy: false,
            },
            answer.body,
        ),
        Err(error) => {
            let panicked = matches!(error.kind(), crate::ErrorKind::Panicked { .. });
            (response(id, Some(reason(&error)), panicked), Vec::new())
        }
    }
}

/// Whether a call to `method path` may run on the reading thread: its route has a record of
/// fast calls (`crate::pacing`: a route earns that after 8 fast calls in a row, and loses it when
/// 3 of its last 8 were slow). See [`Reading`] for what happens when one turns slow.
fn runs_inline(router: &Router, method: &str, path: &str) -> bool {
    matches!(router.lookup(method, path), Lookup::Found(route) if route.pacing().inline())
}

/// What the worker serves once started.
struct Serving {
    instance: Instance,
    registry: Registry,
    router: Option<Arc<Router>>,
    /// The lease its hooks are called through, once started.
    hooks: Option<Arc<Lease>>,
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
        self.hooks = Some(Arc::new(self.instance.lease().map_err(|e| e.to_string())?));
        Ok(routes)
    }

    fn stop(&mut self) -> Result<(), String> {
        // Calls and hooks still running keep their router or lease; `close_and_stop` never
        // stops under them.
        self.router = None;
        self.hooks = None;
        self.instance.close_and_stop().map_err(|e| reason(&e))
    }
}

/// The plugin's own reason, without the plugin and file the host adds again.
fn reason(error: &crate::Error) -> String {
    match error.kind() {
        crate::ErrorKind::HandlerFailed { reason, .. }
        | crate::ErrorKind::StartFailed { reason }
        | crate::ErrorKind::StopFailed { reason }
        | crate::ErrorKind::RoutesFailed { reason }
        | crate::ErrorKind::HookFailed { reason, .. } => reason.as_str().to_owned(),
        crate::ErrorKind::Panicked { message, .. } => message.as_str().to_owned(),
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
        busy: false,
    }
}

/// The answer to a call refused because [`WORKER_QUEUE`] calls wait for a thread already.
fn busy(id: u64) -> Header {
    Header::Response {
        id,
        status: 503,
        headers: Vec::new(),
        error: Some(busy_reason()),
        panicked: false,
        busy: true,
    }
}

/// Why a call or hook is refused when [`WORKER_QUEUE`] of them wait for a thread already.
fn busy_reason() -> String {
    format!("{WORKER_QUEUE} calls wait for its {WORKER_THREADS} threads already")
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
                .with_ansi(crate::stderr_colours())
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
                plugin: None,
            },
            b"",
        );
    }
}

//! The HTTP/1.1 server: accepting connections under a cap, closing those that send nothing,
//! and a shutdown that does not wait for clients that never sent a full request.
//!
//! Each connection's socket is wrapped in [`Guarded`], which knows from the service whether a
//! request is being answered, and otherwise closes the connection once it has waited too long:
//! `header_timeout` for a request head to arrive in full (from its first byte, or from the
//! accept for a new connection), `keepalive_timeout` for the next request of an idle keep-alive
//! connection (like nginx's `client_header_timeout` and `keepalive_timeout`); and while it
//! writes a response, `keepalive_timeout` for the client to take some of it (nginx's
//! `send_timeout`). hyper's own
//! header timeout runs from the end of the previous response, so it cannot tell the two apart.

use super::{Admitted, Answer, Attempt, PluginService};
use crate::hook::{Connection, ConnectionStats};
use crate::limits::SHUTDOWN_WRITE_TIME;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How [`serve`] treats connections and shutdown.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// After the shutdown signal, how long requests in flight may take to finish.
    pub grace: Duration,
    /// How long a client may take to send a request head in full, from its first byte (or
    /// from the accept, for a new connection): 10 s by default.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection is kept for its next request: 60 s by default.
    pub keepalive_timeout: Duration,
    /// How many connections may be open at once; more are answered 503 and closed at once.
    /// By default 10,000, or three quarters of the open-file limit if that is lower, so that
    /// the host never runs out of file descriptors because of clients.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            grace: crate::limits::DEFAULT_GRACE,
            header_timeout: crate::limits::DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: crate::limits::DEFAULT_KEEPALIVE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// [`MAX_CONNECTIONS`](crate::limits::MAX_CONNECTIONS), or three quarters of the soft limit of
/// open files if that is lower (at least 16).
fn default_max_connections() -> usize {
    let limit = crate::ffi::open_file_limit().unwrap_or(u64::MAX);
    usize::try_from(limit / 4 * 3)
        .unwrap_or(usize::MAX)
        .clamp(16, crate::limits::MAX_CONNECTIONS)
}

/// The answer every connection over the cap gets before it is closed.
fn over_capacity() -> Vec<u8> {
    let body = r#"{"error":"too many connections; try again later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `service` on `listener` until `shutdown` completes, then stops accepting, closes the
/// connections that are not in the middle of a request, lets the requests in flight finish for
/// at most `options.grace`, and returns whether they all did.
///
/// When the grace period is over, every request still waiting for a plugin answers 503 naming
/// the plugin ([`PluginService::end_grace`]), and `serve` gives the connections
/// [`SHUTDOWN_WRITE_TIME`] at most to write those answers before it returns. A call running
/// inline on a worker cannot be interrupted: its connection answers when the call returns, or
/// is closed when the runtime goes down first.
pub async fn serve(
    listener: TcpListener,
    service: PluginService,
    shutdown: impl Future<Output = ()>,
    options: &ServeOptions,
) -> bool {
    let builder = hyper::server::conn::http1::Builder::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` returns `None` once they are all gone.
    let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
    let open = Arc::new(AtomicUsize::new(0));
    let mut over_cap_logged = false;
    let mut accept_failures = AcceptFailures::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: connections already open keep being served
                    // by their own tasks; this loop backs off rather than spin.
                    accept_failures.note(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accept_failures.recovered();
        if open.load(Ordering::Relaxed) >= options.max_connections {
            if !over_cap_logged {
                tracing::warn!(
                    "connection limit of {} reached: new connections get 503 until some close (raise it with --max-connections)",
                    options.max_connections
                );
                over_cap_logged = true;
            }
            // Best effort and never waiting: the socket is closed right after.
            let _ = stream.try_write(&over_capacity());
            continue;
        }
        over_cap_logged = false;
        let _ = stream.set_nodelay(true);
        let state = Arc::new(AtomicU8::new(IDLE));
        // With hooks, each request carries its connection; with `on_disconnect` hooks, the
        // connection counts what it does. The plugins that decide about the connection are
        // those of the router current when it opened (see `Deciders`); each request is served
        // by the router current when it came.
        let current = service.now();
        let opened_under = current.now.deciders.clone();
        let told = current.now.router.has_disconnect_hooks();
        let hooked = current.now.router.has_hooks().then(|| {
            let connection = Connection {
                client: client.to_string(),
                local: stream
                    .local_addr()
                    .map_or_else(|_| String::new(), |a| a.to_string()),
            };
            let admitted = Admitted {
                connection,
                deciders: opened_under.clone(),
                closed_by: std::sync::OnceLock::new(),
            };
            (Arc::new(admitted), told.then(Arc::<Tally>::default))
        });
        let mut io = Guarded::new(stream, state.clone(), options);
        io.tally = hooked.as_ref().and_then(|(_, tally)| tally.clone());
        let opened = std::time::Instant::now();
        // Only the admission holds the router it opened under.
        let admit = hooked.is_some().then_some(current);
        // `service_fn` over `answer_wire` rather than the `tower::Service` impl: no boxed future
        // per request.
        let (hooks, each) = (service.clone(), hooked.clone());
        let plugins = service.clone();
        let handler = hyper::service::service_fn(move |request: http::Request<_>| {
            let admitted = each.as_ref().map(|(admitted, tally)| {
                if let Some(tally) = tally {
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                }
                admitted
            });
            let serving = plugins.now();
            // Other plugins decide about connections since it opened: closed after this answer.
            let stale = !serving.now.deciders.same(&opened_under);
            match serving.answer_wire(request, admitted.map(|a| &**a)) {
                Attempt::Answered(mut response) => {
                    state.store(WRITING, Ordering::Relaxed);
                    if stale {
                        close_after(&mut response);
                    }
                    Answer::Now(Some(response))
                }
                Attempt::Deferred(request) => {
                    drop(serving);
                    state.store(BUSY, Ordering::Relaxed);
                    let (plugins, state) = (plugins.clone(), state.clone());
                    let admitted = admitted.cloned();
                    Answer::Later(Box::pin(async move {
                        let mut response = plugins.answer_later(request, admitted).await;
                        if stale {
                            close_after(&mut response);
                        }
                        state.store(WRITING, Ordering::Relaxed);
                        response
                    }))
                }
            }
        });
        let phase = io.state.clone();
        let connection = builder.serve_connection(TokioIo::new(io), handler);
        let (mut stopping, alive, count) = (stopping.clone(), alive.clone(), OpenGuard::new(&open));
        tokio::spawn(async move {
            let _alive = (alive, count);
            if let (Some((admitted, _)), Some(admit)) = (&hooked, admit)
                && !admit.admit_connection(admitted).await
            {
                // Refused: the socket closes with `connection`, before a request is read.
                return;
            }
            let _told = hooked.and_then(|(admitted, tally)| {
                Some(Disconnect {
                    service: hooks,
                    admitted,
                    tally: tally?,
                    opened,
                })
            });
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    // A connection waiting for a request (nothing, or part of a head) holds
                    // nothing worth waiting for: close it now. Others finish their request.
                    if phase.load(Ordering::Relaxed) == IDLE {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(alive);
    if tokio::time::timeout(options.grace, all_gone.recv())
        .await
        .is_ok()
    {
        return true;
    }
    let left = open.load(Ordering::Relaxed);
    tracing::warn!(
        "the grace period of {:?} is over with {left} connection(s) still open: requests waiting for a plugin answer 503 (the host is stopping); a call running inline answers when it returns",
        options.grace
    );
    service.end_grace();
    if tokio::time::timeout(SHUTDOWN_WRITE_TIME, all_gone.recv())
        .await
        .is_err()
    {
        let left = open.load(Ordering::Relaxed);
        tracing::warn!(
            "{left} connection(s) still open {SHUTDOWN_WRITE_TIME:?} after the grace period (a call running inline, or a client not reading its answer): closing them"
        );
    }
    false
}

/// Asks the client to close the connection after `response` (hyper then closes it).
fn close_after(response: &mut super::HttpResponse) {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}

/// What a connection did, counted for `on_disconnect` hooks.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Tells the `on_disconnect` hooks what an accepted connection did, when its task ends (it is
/// dropped last), whatever ended it.
struct Disconnect {
    service: PluginService,
    admitted: Arc<Admitted>,
    tally: Arc<Tally>,
    opened: std::time::Instant,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        let stats = ConnectionStats {
            connection: self.admitted.connection.clone(),
            requests: self.tally.requests.load(Ordering::Relaxed),
            bytes_in: self.tally.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.tally.bytes_out.load(Ordering::Relaxed),
            duration: self.opened.elapsed(),
        };
        let deciders = self.admitted.deciders.clone();
        self.service.disconnected(stats, deciders);
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs failed accepts once per run of failures, not once per retry.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
}

impl AcceptFailures {
    fn note(&mut self, error: &io::Error) {
        if self.count == 0 {
            tracing::warn!(
                "cannot accept connections: {error}; open connections are still served, new ones wait (raise the open-file limit, or lower --max-connections)"
            );
        }
        self.count += 1;
    }

    fn recovered(&mut self) {
        if self.count > 0 {
            tracing::info!("accepting connections again after {} failures", self.count);
            self.count = 0;
        }
    }
}

/// Where a connection is: waiting for a request, answering one, or writing the answer.
const IDLE: u8 = 0;
const BUSY: u8 = 1;
const WRITING: u8 = 2;

/// A connection's socket that closes itself (with a `TimedOut` error to hyper) when the client
/// takes too long to send a request. The service sets `state` to `BUSY` while it answers and
/// `WRITING` once the answer is handed to hyper; the first flush after that makes it `IDLE`.
struct Guarded {
    stream: TcpStream,
    state: Arc<AtomicU8>,
    /// The timer of the current wait. It may run early (see [`Guarded::expired`]).
    timer: Pin<Box<Sleep>>,
    /// When the current wait began: the accept, the end of a response, or the first byte of a
    /// request head.
    since: Instant,
    /// Whether part of a request head has arrived during this wait.
    started: bool,
    /// Whether a request was answered on this connection already.
    served: bool,
    /// Since when the client has not taken the bytes written to it, if it has not.
    stalled: Option<Instant>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    /// Where the bytes read and written are counted, when hooks want them.
    tally: Option<Arc<Tally>>,
}

impl Guarded {
    fn new(stream: TcpStream, state: Arc<AtomicU8>, options: &ServeOptions) -> Self {
        let now = Instant::now();
        Self {
            stream,
            state,
            timer: Box::pin(tokio::time::sleep_until(now + options.header_timeout)),
            since: now,
            started: false,
            served: false,
            stalled: None,
            header_timeout: options.header_timeout,
            keepalive_timeout: options.keepalive_timeout,
            tally: None,
        }
    }

    /// Whether the current wait is over; if not, the timer wakes the connection by then. The
    /// timer is moved only when it would run late: a wait that ends later than the timer runs
    /// (every new wait of a busy keep-alive connection) leaves it, and it is moved on when it
    /// runs early. A reset touches the runtime's timer wheel, so this keeps it off the path of
    /// every request.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline();
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    /// `poll`, a write's, unless the client has taken nothing for too long: then an error that
    /// has hyper close the connection.
    fn unless_stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        self.stalled.get_or_insert_with(Instant::now);
        if self.expired(cx) {
            let error = io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading");
            return Poll::Ready(Err(error));
        }
        Poll::Pending
    }

    /// Counts the bytes a write took, when hooks want them.
    fn count_written(&self, poll: &Poll<io::Result<usize>>) {
        if let (Some(tally), Poll::Ready(Ok(written))) = (&self.tally, poll) {
            tally
                .bytes_out
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
    }

    /// When the current wait times out: for a client to take a response (it has
    /// `keepalive_timeout` to read some of it), or for a request.
    fn deadline(&self) -> Instant {
        if let Some(stalled) = self.stalled {
            stalled + self.keepalive_timeout
        } else if self.started || !self.served {
            self.since + self.header_timeout
        } else {
            self.since + self.keepalive_timeout
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let waiting = this.state.load(Ordering::Relaxed) == IDLE;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some(tally) = &this.tally {
                    let read = (buf.filled().len() - before) as u64;
                    tally.bytes_in.fetch_add(read, Ordering::Relaxed);
                }
                if waiting && !this.started && buf.filled().len() > before {
                    this.started = true;
                    // A new connection's first request counts from the accept.
                    if this.served {
                        this.since = Instant::now();
                    }
                }
                return Poll::Ready(result);
            }
            Poll::Pending if !waiting => return Poll::Pending,
            Poll::Pending => {}
        }
        if !this.expired(cx) {
            return Poll::Pending;
        }
        let what = if this.started {
            "the request head did not arrive in full in time"
        } else {
            "no request arrived in time"
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.count_written(&poll);
        this.unless_stalled(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.count_written(&poll);
        this.unless_stalled(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        // hyper flushes once it has written a response in full: the wait for the next begins.
        if this.state.load(Ordering::Relaxed) == WRITING {
            this.state.store(IDLE, Ordering::Relaxed);
            this.since = Instant::now();
            this.started = false;
            this.served = true;
            // hyper may have polled the socket before this flush, while the response was being
            // written, and will not poll it again until it is readable: arm the timer here, so
            // that its expiry wakes the connection and the next read reports the timeout.
            let _ = this.expired(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

//! Defaults and limits of the plugin model: facts used by the server, the process backend and
//! the worker alike, so that none of them imports another for a number. Each bounds something
//! that a plugin or a client could otherwise push without end; configuration overrides them
//! where the README says so.

use std::time::Duration;

/// The default limit of a request body: 2 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A handler call that takes this long (10 ms by default) counts as slow: see
/// [`PluginService`](crate::server::PluginService).
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(10);

/// How long a handler call may run before its client gets 504, unless the plugin's entry says
/// otherwise: 30 s.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request body may take to arrive in full before the client gets 408: 60 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long requests in flight may finish after a shutdown signal before those still waiting
/// answer 503 (`serve --grace`): 10 s.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's head (`serve --header-timeout`): 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle keep-alive connection stays open (`serve --keepalive-timeout`): 60 s.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections served at once, unless three quarters of the open-file limit is lower
/// (`serve --max-connections`): 10,000. One over it is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How long a child process has to exit after SIGTERM before SIGKILL, once its stop timeout
/// ([`ProcessOptions::stop_timeout`](crate::process::ProcessOptions)) is over: 2 s.
pub const SIGTERM_GRACE: Duration = Duration::from_secs(2);

/// After the grace period of a shutdown, how long the 503 answers of the requests still in
/// flight have to be written before the server stops: 1 s.
pub const SHUTDOWN_WRITE_TIME: Duration = Duration::from_secs(1);

/// How many calls of one plugin may still be running past their deadline before its new calls
/// are refused with 503: a hung plugin may hold this many threads of the blocking pool, and no
/// more, so it cannot starve the other plugins of threads.
pub const MAX_CALLS_PAST_DEADLINE: usize = 64;

/// The longest line of a child's standard output or error, and the longest message a plugin
/// logs, copied into the host's log, in bytes: 4 KiB. The rest of a longer line is discarded as
/// it is read, never kept.
pub const LOG_LINE_MAX: usize = 4096;

/// The lines a plugin instance may log per second on average (its log callback, `log` frames
/// and output lines together): 100. Configurable per entry.
pub const LOG_RATE: u32 = 100;

/// The lines a plugin instance may log at once, in total (the token bucket's size; it refills at
/// the rate), before lines are dropped: 1000. Configurable per entry.
pub const LOG_BURST: u32 = 1000;

/// How often the lines a plugin's rate limit dropped are reported, one line per plugin: 10 s.
pub const LOG_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The most bytes of calls queued towards one child process and not yet written to it: 64 MiB.
/// Past it, new calls to that plugin answer 503 at once. Configurable per entry
/// (`queue_limit_mb`).
pub const CHILD_QUEUE_LIMIT: usize = 64 << 20;

/// How long a write to a child process may make no progress (it reads nothing while the host
/// has a frame for it) before the write fails and the link goes down: 10 s. The child is then
/// restarted; [`CHILD_QUEUE_LIMIT`] answers the calls queued meanwhile.
pub const CHILD_WRITE_STALL: Duration = Duration::from_secs(10);

/// The most handler calls a worker runs at once, on as many threads: as many as one plugin may
/// hold in the host's blocking pool ([`MAX_CALLS_PAST_DEADLINE`]). More wait their turn, up to
/// [`WORKER_QUEUE`].
pub const WORKER_THREADS: usize = MAX_CALLS_PAST_DEADLINE;

/// The most calls a worker holds waiting for one of its threads, bodies included: four rounds of
/// its threads. Past it, new calls answer 503 at once (`"kind": "busy"`).
pub const WORKER_QUEUE: usize = 4 * WORKER_THREADS;

/// How many reports of closed connections may wait for the `on_disconnect` hooks; more are
/// dropped and counted, so that slow hooks never hold memory or a response.
pub const DISCONNECT_QUEUE: usize = 1024;

/// How many versions of in-process plugin libraries that no running plugin uses any more a
/// [`Deployment`](crate::Deployment) keeps loaded: 64. Unloading a Rust, Go or C++ library has
/// no sound form, so each reload that replaces one leaves its old version mapped; a reload that
/// would keep more fails (restart the host to free them, or run the plugin isolated, whose
/// child process takes its code with it when it ends).
pub const RETAINED_LIBRARIES: usize = 64;

/// How often a retired router is looked at while it drains (see
/// [`Retired::drain`](crate::server::Retired::drain)): 5 ms, a small delay added to a reload,
/// against a check that costs a load.
pub const DRAIN_STEP: Duration = Duration::from_millis(5);

/// The most connections the metrics listener of `serve --metrics ADDR:PORT` serves at once: 16,
/// plenty for a few scrapers; one more is closed unanswered.
pub const METRICS_CONNECTIONS: usize = 16;

/// How long `serve --watch` waits for a changed file to stay unchanged before it reloads: 200 ms,
/// since a build or an editor writes a file in several steps, and one reload should take them
/// all.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

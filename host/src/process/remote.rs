//! An instance whose plugin runs in a child process, and the supervisor that keeps the child
//! running: restarts with backoff after a crash, quarantine after too many, liveness checks,
//! and the stop sequence (`stop`, then SIGTERM, then SIGKILL).

use super::ProcessOptions;
use super::child::Spec;
use super::link::{KILL_WAIT, Link, LinkOptions, Lost, Welcome};
use super::wire::{
    Edit, Frame, Header, HookRequest, HookResult, RouteSpec, map_headers, text_headers,
};
use crate::error::{Error, ErrorKind};
use crate::hook::{
    ConnectVerdict, Connection, ConnectionStats, EditKind, EditTarget, HeaderEdit, HookSet,
    RequestVerdict, ResponseEdit,
};
use crate::limits::{LOG_REPORT_INTERVAL, SIGTERM_GRACE};
use crate::message::{Request, Response};
use crate::pluginlog::LogLimiter;
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

/// Where a supervised child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Started, handshake done, not yet serving (its `start` has not returned).
    Starting,
    /// Serving calls.
    Serving,
    /// Died; a new child starts after a backoff. Calls answer 503 meanwhile.
    Restarting,
    /// Crashed too often: not restarted until the host restarts. Calls answer 503.
    Quarantined,
    /// Stopped by the host.
    Stopped,
}

impl ChildState {
    /// The state's name, as `list` and `/healthz` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Starting => "starting",
            ChildState::Serving => "serving",
            ChildState::Restarting => "restarting",
            ChildState::Quarantined => "quarantined",
            ChildState::Stopped => "stopped",
        }
    }
}

/// Whether a process plugin is a library run by a worker or a program of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plugin library, loaded by a worker process (`isolation = "process"`).
    Isolated,
    /// A plugin program speaking the protocol (`exec = ...`).
    Program,
}

impl Mode {
    /// The mode's name, as `list` and `/healthz` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Isolated => "isolated",
            Mode::Program => "program",
        }
    }
}

/// What the supervisor is told.
enum Event {
    /// The link of generation `.0` went down, for reason `.1`.
    Down(u64, String),
    /// Stop supervising.
    Stop,
}

struct Supervision {
    state: ChildState,
    /// When each recent crash happened (within the quarantine window).
    crashes: VecDeque<Instant>,
    /// Restarts since the child last stayed up for `stable_after`.
    backoff_step: u32,
    /// When the current child started serving.
    serving_since: Option<Instant>,
    /// Whether the host called `start` (a restarted child is started again only then).
    started: bool,
}

/// The process backend of one instance.
pub(crate) struct Remote {
    pub(crate) instance: String,
    /// The name the configuration gave the instance, if any (what `hello` says).
    named: Option<String>,
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) mode: Mode,
    /// The library (isolated) or the program.
    pub(crate) file: PathBuf,
    spec: Spec,
    config: serde_json::Value,
    options: ProcessOptions,
    link: RwLock<Option<Arc<Link>>>,
    /// Counts links: an event of an older one is stale.
    generation: AtomicU64,
    supervision: Mutex<Supervision>,
    routes: RwLock<Vec<RouteSpec>>,
    /// The hooks its process listed in `welcome`: every process of the instance lists these.
    hooks: HookSet,
    /// `on_disconnect` messages dropped: the queue towards the process was past its limit, or
    /// no process served.
    disconnects_dropped: AtomicU64,
    events: Mutex<mpsc::Sender<Event>>,
    /// The instance's log, shared by all its children: its rate limit.
    pub(crate) log: Arc<LogLimiter>,
    /// Calls its process answered `busy` since the last warning saying so, and when that was.
    busy: Mutex<(u64, Option<Instant>)>,
    /// How many times a new child replaced one that ended.
    restarts: AtomicU64,
}

impl Remote {
    /// Starts the child and completes the handshake. The instance's name is `name`, or the
    /// plugin's own.
    pub(crate) fn spawn(
        mode: Mode,
        file: PathBuf,
        spec: Spec,
        name: Option<&str>,
        config: &serde_json::Value,
        options: ProcessOptions,
    ) -> Result<Arc<Self>, Error> {
        let (events, queue) = mpsc::channel();
        let hello_name = name.unwrap_or("");
        let spec_file = file.clone();
        let fail = |reason: String| {
            let error = Error::new(ErrorKind::Handshake {
                reason: reason.into(),
            })
            .with_file(Some(&spec_file));
            match name {
                Some(name) => error.with_plugin(name),
                None => error,
            }
        };
        let generation = 1;
        let down = events.clone();
        // Its lines are tagged, and reports named, with the instance's name; with its file's
        // name (the library's or the program's) until the child says the plugin's name.
        let tag = file.file_name().map_or_else(
            || file.display().to_string(),
            |tag| tag.to_string_lossy().into_owned(),
        );
        let log = LogLimiter::child(
            name.unwrap_or(&tag),
            options.log_limit,
            mode == Mode::Isolated,
        );
        let (link, welcome) = Link::open(
            spec.clone(),
            hello_name,
            None,
            config,
            link_options(&options),
            &log,
            move |reason| {
                let _ = down.send(Event::Down(generation, reason));
            },
        )
        .map_err(fail)?;
        let Welcome {
            name: plugin,
            version,
            routes,
            hooks,
        } = welcome;
        let remote = Arc::new(Remote {
            instance: name.unwrap_or(&plugin).to_owned(),
            named: name.map(str::to_owned),
            plugin,
            version,
            mode,
            file,
            spec,
            config: config.clone(),
            options,
            link: RwLock::new(Some(link)),
            generation: AtomicU64::new(generation),
            supervision: Mutex::new(Supervision {
                state: ChildState::Starting,
                crashes: VecDeque::new(),
                backoff_step: 0,
                serving_since: None,
                started: false,
            }),
            routes: RwLock::new(routes),
            hooks,
            disconnects_dropped: AtomicU64::new(0),
            events: Mutex::new(events),
            log,
            busy: Mutex::new((0, None)),
            restarts: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&remote);
        std::thread::Builder::new()
            .name("plugin-supervisor".into())
            .spawn(move || supervise(&weak, &queue))
            .map_err(|e| fail(format!("cannot start its supervisor thread: {e}")))?;
        Ok(remote)
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(kind)
            .with_file(Some(&self.file))
            .with_plugin(&self.instance)
    }

    /// The state of the child. A child whose link just went down is `Restarting` at once,
    /// before the supervisor has done anything about it.
    pub(crate) fn state(&self) -> ChildState {
        let state = self.supervision.lock().state;
        match state {
            ChildState::Serving | ChildState::Starting if self.current().is_none() => {
                ChildState::Restarting
            }
            state => state,
        }
    }

    /// The current child's process id, if one runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.current().map(|link| link.pid())
    }

    /// The link to the running child, unless it went down.
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().clone().filter(|link| !link.is_down())
    }

    /// Sends `start` and waits for its result; returns the routes.
    pub(crate) fn start(&self) -> Result<Vec<RouteSpec>, Error> {
        let failed = |reason: String| {
            self.error(ErrorKind::StartFailed {
                reason: reason.into(),
            })
        };
        let link = self
            .current()
            .ok_or_else(|| failed("the plugin process is not running".into()))?;
        start_link(&link, &self.routes, self.options.start_timeout).map_err(failed)?;
        let mut supervision = self.supervision.lock();
        supervision.started = true;
        // Unless the child already died (and the supervisor moved on) in the meantime.
        if supervision.state == ChildState::Starting {
            supervision.state = ChildState::Serving;
            supervision.serving_since = Some(Instant::now());
        }
        Ok(self.routes.read().clone())
    }

    /// Stops the plugin, whatever runs in it: sends `stop` and gives it `stop_timeout` to
    /// answer and exit, then SIGTERM (to the program, passed on by its outer process; to its
    /// process group when it has none), then SIGKILL `SIGTERM_GRACE` later. The exit
    /// status is logged. Calls still waiting for it fail. The supervisor stops restarting it.
    /// An error if its `stop` failed or got no answer (it ended all the same).
    pub(crate) fn stop(&self) -> Result<(), Error> {
        self.supervision.lock().state = ChildState::Stopped;
        let _ = self.events.lock().send(Event::Stop);
        let Some(link) = self.link.write().take() else {
            return Ok(());
        };
        let grace = self.options.stop_timeout;
        let plugin = self.instance.as_str();
        let pid = link.pid();
        tracing::info!(
            plugin,
            "sending `stop` to the plugin process (pid {pid}); SIGTERM if it has not exited \
             within {grace:?}"
        );
        let begun = Instant::now();
        let answer = link.request(|id| Header::Stop { id }, &[], grace);
        link.close();
        let left = grace.saturating_sub(begun.elapsed());
        let mut signalled = None;
        let status = link.wait_exit(left).or_else(|| {
            tracing::warn!(
                plugin,
                "the plugin process did not exit within {grace:?} of stop: sending SIGTERM"
            );
            signalled = Some("SIGTERM");
            link.signal(libc::SIGTERM);
            link.wait_exit(SIGTERM_GRACE).or_else(|| {
                tracing::warn!(
                    plugin,
                    "the plugin process ignored SIGTERM for {SIGTERM_GRACE:?}: sending SIGKILL"
                );
                signalled = Some("SIGKILL");
                link.kill()
            })
        });
        // Whatever it started went with it (`wait_exit` kills its group, or its namespace,
        // first).
        match &status {
            Some(status) => tracing::info!(
                plugin,
                "the plugin process ended ({status}) {:.1?} after stop",
                begun.elapsed()
            ),
            None if link.is_reaped() => tracing::info!(
                plugin,
                "the plugin process had ended already ({:.1?} after stop)",
                begun.elapsed()
            ),
            None => tracing::error!(
                plugin,
                "the plugin process (pid {pid}) did not end within {KILL_WAIT:?} of SIGKILL: it is \
                 stuck in the kernel (uninterruptible sleep, such as I/O on a hung file system); \
                 it ends, and its status is lost, when that returns"
            ),
        }
        let failed = |reason: String| {
            let reason = match signalled {
                Some(signal) => format!(
                    "{reason} (its process did not exit within {grace:?}: it was ended with \
                     {signal})"
                ),
                None => reason,
            };
            Err(self.error(ErrorKind::StopFailed {
                reason: reason.into(),
            }))
        };
        match answer {
            Ok(Frame {
                header: Header::Result { ok: true, .. },
                ..
            }) => Ok(()),
            Ok(Frame {
                header: Header::Result { error, .. },
                ..
            }) => failed(error.unwrap_or_else(|| "it gave no reason".into())),
            Ok(frame) => failed(format!("it answered stop with {:?}", frame.header)),
            Err(lost) => failed(describe(&lost)),
        }
    }

    /// The link to call, or why there is none.
    fn serving(&self) -> Result<Arc<Link>, Error> {
        let state = self.supervision.lock().state;
        match (state, self.current()) {
            (ChildState::Serving, Some(link)) => Ok(link),
            _ => Err(self.error(ErrorKind::Unavailable {
                state: self.state().as_str(),
            })),
        }
    }

    /// Sends a call of route number `route` now, which its caller awaits for at most
    /// `deadline` (the child may skip it once that is over); its answer arrives through the
    /// returned future.
    pub(crate) fn call<'s>(
        &'s self,
        route: usize,
        request: &Request<'_>,
        params: &[(String, String)],
        deadline: Duration,
    ) -> impl Future<Output = Result<Response, Error>> + Send + use<'s> {
        let pending = self.serving().map(|link| {
            link.request_async(
                |id| call_header(id, route, request, params, deadline),
                &[request.body],
            )
        });
        async move { self.response(route, pending?.await) }
    }

    /// Sends a call and waits for its answer at most `timeout` (for `Router::dispatch`).
    pub(crate) fn call_blocking(
        &self,
        route: usize,
        request: &Request<'_>,
        params: &[(String, String)],
        timeout: Duration,
    ) -> Result<Response, Error> {
        let link = self.serving()?;
        let answer = link.request(
            |id| call_header(id, route, request, params, timeout),
            &[request.body],
            timeout,
        );
        self.response(route, answer)
    }

    /// Turns the answer to a call into a response, or the error the client gets.
    fn response(&self, route: usize, answer: Result<Frame, Lost>) -> Result<Response, Error> {
        let asked = Asked::Call(
            self.routes
                .read()
                .get(route)
                .map_or_else(String::new, |r| format!("{} {}", r.method, r.path)),
        );
        let frame = self.answered(&asked, answer)?;
        let Header::Response {
            status,
            headers,
            error,
            panicked,
            busy,
            ..
        } = frame.header
        else {
            return Err(
                self.error(asked.failed(format!("it answered the call with {:?}", frame.header)))
            );
        };
        self.failure(&asked, error, panicked, busy)?;
        self.built(&asked, status, headers, frame.body)
    }

    /// The answer to a message, or the error of one that got none: the process ended, the
    /// queue towards it was full, or (waited for synchronously) the time ran out.
    fn answered(&self, asked: &Asked, answer: Result<Frame, Lost>) -> Result<Frame, Error> {
        answer.map_err(|lost| match lost {
            Lost::Child(reason) => self.error(ErrorKind::ChildLost {
                reason: reason.into(),
            }),
            Lost::Timeout(after) => self.error(asked.failed(format!("no answer within {after:?}"))),
            Lost::Backlogged(backlog) => {
                let error = self.error(ErrorKind::Backlogged {
                    queued: backlog.queued,
                    limit: backlog.limit,
                });
                // Once per episode: each refused call has its access line, not this one.
                if backlog.first {
                    tracing::warn!(plugin = self.instance.as_str(), "{error}");
                }
                error
            }
        })
    }

    /// The error of an answer that says the call or hook was not run (`busy`), failed
    /// (`error`) or panicked (`error` and `panicked`), if it says so.
    fn failure(
        &self,
        asked: &Asked,
        error: Option<String>,
        panicked: bool,
        busy: bool,
    ) -> Result<(), Error> {
        if busy {
            let reason = error.unwrap_or_else(|| "it gave no reason".into());
            return Err(self.busy(reason));
        }
        match error {
            Some(reason) if panicked => Err(self.error(asked.panicked(reason))),
            Some(reason) => Err(self.error(asked.failed(reason))),
            None => Ok(()),
        }
    }

    /// The response a call or an `on_request` hook answered, once its status and headers
    /// passed the checks a library's response passes.
    fn built(
        &self,
        asked: &Asked,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Response, Error> {
        let status = self.checked_status(asked, status)?;
        let too_many = || {
            self.error(asked.failed(format!(
                "it answered with {} headers, more than a message may have",
                headers.len()
            )))
        };
        let mut response = Response {
            status,
            headers: http::HeaderMap::try_with_capacity(headers.len()).map_err(|_| too_many())?,
            body,
            failure: None,
        };
        for (name, value) in &headers {
            let Some((name, value)) =
                crate::message::checked_header(name.as_bytes(), value.as_bytes())
            else {
                return Err(self
                    .error(asked.failed(format!("it answered with the refused header `{name}`"))));
            };
            response
                .headers
                .try_append(name, value)
                .map_err(|_| too_many())?;
        }
        Ok(response)
    }

    /// `status`, unless it is outside what a response may have.
    fn checked_status(&self, asked: &Asked, status: u16) -> Result<u16, Error> {
        if (200..=999).contains(&status) {
            return Ok(status);
        }
        Err(self.error(asked.failed(format!(
            "it answered with HTTP status {status}, outside 200 to 999"
        ))))
    }

    /// The hooks the process listed in `welcome` (every process of the instance lists the
    /// same).
    pub(crate) fn hooks(&self) -> HookSet {
        self.hooks
    }

    /// Sends the `on_request` hook now, which its caller awaits for at most `deadline` (the
    /// message carries it); its verdict arrives through the returned future. A process that
    /// did not list the hook is not asked: the request goes on, unchanged.
    pub(crate) fn on_request<'s>(
        &'s self,
        request: &Request<'_>,
        deadline: Duration,
    ) -> impl Future<Output = Result<RequestVerdict, Error>> + Send + use<'s> {
        const HOOK: &str = "on_request";
        let pending = self.hooks.on_request.then(|| {
            self.serving().map(|link| {
                link.request_async(
                    |id| Header::OnRequest {
                        id,
                        request: hook_request(request, deadline),
                    },
                    &[request.body],
                )
            })
        });
        async move {
            let Some(pending) = pending else {
                return Ok(RequestVerdict::Continue(Vec::new()));
            };
            let asked = Asked::Hook(HOOK);
            let (answer, body) = self.hook_answer(&asked, pending?.await)?;
            if answer.respond {
                let status = answer.status.unwrap_or(200);
                let response = self.built(&asked, status, answer.headers, body)?;
                return Ok(RequestVerdict::Respond(Box::new(response)));
            }
            let edits = self.edits(&asked, EditTarget::Request, answer.edits)?;
            Ok(RequestVerdict::Continue(edits))
        }
    }

    /// Sends the `on_response` hook now, as [`on_request`](Self::on_request) does; a process
    /// that did not list it is not asked: the response goes out unchanged.
    pub(crate) fn on_response<'s>(
        &'s self,
        request: &Request<'_>,
        response: &Response,
        deadline: Duration,
    ) -> impl Future<Output = Result<ResponseEdit, Error>> + Send + use<'s> {
        const HOOK: &str = "on_response";
        // A response of an in-process plugin has no size limit, a frame has one: the same
        // bound as the frames the host takes from a process.
        let size = request.body.len() + response.body.len();
        let too_large = size as u64 > self.options.frame_limit;
        let pending = self.hooks.on_response.then(|| {
            if too_large {
                return Err(self.error(Asked::Hook(HOOK).failed(format!(
                    "the request and response bodies are {size} bytes, more than the {} a \
                     frame to the plugin process may carry",
                    self.options.frame_limit
                ))));
            }
            self.serving().map(|link| {
                link.request_async(
                    |id| Header::OnResponse {
                        id,
                        request: hook_request(request, deadline),
                        request_body_len: request.body.len(),
                        status: response.status,
                        response_headers: map_headers(&response.headers),
                    },
                    &[request.body, &response.body],
                )
            })
        });
        async move {
            let Some(pending) = pending else {
                return Ok(ResponseEdit::default());
            };
            let asked = Asked::Hook(HOOK);
            let (answer, body) = self.hook_answer(&asked, pending?.await)?;
            let status = match answer.status {
                Some(status) => Some(self.checked_status(&asked, status)?),
                None => None,
            };
            Ok(ResponseEdit {
                status,
                headers: self.edits(&asked, EditTarget::Response, answer.edits)?,
                body: answer.body.then_some(body),
            })
        }
    }

    /// Sends the `on_connect` hook now, as [`on_request`](Self::on_request) does; a process
    /// that did not list it is not asked: the connection is accepted.
    pub(crate) fn on_connect<'s>(
        &'s self,
        connection: &Connection,
        deadline: Duration,
    ) -> impl Future<Output = Result<ConnectVerdict, Error>> + Send + use<'s> {
        const HOOK: &str = "on_connect";
        let pending = self.hooks.on_connect.then(|| {
            self.serving().map(|link| {
                link.request_async(
                    |id| Header::OnConnect {
                        id,
                        client: connection.client.clone(),
                        local: connection.local.clone(),
                        deadline_ms: Some(millis(deadline)),
                    },
                    &[],
                )
            })
        });
        async move {
            let Some(pending) = pending else {
                return Ok(ConnectVerdict::Accept);
            };
            let (answer, _) = self.hook_answer(&Asked::Hook(HOOK), pending?.await)?;
            Ok(if answer.refuse {
                ConnectVerdict::Refuse(answer.error)
            } else {
                ConnectVerdict::Accept
            })
        }
    }

    /// Tells the process that a connection closed (`on_disconnect`), if it listed the hook:
    /// sent only if the queue towards it takes it at once, otherwise dropped and counted (at
    /// debug level in the log). Never blocks, never waits for an answer.
    pub(crate) fn on_disconnect(&self, stats: &ConnectionStats) {
        if !self.hooks.on_disconnect {
            return;
        }
        let header = Header::OnDisconnect {
            client: stats.connection.client.clone(),
            local: stats.connection.local.clone(),
            requests: stats.requests,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            duration_us: u64::try_from(stats.duration.as_micros()).unwrap_or(u64::MAX),
        };
        let sent = match self.serving() {
            Ok(link) => link.notify(&header).map_err(|lost| describe(&lost)),
            Err(error) => Err(error.to_string()),
        };
        if let Err(why) = sent {
            let dropped = self.disconnects_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                plugin = self.instance.as_str(),
                "an on_disconnect message was dropped ({dropped} so far): {why}"
            );
        }
    }

    /// A hook's answer and its frame's body, unless it says the hook failed (its `error` is
    /// then left only beside an `on_connect` refusal, as its reason).
    fn hook_answer(
        &self,
        asked: &Asked,
        answer: Result<Frame, Lost>,
    ) -> Result<(HookResult, Vec<u8>), Error> {
        let frame = self.answered(asked, answer)?;
        let Header::HookResult(mut result) = frame.header else {
            return Err(self.error(asked.failed(format!(
                "it answered with {:?} instead of hook_result",
                frame.header
            ))));
        };
        // Beside `refuse`, `error` is why `on_connect` refused, not a failure.
        result.refuse &= matches!(asked, Asked::Hook("on_connect"));
        if !result.refuse {
            self.failure(asked, result.error.take(), result.panicked, result.busy)?;
        }
        Ok((result, frame.body))
    }

    /// The header changes a hook asked for, each checked as a library's are.
    fn edits(
        &self,
        asked: &Asked,
        target: EditTarget,
        edits: Vec<Edit>,
    ) -> Result<Vec<HeaderEdit>, Error> {
        let which = match target {
            EditTarget::Request => "request",
            EditTarget::Response => "response",
        };
        edits
            .into_iter()
            .map(|edit| {
                let (kind, op, name, value) = match edit {
                    Edit::Add { name, value } => (EditKind::Add, "add", name, value),
                    Edit::Set { name, value } => (EditKind::Set, "set", name, value),
                    Edit::Remove { name } => (EditKind::Remove, "remove", name, String::new()),
                };
                crate::hook::checked_edit(target, kind, name.as_bytes(), value.as_bytes())
                    .ok_or_else(|| {
                        self.error(asked.failed(format!(
                            "it asked to {op} the {which} header `{name}`, which a hook may not \
                             (an invalid name or value, a header that frames the message, or \
                             the request's host)"
                        )))
                    })
            })
            .collect()
    }

    /// The error of a call the child answered `busy`, with a warning in the log at most once
    /// per [`LOG_REPORT_INTERVAL`] (each refused call has its access line).
    fn busy(&self, reason: String) -> Error {
        let error = self.error(ErrorKind::ChildBusy {
            reason: reason.into(),
        });
        let mut busy = self.busy.lock();
        busy.0 += 1;
        if busy.1.is_none_or(|at| at.elapsed() >= LOG_REPORT_INTERVAL) {
            let refused = std::mem::take(&mut busy.0);
            busy.1 = Some(Instant::now());
            drop(busy);
            tracing::warn!(
                plugin = self.instance.as_str(),
                "{error} ({refused} call(s) refused since the last such line, at most one every \
                 {LOG_REPORT_INTERVAL:?}); if the load is expected, run more instances of the \
                 plugin or make its calls faster"
            );
        }
        error
    }

    /// Starts a new child in place of one that died, and starts it if the old one was.
    fn restart(self: &Arc<Self>, generation: u64) -> Result<(), String> {
        let down = self.events.lock().clone();
        // The same `instance` as the first child's `hello`, and the same plugin, or refused
        // before its name tags the instance's lines.
        let (link, welcome) = Link::open(
            self.spec.clone(),
            self.named.as_deref().unwrap_or(""),
            Some(&self.plugin),
            &self.config,
            link_options(&self.options),
            &self.log,
            move |reason| {
                let _ = down.send(Event::Down(generation, reason));
            },
        )?;
        let (started, stopped) = {
            let supervision = self.supervision.lock();
            (
                supervision.started,
                supervision.state == ChildState::Stopped,
            )
        };
        if stopped {
            link.kill();
            return Ok(());
        }
        // The host's hook chains were built with the hooks of the first process: a new one must
        // list the same, or a hook would go missing (or be sent to a process without it).
        if welcome.hooks != self.hooks {
            link.kill();
            let names = |hooks: HookSet| match hooks.names() {
                names if names.is_empty() => "none".to_owned(),
                names => names.join(", "),
            };
            return Err(format!(
                "the new process lists other hooks ({}) than the one it replaces ({}); to serve \
                 other hooks, restart the host",
                names(welcome.hooks),
                names(self.hooks)
            ));
        }
        // Calls name a route by its index in `self.routes`: a new process must list the same
        // routes in the same order (by `start`'s result if the plugin started, which may
        // replace `welcome`'s), or its calls would reach the wrong handlers.
        let routes = RwLock::new(welcome.routes);
        if started {
            start_link(&link, &routes, self.options.start_timeout)?;
        }
        if *routes.read() != *self.routes.read() {
            link.kill();
            return Err(
                "the new process lists other routes than the one it replaces (in number, order, \
                 methods or paths); to serve other routes, restart the host"
                    .into(),
            );
        }
        let mut supervision = self.supervision.lock();
        if supervision.state == ChildState::Stopped {
            drop(supervision);
            link.kill();
            return Ok(());
        }
        // The link first: a caller that sees the state `Serving` finds it.
        *self.link.write() = Some(link);
        supervision.state = if started {
            ChildState::Serving
        } else {
            ChildState::Starting
        };
        supervision.serving_since = Some(Instant::now());
        self.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times a new child replaced one that ended (after a crash).
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.events.lock().send(Event::Stop);
        if let Some(link) = self.link.write().take() {
            link.kill();
        }
    }
}

/// Sends `start` on `link` and waits for its result; its routes, if it lists any, replace
/// `routes`.
fn start_link(
    link: &Link,
    routes: &RwLock<Vec<RouteSpec>>,
    timeout: Duration,
) -> Result<(), String> {
    match link.request(|id| Header::Start { id }, &[], timeout) {
        Ok(Frame {
            header:
                Header::Result {
                    ok: true,
                    routes: listed,
                    ..
                },
            ..
        }) => {
            if let Some(listed) = listed {
                *routes.write() = listed;
            }
            Ok(())
        }
        Ok(Frame {
            header: Header::Result { error, .. },
            ..
        }) => Err(error.unwrap_or_else(|| "it gave no reason".into())),
        Ok(frame) => Err(format!("it answered start with {:?}", frame.header)),
        Err(lost) => Err(describe(&lost)),
    }
}

fn describe(lost: &Lost) -> String {
    match lost {
        Lost::Child(reason) => reason.clone(),
        Lost::Timeout(after) => format!("no answer within {after:?}"),
        Lost::Backlogged(backlog) => format!(
            "refused: {} bytes are queued towards the plugin process, over the limit of {}",
            backlog.queued, backlog.limit
        ),
    }
}

fn link_options(options: &ProcessOptions) -> LinkOptions {
    LinkOptions {
        frame_limit: options.frame_limit,
        handshake_timeout: options.handshake_timeout,
        queue_limit: options.queue_limit,
    }
}

/// What a message to the process asked for, for the errors of its answer.
enum Asked {
    /// A call of the route `METHOD /pattern`.
    Call(String),
    /// The hook of this name.
    Hook(&'static str),
}

impl Asked {
    /// The kind of error of a call or hook that failed for `reason`.
    fn failed(&self, reason: String) -> ErrorKind {
        match self {
            Asked::Call(route) => ErrorKind::HandlerFailed {
                route: route.clone(),
                reason: reason.into(),
            },
            Asked::Hook(hook) => ErrorKind::HookFailed {
                hook,
                reason: reason.into(),
            },
        }
    }

    /// The kind of error of a call or hook that panicked with `message`.
    fn panicked(&self, message: String) -> ErrorKind {
        let call = match self {
            Asked::Call(route) => route.clone(),
            Asked::Hook(hook) => format!("its {hook} hook"),
        };
        ErrorKind::Panicked {
            call,
            message: message.into(),
        }
    }
}

/// What a hook message carries of `request`.
fn hook_request(request: &Request<'_>, deadline: Duration) -> HookRequest {
    let (client, local) = request
        .connection
        .map_or_else(Default::default, |c| (c.client.clone(), c.local.clone()));
    HookRequest {
        method: request.method.to_owned(),
        path: request.path.to_owned(),
        query: request.query.to_owned(),
        headers: text_headers(request.headers.iter()),
        client,
        local,
        deadline_ms: Some(millis(deadline)),
    }
}

/// A deadline in whole milliseconds, as `deadline_ms` gives it.
fn millis(deadline: Duration) -> u64 {
    u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX)
}

fn call_header(
    id: u64,
    route: usize,
    request: &Request<'_>,
    params: &[(String, String)],
    deadline: Duration,
) -> Header {
    Header::Call {
        id,
        route,
        method: request.method.to_owned(),
        path: request.path.to_owned(),
        query: request.query.to_owned(),
        headers: text_headers(request.headers.iter()),
        params: params.to_vec(),
        deadline_ms: Some(millis(deadline)),
    }
}

/// The supervisor's loop: checks liveness, and restarts the child when it goes down.
fn supervise(remote: &Weak<Remote>, events: &mpsc::Receiver<Event>) {
    let interval = match remote.upgrade() {
        Some(remote) => remote.options.ping_interval,
        None => return,
    };
    loop {
        match events.recv_timeout(interval) {
            Ok(Event::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(Event::Down(generation, reason)) => {
                let Some(remote) = remote.upgrade() else {
                    return;
                };
                if generation != remote.generation.load(Ordering::Acquire) {
                    continue;
                }
                if !recover(&remote, events, reason) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let Some(remote) = remote.upgrade() else {
                    return;
                };
                ping(&remote);
            }
        }
    }
}

/// Kills a child that does not answer `ping` within the liveness deadline; its link then goes
/// down, and the supervisor restarts it.
fn ping(remote: &Remote) {
    if remote.state() != ChildState::Serving {
        return;
    }
    let Some(link) = remote.current() else {
        return;
    };
    let timeout = remote.options.ping_timeout;
    if let Err(Lost::Timeout(_)) = link.request(|id| Header::Ping { id }, &[], timeout) {
        if remote.state() == ChildState::Stopped {
            // The host is stopping it meanwhile: `stop` ends it, in order.
            return;
        }
        tracing::error!(
            plugin = remote.instance.as_str(),
            "the plugin process (pid {}) did not answer a liveness check within {timeout:?}: \
             killing it",
            link.pid()
        );
        link.kill();
    }
}

/// Handles a child that went down: counts the crash, then restarts it after a backoff, or
/// quarantines it. Returns false when supervision should end.
fn recover(remote: &Arc<Remote>, events: &mpsc::Receiver<Event>, reason: String) -> bool {
    let options = remote.options.clone();
    let old = remote.link.write().take();
    let status = old
        .as_ref()
        .and_then(|link| {
            link.close();
            link.wait_exit(Duration::from_millis(200))
        })
        .map_or_else(String::new, |s| format!(" ({s})"));
    drop(old);
    // It quotes the child (what it refused with, what it sent against the protocol): logged
    // escaped and cut, as everything a plugin says.
    let mut reason = crate::PluginText::from(reason);
    loop {
        let delay = {
            let mut supervision = remote.supervision.lock();
            if supervision.state == ChildState::Stopped {
                return false;
            }
            let now = Instant::now();
            if supervision
                .serving_since
                .is_some_and(|since| now.duration_since(since) >= options.stable_after)
            {
                supervision.backoff_step = 0;
            }
            supervision.serving_since = None;
            supervision.crashes.push_back(now);
            while supervision
                .crashes
                .front()
                .is_some_and(|at| now.duration_since(*at) > options.crash_window)
            {
                supervision.crashes.pop_front();
            }
            if supervision.crashes.len() >= options.max_crashes as usize {
                supervision.state = ChildState::Quarantined;
                tracing::error!(
                    plugin = remote.instance.as_str(),
                    "the plugin process ended{status}: {reason}; it crashed {} times within \
                     {:?}, so it is quarantined: its routes answer 503 until a reload replaces it \
                     (SIGHUP, or serve --watch, once its file or its entry changed) or the host \
                     restarts",
                    supervision.crashes.len(),
                    options.crash_window
                );
                // It is never restarted: a new instance replaces it (a reload), or nothing.
                return true;
            }
            supervision.state = ChildState::Restarting;
            let delay = options
                .backoff_initial
                .saturating_mul(1 << supervision.backoff_step.min(16))
                .min(options.backoff_max);
            supervision.backoff_step += 1;
            delay
        };
        tracing::error!(
            plugin = remote.instance.as_str(),
            "the plugin process ended{status}: {reason}; restarting it in {delay:?}"
        );
        match events.recv_timeout(delay) {
            Ok(Event::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            // Only the old link can be down now: there is no new one yet.
            Ok(Event::Down(..)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let generation = remote.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match remote.restart(generation) {
            Ok(()) => {
                tracing::info!(
                    plugin = remote.instance.as_str(),
                    "the plugin process was restarted (pid {})",
                    remote.pid().map_or_else(|| "-".into(), |p| p.to_string())
                );
                return true;
            }
            Err(why) => reason = format!("its restart failed: {why}").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::CHILD_FD;
    use super::ProcessOptions;
    use crate::limits::CHILD_WRITE_STALL;
    use crate::limits::{
        DEFAULT_BODY_LIMIT, DEFAULT_HANDLER_TIMEOUT, LOG_LINE_MAX, LOG_REPORT_INTERVAL,
        SIGTERM_GRACE,
    };
    use std::collections::BTreeMap;
    use std::time::Duration;

    const PROTOCOL: &str = include_str!("PROTOCOL.md");

    fn time(duration: Duration) -> String {
        match duration.as_millis() {
            0 => format!("{} µs", duration.as_micros()),
            ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
            ms => format!("{ms} ms"),
        }
    }

    fn size(bytes: u64) -> String {
        match bytes {
            b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
            b if b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
            b => format!("{b} bytes"),
        }
    }

    /// The rows of the table of `## Numbers`: the first column and the second.
    fn documented() -> BTreeMap<&'static str, &'static str> {
        let section = PROTOCOL
            .split_once("\n## Numbers\n")
            .expect("PROTOCOL.md has a section `## Numbers`")
            .1;
        let section = section.split_once("\n## ").map_or(section, |(s, _)| s);
        section
            .lines()
            .filter(|line| line.starts_with("| "))
            .skip(2) // the header row and the separator
            .map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                (cells[0].trim_start_matches("| "), cells[1])
            })
            .collect()
    }

    /// The rows of the shared memory (Linux only; elsewhere the table's rows stay unchecked).
    #[cfg(target_os = "linux")]
    fn ring_numbers() -> Vec<(&'static str, String)> {
        use super::super::ring;
        vec![
            (
                "shared memory: its size, in bytes",
                format!("{} bytes", ring::MEMORY_SIZE),
            ),
            ("shared memory: slots in each ring", ring::SLOTS.to_string()),
            (
                "shared memory: bytes of a slot, its head included",
                size(ring::SLOT_SIZE as u64),
            ),
            (
                "shared memory: longest spin while an answer is due",
                time(ring::SPIN_MAX),
            ),
            (
                "shared memory: longest futex wait of the host",
                time(super::super::link::RING_WAIT),
            ),
        ]
    }

    #[cfg(not(target_os = "linux"))]
    fn ring_numbers() -> Vec<(&'static str, String)> {
        Vec::new()
    }

    #[test]
    fn the_numbers_of_protocol_md_are_the_ones_the_host_uses() {
        let o = ProcessOptions::default();
        let expected: BTreeMap<&str, String> = [
            (
                "descriptor of the socket, in `PLUGLET_PLUGIN_FD`",
                CHILD_FD.to_string(),
            ),
            (
                "handshake deadline, from `hello` to `welcome` or `refuse`",
                time(o.handshake_timeout),
            ),
            (
                "start deadline, for `start`'s result",
                time(o.start_timeout),
            ),
            (
                "call deadline, `deadline_ms`",
                time(DEFAULT_HANDLER_TIMEOUT),
            ),
            (
                "largest request body, a `call`'s body",
                size(DEFAULT_BODY_LIMIT as u64),
            ),
            (
                "largest frame accepted from the program",
                size(o.frame_limit),
            ),
            (
                "queue limit, of calls and hooks not yet read by the program",
                size(o.queue_limit as u64),
            ),
            ("write stall time", time(CHILD_WRITE_STALL)),
            ("ping interval", time(o.ping_interval)),
            ("liveness deadline, for `pong`", time(o.ping_timeout)),
            ("first restart delay", time(o.backoff_initial)),
            ("longest restart delay", time(o.backoff_max)),
            (
                "stable time, that resets the restart delay",
                time(o.stable_after),
            ),
            ("quarantine count, of crashes", o.max_crashes.to_string()),
            ("crash window", time(o.crash_window)),
            (
                "stop grace period, for `stop`'s result and the exit",
                time(o.stop_timeout),
            ),
            ("SIGTERM grace period, before SIGKILL", time(SIGTERM_GRACE)),
            ("longest log line, in bytes", size(LOG_LINE_MAX as u64)),
            (
                "output lines held until the program is named",
                crate::pluginlog::HELD_LINES.to_string(),
            ),
            (
                "output copied once the program has exited, in bytes",
                size(super::super::output::DRAIN_LIMIT as u64),
            ),
            ("log rate, lines per second", o.log_limit.rate.to_string()),
            ("log burst, lines at once", o.log_limit.burst.to_string()),
            ("busy report interval", time(LOG_REPORT_INTERVAL)),
        ]
        .into_iter()
        .chain(ring_numbers())
        .collect();
        let documented = documented();
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(what, value)| documented.get(*what) != Some(&value.as_str()))
            .map(|(what, value)| {
                let doc = documented.get(what);
                format!("`{what}`: {value} in the code, {doc:?} in PROTOCOL.md")
            })
            .chain(
                (documented.keys())
                    .filter(|what| !expected.contains_key(*what))
                    // Elsewhere there is no shared memory to check the rows of.
                    .filter(|what| cfg!(target_os = "linux") || !what.starts_with("shared memory:"))
                    .map(|what| format!("`{what}`: a row this test does not know")),
            )
            .collect();
        assert!(
            wrong.is_empty(),
            "PROTOCOL.md's `## Numbers` disagrees with the code:\n{}",
            wrong.join("\n")
        );
    }

    /// Outside `## Numbers`, the page names its durations and sizes, never their values: a
    /// value written twice would drift.
    #[test]
    fn protocol_md_gives_durations_and_sizes_only_in_its_table() {
        let prose = PROTOCOL
            .split_once("\n## Numbers\n")
            .map(|(before, rest)| {
                let after = rest.split_once("\n## ").map_or("", |(_, after)| after);
                format!("{before}\n{after}")
            })
            .expect("PROTOCOL.md has a section `## Numbers`");
        for line in prose.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                let unit = pair[1].trim_end_matches([',', '.', ')', ';', ':']);
                let number = pair[0].trim_start_matches('(');
                assert!(
                    !(number.chars().all(|c| c.is_ascii_digit())
                        && ["ms", "s", "KiB", "MiB"].contains(&unit)),
                    "PROTOCOL.md gives a value outside `## Numbers`: {line}"
                );
            }
        }
    }
}

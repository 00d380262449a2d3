//! Serving a [`Router`] over HTTP: a `tower::Service` that applications can mount in their own
//! server (axum, hyper, ...), and [`serve`], a hyper 1 server with timeouts, a connection cap
//! and graceful shutdown.

mod connection;
mod inline;

use crate::error::{Error, ErrorKind};
use crate::message::Request;
use crate::pacing::Move;
use crate::plugin::{Instance, State};
use crate::process::ChildState;
use crate::router::{Lookup, RouteMatch, Router};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use connection::{ServeOptions, serve};

pub use crate::limits::{
    DEFAULT_BLOCKING_THRESHOLD, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_HANDLER_TIMEOUT,
    MAX_CALLS_PAST_DEADLINE,
};

/// The log target of the access log: one line per request, at INFO (`--log-level
/// info,plugin_host::access=off` turns it off).
const ACCESS: &str = "plugin_host::access";

/// The log target of why a call failed (a handler's reason, a panic message, what a plugin
/// process answered, a call past its deadline), apart from the access log, so that turning the
/// access log off keeps them.
const FAILURE: &str = "plugin_host::failure";

/// The path the service answers itself, before any plugin route.
pub const HEALTH_PATH: &str = "/healthz";

/// The response type of [`PluginService`].
pub type HttpResponse = http::Response<Full<Bytes>>;

/// The plugin routes as a `tower::Service`: mount it in any tower-based server, or pass it to
/// [`serve`].
///
/// Behaviour: `GET /healthz` answers `{"status":"ok",...}` with 200, or `"degraded"` with 503
/// when a plugin is poisoned, failed or overloaded; a path that climbs above `/` or a parameter
/// that cannot be decoded safely is 400 (see the README's path safety); an unknown path is 404; a known path with another method is 405 with an `Allow` header;
/// `HEAD` works for every `GET` route; a body over the limit is 413 and never reaches the
/// plugin; a handler error or panic is 500, and a call past its deadline 504, with a JSON body
/// naming the plugin (the log has the full detail, under the target `plugin_host::failure`).
///
/// Where handlers run: a plugin call costs nanoseconds and a hop to another thread microseconds,
/// so a route with a record of fast calls runs inline, on the async worker that serves the
/// connection; a new route, or one with slow calls among its last (see `crate::pacing`), runs
/// on tokio's blocking pool. Three rules keep any number of slow or hung calls from stalling
/// other plugins or `/healthz`: at most `workers - 1` calls run inline at once (one more goes to
/// the pool), so one worker is always free; a watchdog gets a free worker onto the I/O driver
/// within 10 to 20 ms of an inline call turning slow (see `server/inline.rs`); and a call on the
/// pool that runs past its deadline answers 504 at the deadline, while the call itself (which
/// cannot be cancelled) runs on to its end and is counted
/// ([`Instance::calls_past_deadline`](crate::Instance)). An inline call cannot be interrupted
/// either: it answers 504 when it returns past its deadline.
///
/// It needs a tokio runtime (multi-thread for inline calls: on a current-thread runtime every
/// call goes to the blocking pool).
#[derive(Clone)]
pub struct PluginService {
    shared: Arc<Shared>,
}

/// What every clone of a [`PluginService`] shares.
struct Shared {
    router: Router,
    body_limit: usize,
    blocking_threshold: Duration,
    handler_timeout: Duration,
    body_timeout: Duration,
    /// The calls running inline, at most the runtime's workers less one, and their watchdog;
    /// set up on the first call, on the runtime that serves it.
    inline: OnceLock<inline::Inline>,
    /// Whether the grace period of a shutdown is over (see [`PluginService::end_grace`]): read
    /// with one load, so a request touches no shared counter to learn it.
    grace_over: AtomicBool,
    /// Wakes the requests waiting for a plugin when the grace period ends.
    grace_end: tokio::sync::Notify,
}

impl PluginService {
    /// A service over `router` with the default body limit.
    pub fn new(router: Router) -> Self {
        if let Lookup::Found(route) = router.lookup("GET", HEALTH_PATH) {
            tracing::warn!(
                "plugin `{}` routes GET {HEALTH_PATH}, which the server answers itself",
                route.plugin()
            );
        }
        if router.plugins().is_empty() {
            tracing::warn!(
                "no plugin is loaded (check the configuration or the plugin folder): every path but {HEALTH_PATH} answers 404"
            );
        }
        Self {
            shared: Arc::new(Shared {
                router,
                body_limit: DEFAULT_BODY_LIMIT,
                blocking_threshold: DEFAULT_BLOCKING_THRESHOLD,
                handler_timeout: DEFAULT_HANDLER_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                inline: OnceLock::new(),
                grace_over: AtomicBool::new(false),
                grace_end: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The settings, to change before the service is cloned or used.
    fn settings(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("configure a PluginService before cloning it")
    }

    /// Sets the largest request body accepted, in bytes.
    ///
    /// # Panics
    /// If the service was cloned already (as every `with_` method).
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.settings().body_limit = limit;
        self
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Sets how long a handler call must take to count as slow (see `PluginService`).
    pub fn with_blocking_threshold(mut self, threshold: Duration) -> Self {
        self.settings().blocking_threshold = threshold;
        self
    }

    /// Sets how long a request body may take to arrive in full before the client gets 408.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.settings().body_timeout = timeout;
        self
    }

    /// Sets how long a handler call may run before its client gets 504, for plugins whose
    /// instance has no deadline of its own ([`Instance::set_handler_timeout`](crate::Instance)).
    pub fn with_handler_timeout(mut self, timeout: Duration) -> Self {
        self.settings().handler_timeout = timeout;
        self
    }

    /// Answers one request.
    pub async fn handle<B>(&self, request: http::Request<B>) -> HttpResponse
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match self.answer_now(request) {
            Attempt::Answered(response) => response,
            Attempt::Deferred(request) => self.answer_later(request).await,
        }
    }

    /// Ends the grace period of a shutdown, for good: every request still waiting for a plugin
    /// (its call to a child process or on the blocking pool, or its body) answers 503 at once,
    /// with a JSON body naming the plugin (`"kind": "stopping"`), and so does every later
    /// request that would wait, without calling the plugin. A call on the blocking pool runs on
    /// to its end all the same (it cannot be cancelled); a call running inline cannot be
    /// interrupted, and answers when it returns. [`serve`] calls this when its grace period is
    /// over; a server that mounts the service calls it at the end of its own.
    pub fn end_grace(&self) {
        // SeqCst, then the wake-up: a request that registers for the wake-up after this reads
        // `true` (see `unless_stopping`).
        self.shared.grace_over.store(true, Ordering::SeqCst);
        self.shared.grace_end.notify_waiters();
    }

    /// Whether the grace period of a shutdown is over (see [`end_grace`](Self::end_grace)).
    fn grace_over(&self) -> bool {
        self.shared.grace_over.load(Ordering::Acquire)
    }

    /// Answers without waiting when nothing needs an `await`: no body to read, and a route that
    /// runs inline (or no route at all). Otherwise gives the request back, untouched. This keeps
    /// the common case (a GET) free of a large future and of a heap allocation.
    fn answer_now<B: http_body::Body>(&self, request: http::Request<B>) -> Attempt<B> {
        let (parts, body) = request.into_parts();
        let exchange = Exchange::start(&parts);
        let path = match crate::path::normalize(parts.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                let response = json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": e.to_string() }),
                );
                return Attempt::Answered(exchange.finish(&parts, response, None));
            }
        };
        let path = &*path;
        if path == HEALTH_PATH {
            let response = match parts.method {
                Method::GET | Method::HEAD => self.health(),
                _ => not_allowed(parts.method.as_str(), path, &["GET"]),
            };
            return Attempt::Answered(exchange.finish(&parts, response, None));
        }
        let (found, method) = self.find(&parts, path);
        let (response, plugin) = match found {
            Lookup::Found(route) if body.is_end_stream() && !route.awaits() => {
                match self.admit_inline(&route) {
                    Some(_slot) => {
                        let response = self.call_inline(&route, &parts, method, path, &[]);
                        (response, Some(route.plugin()))
                    }
                    None => return Attempt::Deferred(http::Request::from_parts(parts, body)),
                }
            }
            Lookup::Found(_) => return Attempt::Deferred(http::Request::from_parts(parts, body)),
            Lookup::MethodNotAllowed(allowed) => {
                (not_allowed(parts.method.as_str(), path, &allowed), None)
            }
            Lookup::NotFound => {
                let error = format!("no route matches {}", clip(path));
                (
                    json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({ "error": error }),
                    ),
                    None,
                )
            }
        };
        Attempt::Answered(exchange.finish(&parts, response, plugin))
    }

    /// [`answer_now`](Self::answer_now) for a request read off the wire by [`serve`]: an
    /// HTTP/1.1 request without `Host` is 400 (RFC 9112, section 3.2). The `tower::Service`
    /// leaves that rule to the server it is mounted in, since its callers may build requests
    /// themselves.
    fn answer_wire<B: http_body::Body>(&self, request: http::Request<B>) -> Attempt<B> {
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(HOST) {
            let (parts, _) = request.into_parts();
            let error = "an HTTP/1.1 request must have a Host header (RFC 9112, section 3.2)";
            let response = json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": error }),
            );
            return Attempt::Answered(Exchange::start(&parts).finish(&parts, response, None));
        }
        self.answer_now(request)
    }

    /// Lets a call of `route` run inline, on this worker, if the route has earned it and fewer
    /// than `workers - 1` calls run inline now; the slot is freed when dropped.
    #[inline]
    fn admit_inline(&self, route: &RouteMatch<'_, '_>) -> Option<inline::Admitted<'_>> {
        if !route.pacing().inline() {
            return None;
        }
        let inline = self.shared.inline.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok();
            let workers = runtime.as_ref().map_or(1, |h| h.metrics().num_workers());
            inline::Inline::new(workers.saturating_sub(1), runtime)
        });
        inline.admit()
    }

    /// Finds the request's route. `HEAD` uses the path's `GET` route when it has no `HEAD` route
    /// of its own. Returns the method the handler sees.
    fn find<'r, 'p>(
        &'r self,
        parts: &'p http::request::Parts,
        path: &'p str,
    ) -> (Lookup<'r, 'p>, &'p str) {
        let method = parts.method.as_str();
        let router = &self.shared.router;
        match router.lookup(method, path) {
            Lookup::Found(route) => (Lookup::Found(route), method),
            _ if parts.method == Method::HEAD => (router.lookup("GET", path), "GET"),
            other => (other, method),
        }
    }

    /// `GET /healthz`: 200 when every plugin serves, 503 when one is out of service (poisoned
    /// by a panic, failed, or refusing calls with too many still running past their deadline).
    fn health(&self) -> HttpResponse {
        let router = &self.shared.router;
        let names = |keep: fn(&Instance) -> bool| -> Vec<&str> {
            router
                .instances()
                .filter(|i| keep(i))
                .map(Instance::name)
                .collect()
        };
        let poisoned = router.poisoned();
        let failed = names(|i| i.state() == State::Failed);
        let overloaded = names(|i| i.calls_past_deadline().1 >= MAX_CALLS_PAST_DEADLINE);
        let past_deadline: serde_json::Map<String, serde_json::Value> = router
            .instances()
            .filter_map(|i| {
                let (total, running) = i.calls_past_deadline();
                (total > 0 || running > 0).then(|| {
                    let counts = serde_json::json!({ "total": total, "running": running });
                    (i.name().to_owned(), counts)
                })
            })
            .collect();
        // Plugins in child processes: how they run, the child's pid and its state. One that is
        // not serving (restarting, quarantined) is out of service.
        let mut unavailable = false;
        let processes: serde_json::Map<String, serde_json::Value> = router
            .instances()
            .filter_map(|i| {
                let (mode, pid, state) = i.process()?;
                unavailable |= state != ChildState::Serving;
                let process = serde_json::json!({
                    "mode": mode.as_str(),
                    "pid": pid,
                    "state": state.as_str(),
                });
                Some((i.name().to_owned(), process))
            })
            .collect();
        let ok = poisoned.is_empty() && failed.is_empty() && overloaded.is_empty() && !unavailable;
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "plugins": router.plugins(),
            "poisoned": poisoned,
            "failed": failed,
            "overloaded": overloaded,
            "calls_past_deadline": past_deadline,
            "processes": processes,
        });
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &body)
    }

    /// Answers a request that has a body to read, or whose route runs on the blocking pool.
    async fn answer_later<B>(&self, request: http::Request<B>) -> HttpResponse
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = request.into_parts();
        let exchange = Exchange::start(&parts);
        // `answer_now` answers every request whose path is refused or has no route.
        let Ok(path) = crate::path::normalize(parts.uri.path()) else {
            unreachable!("answer_now answers a request whose path is refused")
        };
        let path = &*path;
        let (Lookup::Found(route), method) = self.find(&parts, path) else {
            unreachable!("answer_now answers every request without a route")
        };
        let read = match self.unless_stopping(self.read_body(&parts, body)).await {
            Some(read) => read,
            None => Err(stopping(&route, method)),
        };
        let response = match read {
            Err(response) => response,
            Ok(body) if route.awaits() => {
                self.call_remote(&route, &parts, method, path, &body).await
            }
            Ok(body) => match self.admit_inline(&route) {
                Some(_slot) => self.call_inline(&route, &parts, method, path, &body),
                None => self.call_blocking(&route, &parts, method, path, body).await,
            },
        };
        exchange.finish(&parts, response, Some(route.plugin()))
    }

    /// Reads the body, refusing one over the limit (announced or actual) with 413.
    async fn read_body<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Bytes, HttpResponse>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.shared.body_limit;
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let read = tokio::time::timeout(
            self.shared.body_timeout,
            Limited::new(body, limit).collect(),
        );
        let Ok(read) = read.await else {
            let error = format!(
                "the request body did not arrive in full within {:?}",
                self.shared.body_timeout
            );
            return Err(json(
                StatusCode::REQUEST_TIMEOUT,
                &serde_json::json!({ "error": error }),
            ));
        };
        match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
            Err(e) => {
                let error = format!("cannot read the request body: {e}");
                Err(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error }),
                ))
            }
        }
    }

    /// The deadline of a call of `route`.
    fn deadline(&self, route: &RouteMatch<'_, '_>) -> Duration {
        route
            .instance()
            .handler_timeout()
            .unwrap_or(self.shared.handler_timeout)
    }

    /// Calls the handler on this thread (the caller holds an inline slot).
    fn call_inline(
        &self,
        route: &RouteMatch<'_, '_>,
        parts: &http::request::Parts,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> HttpResponse {
        let request = request(method, path, query(parts), &parts.headers, body);
        let (result, took) = self.shared.timed_call(route, &request);
        if took > self.deadline(route) {
            route.instance().deadline_missed();
            return past_deadline(route, method, self.deadline(route));
        }
        result.map_or_else(|error| failure(&error), into_http)
    }

    /// Sends the call to the route's child process and awaits its answer, at most until the
    /// deadline (then 504; the child's late answer is discarded). No thread waits for it.
    async fn call_remote(
        &self,
        route: &RouteMatch<'_, '_>,
        parts: &http::request::Parts,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> HttpResponse {
        // Checked last thing before the call is sent: no call starts once the grace period is
        // over (its body may have arrived just as it ended).
        if self.grace_over() {
            return stopping(route, method);
        }
        let request = request(method, path, query(parts), &parts.headers, body);
        let deadline = self.deadline(route);
        let Some(call) = route.call_async(&request, deadline) else {
            unreachable!("a route that awaits its calls has an asynchronous call")
        };
        let answer = self.unless_stopping(tokio::time::timeout(deadline, call));
        match answer.await {
            Some(Ok(result)) => result.map_or_else(|error| failure(&error), into_http),
            Some(Err(_)) => {
                route.instance().deadline_missed();
                past_deadline(route, method, deadline)
            }
            // Dropping the call forgets it: the child's answer, if it comes, is discarded.
            None => stopping(route, method),
        }
    }

    /// `work`'s output, or `None` as soon as the grace period of a shutdown is over (see
    /// [`end_grace`](Self::end_grace)): then `work` is dropped, or never polled if it was over
    /// already.
    async fn unless_stopping<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        // Made before the flag is read, the wake-up cannot be missed: it sees an `end_grace`
        // from its creation on, polled or not, and one before it stored the flag first. It
        // costs a load until `work` has to wait, and then one registration with the `Notify`.
        let ended = self.shared.grace_end.notified();
        if self.grace_over() {
            return None;
        }
        tokio::select! {
            biased;
            output = work => Some(output),
            () = ended => None,
        }
    }

    /// Calls the handler on tokio's blocking pool, and answers 504 if it runs past its
    /// deadline (the call runs on to its end; see [`Instance::calls_past_deadline`]).
    ///
    /// [`Instance::calls_past_deadline`]: crate::Instance::calls_past_deadline
    async fn call_blocking(
        &self,
        route: &RouteMatch<'_, '_>,
        parts: &http::request::Parts,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> HttpResponse {
        let instance = route.instance();
        // No call starts once the grace period is over (its body may have arrived just then).
        if self.grace_over() {
            return stopping(route, method);
        }
        let (_, running) = instance.calls_past_deadline();
        if running >= MAX_CALLS_PAST_DEADLINE {
            let error = Error::new(ErrorKind::Overloaded { running }).with_plugin(instance.name());
            return failure(&error);
        }
        let shared = self.shared.clone();
        let owned = (
            method.to_owned(),
            path.to_owned(),
            query(parts).to_owned(),
            parts.headers.clone(),
        );
        let waiter = Waiter {
            outcome: Arc::new(AtomicU8::new(RUNNING)),
            instance: instance.clone(),
        };
        let theirs = waiter.outcome.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let (method, path, query, headers) = owned;
            let request = request(&method, &path, &query, &headers, &body);
            let Lookup::Found(route) = shared.router.lookup(&method, request.path) else {
                unreachable!("the route was found before the call was sent here")
            };
            if theirs.load(Ordering::Acquire) == ABANDONED {
                // Nobody waits for it any more (it waited for a thread past its deadline, or
                // its client went away): the plugin is not called.
                route.instance().abandoned_call_returned();
                return Err(Error::new(ErrorKind::Closed).with_plugin(route.plugin()));
            }
            let (result, took) = shared.timed_call(&route, &request);
            if theirs
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                route.instance().abandoned_call_returned();
                tracing::warn!(
                    target: FAILURE,
                    "{method} {} of plugin `{}` returned after {took:?}, with nobody waiting for it (past its deadline, or its client went away)",
                    route.pattern(),
                    route.plugin(),
                );
            }
            result
        });
        let deadline = self.deadline(route);
        let waited = self.unless_stopping(tokio::time::timeout(deadline, &mut task));
        let result = match waited.await {
            Some(Ok(joined)) => joined,
            // Past the deadline, or at the end of a shutdown's grace period: nobody waits for
            // the call any more (it runs on), unless it returned just then.
            missed => {
                if waiter.give_up() {
                    if missed.is_none() {
                        return stopping(route, method);
                    }
                    instance.deadline_missed();
                    return past_deadline(route, method, deadline);
                }
                task.await
            }
        };
        match result {
            Ok(result) => result.map_or_else(|error| failure(&error), into_http),
            Err(join) => {
                let plugin = instance.name();
                tracing::error!(
                    target: FAILURE,
                    "plugin `{plugin}`: {method} {}: the handler task failed: {join}",
                    route.pattern(),
                );
                let message = format!("the handler for {method} {} failed", route.pattern());
                plugin_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    plugin,
                    "failed",
                    &message,
                )
            }
        }
    }
}

/// The states of a call on the blocking pool: still running, returned, or given up on.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// The server's side of a call on the blocking pool. When it stops waiting before the call
/// returns (the deadline passed, or the client went away and hyper dropped the request's
/// future), the call is counted among those nobody waits for until it returns, so that
/// `MAX_CALLS_PAST_DEADLINE` bounds the pool threads one plugin can hold.
struct Waiter {
    outcome: Arc<AtomicU8>,
    instance: Instance,
}

impl Waiter {
    /// Stops waiting; false if the call returned already.
    fn give_up(&self) -> bool {
        let gave_up = self
            .outcome
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if gave_up {
            self.instance.call_abandoned();
        }
        gave_up
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.give_up();
    }
}

impl Shared {
    /// Calls the route's handler, and records how long it took for the route's pacing.
    fn timed_call(
        &self,
        route: &RouteMatch<'_, '_>,
        request: &Request<'_>,
    ) -> (Result<crate::Response, Error>, Duration) {
        let started = Instant::now();
        let result = route.call(request);
        let took = started.elapsed();
        match route.pacing().record(took >= self.blocking_threshold) {
            Some(Move::Pool) => tracing::warn!(
                "{} {} of plugin `{}` took {took:?}, its third slow call (over {:?}) of the last 8: it runs on the blocking pool until it is fast again",
                request.method,
                route.pattern(),
                route.plugin(),
                self.blocking_threshold,
            ),
            Some(Move::Inline) => tracing::debug!(
                "{} {} of plugin `{}` is fast: it runs inline",
                request.method,
                route.pattern(),
                route.plugin(),
            ),
            None => {}
        }
        (result, took)
    }
}

/// The outcome of [`PluginService::answer_now`].
enum Attempt<B> {
    /// The response, computed without waiting.
    Answered(HttpResponse),
    /// The request, untouched: answering it needs an `await`.
    Deferred(http::Request<B>),
}

/// What every answer shares: the access log line and `HEAD`'s empty body.
struct Exchange {
    /// When the request arrived, if the access log is on.
    started: Option<Instant>,
    head: bool,
}

impl Exchange {
    fn start(request: &http::request::Parts) -> Self {
        let logged = tracing::enabled!(target: ACCESS, tracing::Level::INFO);
        Self {
            started: logged.then(Instant::now),
            head: request.method == Method::HEAD,
        }
    }

    fn finish(
        &self,
        request: &http::request::Parts,
        response: HttpResponse,
        plugin: Option<&str>,
    ) -> HttpResponse {
        if let Some(started) = self.started {
            tracing::info!(
                target: ACCESS,
                method = request.method.as_str(),
                path = request.uri.path(),
                status = response.status().as_u16(),
                duration_us = started.elapsed().as_micros() as u64,
                plugin = plugin.unwrap_or("-"),
            );
        }
        if !self.head {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let len = http_body::Body::size_hint(&body).exact().unwrap_or(0);
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        http::Response::from_parts(parts, Full::default())
    }
}

/// The request's query, without `?`.
fn query(parts: &http::request::Parts) -> &str {
    parts.uri.query().unwrap_or("")
}

/// The host's view of an HTTP request, borrowing everything; `path` is the normalized path.
fn request<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a http::HeaderMap,
    body: &'a [u8],
) -> Request<'a> {
    let mut request = Request {
        method,
        path,
        query,
        body,
        ..Request::default()
    };
    request.headers.reserve(headers.len());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_bytes());
    }
    request
}

fn not_allowed(method: &str, path: &str, allowed: &[&str]) -> HttpResponse {
    let mut allow = allowed.join(", ");
    if allowed.contains(&"GET") && !allowed.contains(&"HEAD") {
        allow.push_str(", HEAD");
    }
    let error = format!("{} is not allowed for {}", clip(method), clip(path));
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({ "error": error, "allow": allow }),
    );
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

impl<B> tower_service::Service<http::Request<B>> for PluginService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn too_large(limit: usize) -> HttpResponse {
    let error = format!("the request body is larger than the limit of {limit} bytes");
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        &serde_json::json!({ "error": error }),
    )
}

/// The response for a call that failed: 500 for a handler error or panic, 502 for a process
/// that ended during the call, 503 for an instance out of service (poisoned, shutting down,
/// overloaded, restarting, backlogged, busy). The body is [`plugin_error`]'s: the status, the
/// plugin and the kind of failure, in words of the host's own. What the plugin said (a handler's
/// reason, a panic message, what a child process answered or wrote) goes to the log line only,
/// with the file and what an operator can do: it may hold internals a client must not see.
fn failure(error: &Error) -> HttpResponse {
    let (status, kind, message) = match error.kind() {
        ErrorKind::HandlerFailed { route, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            format!("the handler for {route} failed"),
        ),
        ErrorKind::Panicked { call, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "panicked",
            format!("the handler panicked during {call}"),
        ),
        ErrorKind::BadPath { reason } => (StatusCode::BAD_REQUEST, "bad_path", reason.clone()),
        ErrorKind::Poisoned { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "poisoned",
            "out of service after a handler panicked".to_owned(),
        ),
        ErrorKind::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "closed",
            "shutting down".to_owned(),
        ),
        ErrorKind::ChildLost { .. } => (
            StatusCode::BAD_GATEWAY,
            "process_ended",
            "its process ended during the call; it is being restarted".to_owned(),
        ),
        ErrorKind::Unavailable { state } => (
            StatusCode::SERVICE_UNAVAILABLE,
            *state,
            format!("its process is {state}"),
        ),
        ErrorKind::Overloaded { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many calls are still running past their deadline".to_owned(),
        ),
        ErrorKind::Backlogged { queued, limit } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "backlogged",
            format!(
                "its process is not reading the calls sent to it ({queued} bytes wait, over the \
                 limit of {limit}); try again later"
            ),
        ),
        ErrorKind::ChildBusy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "its process has as many calls waiting as it takes; try again later".to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            "the plugin failed".to_owned(),
        ),
    };
    if status == StatusCode::BAD_REQUEST {
        // The client's mistake, not the plugin's: the access line records it.
        tracing::debug!(target: FAILURE, "{error}");
    } else if let ErrorKind::Backlogged { .. } | ErrorKind::ChildBusy { .. } = error.kind() {
        // Logged once per episode by the process backend; each call has its access line.
        tracing::debug!(target: FAILURE, "{error}");
    } else {
        tracing::error!(target: FAILURE, "{error}");
    }
    plugin_error(status, error.plugin().unwrap_or("-"), kind, &message)
}

/// The body of every answer about a plugin's failure, whatever runs it (in process, a worker,
/// a program): `{"error": "plugin `NAME`: MESSAGE", "plugin": NAME, "kind": KIND}`. `message` is
/// the host's own words, never text the plugin supplied (see [`failure`]).
fn plugin_error(status: StatusCode, plugin: &str, kind: &str, message: &str) -> HttpResponse {
    json(
        status,
        &serde_json::json!({ "error": format!("plugin `{plugin}`: {message}"), "plugin": plugin, "kind": kind }),
    )
}

/// The response for a call that ran past its deadline: 504, naming the plugin.
fn past_deadline(route: &RouteMatch<'_, '_>, method: &str, deadline: Duration) -> HttpResponse {
    let plugin = route.plugin();
    tracing::error!(
        target: FAILURE,
        "plugin `{plugin}` ({}): {method} {} ran past its deadline of {deadline:?}: its client gets 504; the call itself cannot be cancelled and runs on",
        route.instance().file().map_or_else(|| "built-in".into(), |f| f.display().to_string()),
        route.pattern(),
    );
    let message = format!(
        "it did not answer {method} {} within {deadline:?}",
        route.pattern()
    );
    plugin_error(StatusCode::GATEWAY_TIMEOUT, plugin, "timeout", &message)
}

/// The response for a request still waiting for its plugin when the grace period of a
/// shutdown ended: 503, naming the plugin.
fn stopping(route: &RouteMatch<'_, '_>, method: &str) -> HttpResponse {
    let plugin = route.plugin();
    tracing::debug!(
        target: FAILURE,
        "plugin `{plugin}`: {method} {} was still waiting at the end of the grace period, or came after it: its client gets 503",
        route.pattern(),
    );
    let message = format!(
        "the host is stopping, and {method} {} did not finish within its grace period",
        route.pattern()
    );
    plugin_error(
        StatusCode::SERVICE_UNAVAILABLE,
        plugin,
        "stopping",
        &message,
    )
}

/// At most the first 100 characters of a client's string (a method, a path), for a response.
fn clip(text: &str) -> String {
    const MAX: usize = 100;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Converts a plugin's response.
fn into_http(response: crate::Response) -> HttpResponse {
    let mut out = http::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    *out.headers_mut() = response.headers;
    out
}

/// The future `serve` gives hyper for one request: ready at once, or a boxed `answer_later`.
enum Answer {
    Now(Option<HttpResponse>),
    Later(Pin<Box<dyn Future<Output = HttpResponse> + Send>>),
}

impl Future for Answer {
    type Output = Result<HttpResponse, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Answer::Now(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            Answer::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

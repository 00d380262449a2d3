//! Serving a [`Router`] over HTTP: a `tower::Service` that applications can mount in their own
//! server (axum, hyper, ...), and [`serve`], a hyper 1 server with timeouts, a connection cap
//! and graceful shutdown.

mod connection;
mod inline;
mod scrape;

use crate::error::{Error, ErrorKind, PluginText};
use crate::hook::{ConnectVerdict, Connection, ConnectionStats, RequestVerdict};
use crate::message::{Request, Response};
use crate::metrics::{Failure, METRICS_PATH, Metrics, RouteTable, Series};
use crate::pacing::{Move, Pacing};
use crate::plugin::{HookAnswer, HookCall, Instance, State};
use crate::process::ChildState;
use crate::router::{HookTarget, Lookup, RouteMatch, Router, Steps, StepsNow};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use connection::{ServeOptions, serve};
pub use scrape::serve_metrics;

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
///
/// The router can be replaced while the service runs ([`replace_router`](Self::replace_router)):
/// each request is served from start to end by the router that was current when it arrived.
#[derive(Clone)]
pub struct PluginService {
    shared: Arc<Shared>,
}

/// The service as one request sees it: with the generation that was current when the request
/// arrived ([`PluginService::now`]). Every step of that request, on any thread, uses it, and
/// the generation drains ([`Retired::drain`]) when the last one is dropped.
#[derive(Clone)]
pub(crate) struct Serving {
    shared: Arc<Shared>,
    now: Arc<Generation>,
}

/// A router and what is made for it when the service adopts it: the unit
/// [`PluginService::replace_router`] swaps.
pub(crate) struct Generation {
    router: Router,
    /// The plugins that decide about its connections.
    deciders: Deciders,
    /// The handles of the router's request series, when the service keeps metrics: set when
    /// the generation is made, or by [`PluginService::with_metrics`] for the first one.
    metrics: OnceLock<RouteTable>,
}

impl Generation {
    /// `router`, with the handles of its request series if the service keeps `metrics`.
    fn new(router: Router, metrics: Option<&Metrics>) -> Arc<Self> {
        let generation = Self {
            deciders: Deciders::of(&router),
            router,
            metrics: OnceLock::new(),
        };
        if let Some(metrics) = metrics {
            generation.keep(metrics);
        }
        Arc::new(generation)
    }

    /// Makes the handles of the router's request series in `metrics`, unless it has them.
    fn keep(&self, metrics: &Metrics) {
        self.metrics
            .get_or_init(|| RouteTable::new(metrics, &self.router));
    }
}

/// The plugins that decide about a connection under a router: those with an `on_connect` or
/// `on_disconnect` hook, in order, and whether the router has hooks at all (then each request
/// carries its connection). A connection remembers those of the router it opened under; when a
/// reload changes them, its next answer closes it (`connection: close`), so that the client's
/// next connection is asked about, and told of, by the plugins that serve then. Only the
/// plugins that admitted a connection hear of its end.
#[derive(Clone)]
pub(crate) struct Deciders {
    any_hooks: bool,
    instances: Vec<Instance>,
}

impl Deciders {
    fn of(router: &Router) -> Self {
        Self {
            any_hooks: router.has_hooks(),
            instances: router
                .connection_hooks()
                .map(|(_, lease)| lease.instance().clone())
                .collect(),
        }
    }

    /// Whether `other` names the very same plugin instances.
    #[inline]
    pub(crate) fn same(&self, other: &Deciders) -> bool {
        self.any_hooks == other.any_hooks
            && self.instances.len() == other.instances.len()
            && self
                .instances
                .iter()
                .zip(&other.instances)
                .all(|(a, b)| a.same(b))
    }

    /// Whether `instance` is one of them.
    fn contains(&self, instance: &Instance) -> bool {
        self.instances.iter().any(|known| known.same(instance))
    }
}

/// A router taken out of service by [`PluginService::replace_router`], which requests that
/// arrived before the swap may still be using.
#[must_use = "drain a retired router before stopping its plugins"]
pub struct Retired(Arc<Generation>);

impl Retired {
    /// Whether a request still uses the router.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Waits until no request uses the router any more, or until `limit` has passed, then drops
    /// it; whether every request using it had finished. Only then can its plugins be stopped (a
    /// router's leases keep them from stopping); after `false`, those that a request still
    /// calls stay started until it returns (see [`Instance::close_and_stop`]).
    ///
    /// [`Instance::close_and_stop`]: crate::Instance::close_and_stop It blocks, sleeping in steps of
    /// [`DRAIN_STEP`](crate::limits::DRAIN_STEP): call it on a thread of its own or on tokio's
    /// blocking pool, never on an async worker.
    pub fn drain(self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.in_use() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(crate::limits::DRAIN_STEP);
        }
        true
    }
}

/// The router of a [`PluginService`], as [`PluginService::router`] found it: it stays the same
/// while this guard lives, whatever replaces it in the service meanwhile. Holding it after a
/// [`replace_router`](PluginService::replace_router) keeps the retired router in use: its
/// [`Retired::drain`] waits for the guard too.
pub struct RouterGuard(Arc<Generation>);

impl std::ops::Deref for RouterGuard {
    type Target = Router;

    fn deref(&self) -> &Router {
        &self.0.router
    }
}

/// What every clone of a [`PluginService`] shares.
struct Shared {
    /// The generation that new requests are served by.
    current: arc_swap::ArcSwap<Generation>,
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
    /// The queue of the `on_disconnect` thread, started with the first report (`None` if the
    /// thread could not start).
    disconnects: OnceLock<Option<std::sync::mpsc::SyncSender<(ConnectionStats, Deciders)>>>,
    /// How many connection reports were dropped with the queue full.
    disconnects_dropped: AtomicU64,
    /// The metrics, if kept ([`PluginService::with_metrics`]).
    metrics: Option<Metrics>,
    /// Whether `GET /metrics` is answered here, before the plugin routes.
    metrics_here: bool,
}

impl Shared {
    /// Whether the grace period of a shutdown is over (see [`PluginService::end_grace`]).
    fn grace_over(&self) -> bool {
        self.grace_over.load(Ordering::Acquire)
    }

    /// Reads the body, refusing one over the limit (announced or actual) with 413.
    async fn read_body<B>(&self, headers: &http::HeaderMap, body: B) -> Result<Bytes, Response>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.body_limit;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let read = tokio::time::timeout(self.body_timeout, Limited::new(body, limit).collect());
        let Ok(read) = read.await else {
            let error = format!(
                "the request body did not arrive in full within {:?}",
                self.body_timeout
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

    /// `work`'s output, or `None` as soon as the grace period of a shutdown is over (see
    /// [`PluginService::end_grace`]): then `work` is dropped, or never polled if it was over
    /// already.
    async fn unless_stopping<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        // Made before the flag is read, the wake-up cannot be missed: it sees an `end_grace`
        // from its creation on, polled or not, and one before it stored the flag first. It
        // costs a load until `work` has to wait, and then one registration with the `Notify`.
        let ended = self.grace_end.notified();
        if self.grace_over() {
            return None;
        }
        tokio::select! {
            biased;
            output = work => Some(output),
            () = ended => None,
        }
    }

    /// Warns when `router` routes the path of the metrics this service answers itself.
    fn warn_metrics_routed(&self, router: &Router) {
        if !(self.metrics.is_some() && self.metrics_here) {
            return;
        }
        if let Lookup::Found(route) = router.lookup("GET", METRICS_PATH) {
            tracing::warn!(
                "plugin `{}` routes GET {METRICS_PATH}, which the server answers itself (`serve --metrics off` or an address of their own leave it to the plugin)",
                route.plugin()
            );
        }
    }
}

/// The metrics' answer: 200, in the Prometheus text format.
fn scrape(metrics: &Metrics, router: &Router) -> Response {
    let mut response = Response {
        body: metrics.render(router).into_bytes(),
        ..Response::default()
    };
    response.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// Starts the thread that hands connection reports to the `on_disconnect` hooks; it ends with
/// the service.
fn disconnect_thread(
    shared: std::sync::Weak<Shared>,
) -> Option<std::sync::mpsc::SyncSender<(ConnectionStats, Deciders)>> {
    let (sender, reports) = std::sync::mpsc::sync_channel::<(ConnectionStats, Deciders)>(
        crate::limits::DISCONNECT_QUEUE,
    );
    let started = std::thread::Builder::new()
        .name("on-disconnect".into())
        .spawn(move || {
            for (stats, deciders) in reports {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                // The instances that admitted it and still serve: not one that a reload added
                // since, nor one it replaced (stopping, or stopped). Held as a full reference,
                // which a drain counts: the hooks run on it.
                let now = shared.current.load_full();
                for (_, lease) in now.router.connection_hooks() {
                    if lease.hooks().on_disconnect && deciders.contains(lease.instance()) {
                        lease.on_disconnect(&stats);
                    }
                }
            }
        });
    match started {
        Ok(_) => Some(sender),
        Err(e) => {
            tracing::warn!(
                "cannot start the on_disconnect thread ({e}): no hook is told of closed connections"
            );
            None
        }
    }
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
                current: arc_swap::ArcSwap::new(Generation::new(router, None)),
                body_limit: DEFAULT_BODY_LIMIT,
                blocking_threshold: DEFAULT_BLOCKING_THRESHOLD,
                handler_timeout: DEFAULT_HANDLER_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                inline: OnceLock::new(),
                grace_over: AtomicBool::new(false),
                grace_end: tokio::sync::Notify::new(),
                disconnects: OnceLock::new(),
                disconnects_dropped: AtomicU64::new(0),
                metrics: None,
                metrics_here: false,
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

    /// The router serving new requests.
    pub fn router(&self) -> RouterGuard {
        RouterGuard(self.shared.current.load_full())
    }

    /// Serves new requests with `router` from now on, and gives back the one it replaces, which
    /// the requests already running go on using to their end: [`Retired::drain`] waits for
    /// them. Building `router`, and starting its plugins, is the caller's; the swap itself is one
    /// atomic store.
    pub fn replace_router(&self, router: Router) -> Retired {
        self.shared.warn_metrics_routed(&router);
        let next = Generation::new(router, self.shared.metrics.as_ref());
        Retired(self.shared.current.swap(next))
    }

    /// Keeps `metrics` of the requests this service answers, and answers `GET /metrics` with
    /// them (Prometheus text format), before the plugin routes, as `/healthz`; see
    /// [`metrics`](crate::metrics) for what they count.
    ///
    /// # Panics
    /// If the service was cloned already, or was given metrics already.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        self.keep_metrics(metrics, true)
    }

    /// Keeps the metrics ([`with_metrics`](Self::with_metrics)) without answering `/metrics`
    /// here: the path reaches the plugin routes, and [`serve_metrics`] serves the metrics on an
    /// address of their own.
    ///
    /// # Panics
    /// As [`with_metrics`](Self::with_metrics).
    pub fn with_metrics_elsewhere(self, metrics: Metrics) -> Self {
        self.keep_metrics(metrics, false)
    }

    /// Keeps `metrics`, answering `/metrics` here if `here`.
    fn keep_metrics(mut self, metrics: Metrics, here: bool) -> Self {
        let settings = self.settings();
        assert!(
            settings.metrics.is_none(),
            "a service keeps one set of metrics"
        );
        settings.metrics_here = here;
        let now = settings.current.load();
        now.keep(&metrics);
        settings.metrics = Some(metrics);
        settings.warn_metrics_routed(&now.router);
        drop(now);
        self
    }

    /// The metrics this service keeps, if it keeps any ([`with_metrics`](Self::with_metrics)):
    /// what else the host counts (its reloads, say) goes there too.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.shared.metrics.as_ref()
    }

    /// The metrics as a response: the counters, and the figures of the current router's
    /// plugins. `None` if the service keeps no metrics.
    pub(crate) fn metrics_response(&self) -> Option<Response> {
        let metrics = self.shared.metrics.as_ref()?;
        Some(scrape(metrics, &self.shared.current.load().router))
    }

    /// This service, serving the current generation: what a request is answered by.
    pub(crate) fn now(&self) -> Serving {
        Serving {
            shared: self.shared.clone(),
            now: self.shared.current.load_full(),
        }
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
        let deferred = match self.now().answer_now(request, None) {
            Attempt::Answered(response) => return response,
            Attempt::Deferred(request) => request,
        };
        self.answer_later(deferred, None).await
    }

    /// Answers a request that [`Serving::answer_now`] gave back. Its body is read first, with
    /// no router held, so that a slow upload keeps no router that a reload retired (and its
    /// plugins) from draining; the router current once the body is in serves the request.
    pub(crate) async fn answer_later<B>(
        &self,
        request: http::Request<B>,
        admitted: Option<Arc<Admitted>>,
    ) -> HttpResponse
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let arrived = Instant::now();
        let (mut parts, body) = request.into_parts();
        // Taken out of `parts`, which the route's match borrows: hooks change them.
        let headers = std::mem::take(&mut parts.headers);
        let read = self.shared.read_body(&headers, body);
        let body = self.shared.unless_stopping(read).await;
        (self.now())
            .answer_read(parts, headers, body, admitted, arrived)
            .await
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

    /// Hands what a closed connection did to the `on_disconnect` hooks, on a thread of their
    /// own, never waiting: past [`DISCONNECT_QUEUE`](crate::limits::DISCONNECT_QUEUE) waiting
    /// reports, the report is dropped and counted.
    pub(crate) fn disconnected(&self, stats: ConnectionStats, deciders: Deciders) {
        let queue = self
            .shared
            .disconnects
            .get_or_init(|| disconnect_thread(Arc::downgrade(&self.shared)));
        let Some(queue) = queue else { return };
        if queue.try_send((stats, deciders)).is_err() {
            let dropped = self
                .shared
                .disconnects_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    "{dropped} connection report(s) dropped in all: the on_disconnect hooks take them more slowly than connections close"
                );
            }
        }
    }
}

impl Serving {
    /// Runs the `on_connect` hooks of a new connection, in registration order, up to the first
    /// that refuses it; whether it is accepted. A hook that fails, panics or runs past its
    /// deadline refuses it (fail closed); an in-process hook runs on the blocking pool, a
    /// process's is awaited, each with its deadline. A plugin out of service (poisoned, its process restarting, ...) cannot decide:
    /// the connection is accepted, closed by it (its first request answers 503 naming the
    /// plugin and closes it, but `/healthz`, which says why), so that one plugin never makes
    /// the host unreachable, and a client that connects again is asked about again.
    pub(crate) async fn admit_connection(&self, admitted: &Admitted) -> bool {
        let connection = &admitted.connection;
        for (index, lease) in self.now.router.connection_hooks() {
            if !lease.hooks().on_connect {
                continue;
            }
            let instance = lease.instance();
            let call = Call::Hook(instance.name().to_owned(), "on_connect");
            let deadline = self.deadline(instance);
            let answer = match lease.hook_async(HookCall::Connect(connection), deadline) {
                Some(answer) => self.waited(instance, &call, deadline, answer).await,
                // On the blocking pool, with its deadline: never on a worker, which a hung hook
                // would hold without an inline slot's watchdog.
                None => {
                    let connection = connection.clone();
                    let job = move |service: &Serving| {
                        Ok(service
                            .now
                            .router
                            .lease(index)
                            .hook(HookCall::Connect(&connection)))
                    };
                    self.on_pool(instance, &call, job).await
                }
            };
            match answer {
                Ok(Ok(HookAnswer::Connect(ConnectVerdict::Accept))) => {}
                Ok(Ok(HookAnswer::Connect(ConnectVerdict::Refuse(reason)))) => {
                    tracing::debug!(
                        target: FAILURE,
                        "plugin `{}` refused the connection from {}{}",
                        instance.name(),
                        connection.client,
                        reason.map_or_else(String::new, |r| format!(": {}", PluginText::from(r))),
                    );
                    return false;
                }
                Ok(Ok(_)) => unreachable!("an on_connect call is answered by a connect verdict"),
                Ok(Err(error)) if out_of_service(&error) => {
                    tracing::debug!(target: FAILURE, "{error}: its connections answer 503");
                    let _ = admitted.closed_by.set(error);
                    return true;
                }
                Ok(Err(error)) => {
                    failure(&error);
                    return false;
                }
                // Logged by `past_deadline` or `stopping`; the connection closes unanswered.
                Err(_) => return false,
            }
        }
        true
    }

    /// Answers without waiting when nothing needs an `await`: no body to read, no hook, and a
    /// route that runs inline (or no route at all). Otherwise gives the request back, untouched.
    /// This keeps the common case (a GET) free of a large future and of a heap allocation.
    ///
    /// `admitted` is the connection the request came on, when [`serve`] accepted it with hooks.
    fn answer_now<B: http_body::Body>(
        &self,
        request: http::Request<B>,
        admitted: Option<&Admitted>,
    ) -> Attempt<B> {
        let (parts, body) = request.into_parts();
        let exchange = self.exchange(&parts, None);
        let path = match crate::path::normalize(parts.uri.path()) {
            Ok(path) => path,
            Err(e) => {
                let response = json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": e.to_string() }),
                );
                return Attempt::Answered(exchange.finish(&parts, response, By::NONE));
            }
        };
        let path = &*path;
        if path == HEALTH_PATH {
            let response = match parts.method {
                Method::GET | Method::HEAD => self.health(),
                _ => not_allowed(parts.method.as_str(), path, &["GET"]),
            };
            return Attempt::Answered(exchange.finish(&parts, response, By::NONE));
        }
        if path == METRICS_PATH
            && self.shared.metrics_here
            && let Some(metrics) = &self.shared.metrics
        {
            let response = match parts.method {
                Method::GET | Method::HEAD => scrape(metrics, &self.now.router),
                _ => not_allowed(parts.method.as_str(), path, &["GET"]),
            };
            return Attempt::Answered(exchange.finish(&parts, response, By::NONE));
        }
        if let Some(admitted) = admitted
            && let Some(error) = admitted.closed_by.get()
        {
            // Closed after the answer: a new connection asks the `on_connect` hooks again.
            let mut response = failure(error);
            response
                .headers
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return Attempt::Answered(exchange.finish(&parts, response, By::NONE));
        }
        if self.now.router.hooks_see(path) {
            let inline = body.is_end_stream().then(|| {
                let (found, method) = self.find(&parts, path);
                let mut request = plugin_request(method, path, query(&parts), &parts.headers, &[]);
                request.connection = admitted.map(|admitted| &admitted.connection);
                let client_method = parts.method.as_str();
                let response = self.exchange_inline(&found, &request, &Bytes::new(), client_method);
                response.map(|(response, by)| (response, self.answerer(by, &found)))
            });
            if let Some(Some((response, plugin))) = inline {
                return Attempt::Answered(exchange.finish(&parts, response, plugin));
            }
            return Attempt::Deferred(http::Request::from_parts(parts, body));
        }
        let (found, method) = self.find(&parts, path);
        let (response, plugin) = match found {
            Lookup::Found(route) if body.is_end_stream() && !route.awaits() => {
                match self.admit_inline(route.pacing()) {
                    Some(_slot) => {
                        let request =
                            plugin_request(method, path, query(&parts), &parts.headers, &[]);
                        (self.call_inline(&route, &request, None), By::route(&route))
                    }
                    None => return Attempt::Deferred(http::Request::from_parts(parts, body)),
                }
            }
            Lookup::Found(_) => return Attempt::Deferred(http::Request::from_parts(parts, body)),
            Lookup::MethodNotAllowed(allowed) => {
                (not_allowed(parts.method.as_str(), path, &allowed), By::NONE)
            }
            Lookup::NotFound => (not_found(path), By::NONE),
        };
        Attempt::Answered(exchange.finish(&parts, response, plugin))
    }

    /// [`answer_now`](Self::answer_now) for a request read off the wire by [`serve`]: an
    /// HTTP/1.1 request without `Host` is 400 (RFC 9112, section 3.2). The `tower::Service`
    /// leaves that rule to the server it is mounted in, since its callers may build requests
    /// themselves.
    fn answer_wire<B: http_body::Body>(
        &self,
        request: http::Request<B>,
        admitted: Option<&Admitted>,
    ) -> Attempt<B> {
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(HOST) {
            let (parts, _) = request.into_parts();
            let error = "an HTTP/1.1 request must have a Host header (RFC 9112, section 3.2)";
            let response = json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": error }),
            );
            return Attempt::Answered(self.exchange(&parts, None).finish(
                &parts,
                response,
                By::NONE,
            ));
        }
        self.answer_now(request, admitted)
    }

    /// Lets a call paced by `pacing` run inline, on this worker, if it has earned it and fewer
    /// than `workers - 1` calls run inline now; the slot is freed when dropped.
    #[inline]
    fn admit_inline(&self, pacing: &Pacing) -> Option<inline::Admitted<'_>> {
        if !pacing.inline() {
            return None;
        }
        self.admit_slot()
    }

    /// An inline slot, if fewer than `workers - 1` calls run inline now.
    #[inline]
    fn admit_slot(&self) -> Option<inline::Admitted<'_>> {
        let inline = self.shared.inline.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok();
            let workers = runtime.as_ref().map_or(1, |h| h.metrics().num_workers());
            inline::Inline::new(workers.saturating_sub(1), runtime)
        });
        inline.admit()
    }

    /// Runs a request through its hooks and route on this thread, holding one inline slot for
    /// the whole exchange, when every call of it has earned to run inline (its hooks' and its
    /// route's, all in this process) and a slot is free; `None` otherwise, and then nothing
    /// ran.
    /// Taking one slot per exchange rather than one per call keeps a chain of fast hooks off the
    /// blocking pool when other workers run calls too.
    /// Also says which hook target answered instead of the route, if one did.
    fn exchange_inline(
        &self,
        found: &Lookup<'_, '_>,
        request: &Request<'_>,
        body: &Bytes,
        client_method: &str,
    ) -> Option<(Response, Option<usize>)> {
        let router = &self.now.router;
        let route_inline = match found {
            Lookup::Found(route) => !route.awaits() && route.pacing().inline(),
            _ => true,
        };
        if !route_inline || !router.hooks_inline(request.path) {
            return None;
        }
        let _slot = self.admit_slot()?;
        Some(self.exchange_here(found, request, body, client_method, None))
    }

    /// Runs an exchange whose every call is made on this thread, inline or in a job on the
    /// blocking pool (`progress`); also says which hook target answered instead of the route.
    fn exchange_here(
        &self,
        found: &Lookup<'_, '_>,
        request: &Request<'_>,
        body: &Bytes,
        client_method: &str,
        progress: Option<&Progress>,
    ) -> (Response, Option<usize>) {
        let steps = Served {
            service: self,
            found,
            client_method,
            body,
            progress,
            answered_by: Answerer::default(),
        };
        // Every step is a call on this thread.
        let answer = self.now.router.exchange_now(&steps, request);
        (
            answer.unwrap_or_else(|response| response),
            steps.answered_by.get(),
        )
    }

    /// Runs a request through its hooks and route as one job on the blocking pool, when every
    /// call of it is in this process (a call to a child process is awaited, step by step,
    /// instead); `None` otherwise. One job rather than one per call: a hop to the pool costs
    /// microseconds, a plugin call nanoseconds. The job says which call it runs, so that the
    /// server answers 504 at that call's deadline and blames its plugin (see
    /// [`on_pool_tracked`](Self::on_pool_tracked)).
    fn exchange_pooled(
        &self,
        found: &Lookup<'_, '_>,
        request: &Request<'_>,
        body: &Bytes,
        client_method: &str,
    ) -> Option<impl Future<Output = (Response, Option<usize>)> + Send + use<>> {
        let router = &self.now.router;
        if !router.hooks_local(request.path) {
            return None;
        }
        if let Lookup::Found(route) = found
            && route.awaits()
        {
            return None;
        }
        let first = router.first_hook(request.path)?;
        let route = match found {
            Lookup::Found(route) => Some(route.instance()),
            _ => None,
        };
        let shortest = router
            .hook_instances(request.path)
            .chain(route)
            .map(|instance| self.deadline(instance))
            .min()
            .unwrap_or(self.shared.handler_timeout);
        let progress = Arc::new(Progress::new(
            first.clone(),
            Call::Hook(first.name().to_owned(), "on_request"),
            shortest,
        ));
        let owned = OwnedRequest::new(request, body);
        let client_method = client_method.to_owned();
        let service = self.clone();
        Some(async move {
            let pooled = service.clone();
            let job = move |service: &Serving, progress: &Progress| {
                let request = owned.view();
                let found = service.now.router.lookup(request.method, request.path);
                let body = &owned.body;
                Ok(pooled.exchange_here(&found, &request, body, &client_method, Some(progress)))
            };
            service
                .on_pool_tracked(progress, job)
                .await
                .unwrap_or_else(|response| (response, None))
        })
    }

    /// Finds the request's route. `HEAD` uses the path's `GET` route when it has no `HEAD` route
    /// of its own. Returns the method the handler sees.
    fn find<'r, 'p>(
        &'r self,
        parts: &'p http::request::Parts,
        path: &'p str,
    ) -> (Lookup<'r, 'p>, &'p str) {
        let method = parts.method.as_str();
        let router = &self.now.router;
        match router.lookup(method, path) {
            Lookup::Found(route) => (Lookup::Found(route), method),
            _ if parts.method == Method::HEAD => (router.lookup("GET", path), "GET"),
            other => (other, method),
        }
    }

    /// `GET /healthz`: 200 when every plugin serves, 503 when one is out of service (poisoned
    /// by a panic, failed, or refusing calls with too many still running past their deadline).
    fn health(&self) -> Response {
        let router = &self.now.router;
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

    /// Answers a request that has a body to read, passes hooks, or whose route runs on the
    /// blocking pool or in a child process, once its body is in ([`PluginService::answer_later`]
    /// read it, `None` if the grace period of a shutdown ended meanwhile). `arrived`: when its
    /// head did.
    async fn answer_read(
        &self,
        parts: http::request::Parts,
        headers: http::HeaderMap,
        body: Option<Result<Bytes, Response>>,
        admitted: Option<Arc<Admitted>>,
        arrived: Instant,
    ) -> HttpResponse {
        let exchange = self.exchange(&parts, Some(arrived));
        // `answer_now` answers every request whose path is refused.
        let Ok(path) = crate::path::normalize(parts.uri.path()) else {
            unreachable!("answer_now answers a request whose path is refused")
        };
        let path = &*path;
        let (found, method) = self.find(&parts, path);
        let plugin = found_plugin(&found);
        let body = match body {
            Some(Ok(body)) => body,
            Some(Err(response)) => return exchange.finish(&parts, response, plugin),
            None => {
                let response = match &found {
                    Lookup::Found(route) => stopping(route.instance(), &Call::route(route, method)),
                    _ => host_stopping(),
                };
                return exchange.finish(&parts, response, plugin);
            }
        };
        let mut request = plugin_request(method, path, query(&parts), &headers, &body);
        request.connection = admitted.as_deref().map(|admitted| &admitted.connection);
        let response = if self.now.router.hooks_see(path) {
            let client_method = parts.method.as_str();
            // A slot may have come free since `answer_now` found none: then no hop to the pool.
            let (response, by) = if let Some(answered) =
                self.exchange_inline(&found, &request, &body, client_method)
            {
                answered
            } else if let Some(pooled) =
                self.exchange_pooled(&found, &request, &body, client_method)
            {
                pooled.await
            } else {
                let steps = Served {
                    service: self,
                    found: &found,
                    client_method,
                    body: &body,
                    progress: None,
                    answered_by: Answerer::default(),
                };
                match self.now.router.exchange(&steps, &request).await {
                    Ok(response) | Err(response) => (response, steps.answered_by.get()),
                }
            };
            return exchange.finish(&parts, response, self.answerer(by, &found));
        } else {
            // The router that serves it may be newer than the one `answer_now` looked at.
            match &found {
                Lookup::Found(route) => self.call_route(route, &request, &body).await,
                Lookup::MethodNotAllowed(allowed) => {
                    not_allowed(parts.method.as_str(), path, allowed)
                }
                Lookup::NotFound => not_found(path),
            }
        };
        exchange.finish(&parts, response, plugin)
    }

    /// The deadline of a call (a handler or a hook) of `instance`.
    fn deadline(&self, instance: &Instance) -> Duration {
        instance
            .handler_timeout()
            .unwrap_or(self.shared.handler_timeout)
    }

    /// Calls the route: inline when it has earned it and a slot is free, on the blocking pool
    /// otherwise, or awaited from its child process.
    async fn call_route(
        &self,
        route: &RouteMatch<'_, '_>,
        request: &Request<'_>,
        body: &Bytes,
    ) -> Response {
        if route.awaits() {
            return self.call_remote(route, request).await;
        }
        match self.admit_inline(route.pacing()) {
            Some(_slot) => self.call_inline(route, request, None),
            None => self.call_blocking(route, request, body).await,
        }
    }

    /// Calls the handler on this thread (the caller holds an inline slot, or runs a pooled job
    /// whose `progress` it is).
    fn call_inline(
        &self,
        route: &RouteMatch<'_, '_>,
        request: &Request<'_>,
        progress: Option<&Progress>,
    ) -> Response {
        let call = || Call::route(route, request.method);
        let (result, took) = self
            .shared
            .timed(route.pacing(), call, || route.call(request));
        let deadline = self.deadline(route.instance());
        if took > deadline {
            return late(route.instance(), &call(), deadline, progress);
        }
        result.unwrap_or_else(|error| failure(&error))
    }

    /// Sends the call to the route's child process and awaits its answer, at most until the
    /// deadline (then 504; the child's late answer is discarded). No thread waits for it.
    async fn call_remote(&self, route: &RouteMatch<'_, '_>, request: &Request<'_>) -> Response {
        let call = Call::route(route, request.method);
        // Checked last thing before the call is sent: no call starts once the grace period is
        // over (its body may have arrived just as it ended).
        if self.shared.grace_over() {
            return stopping(route.instance(), &call);
        }
        let deadline = self.deadline(route.instance());
        let Some(answer) = route.call_async(request, deadline) else {
            unreachable!("a route that awaits its calls has an asynchronous call")
        };
        self.awaited(route.instance(), &call, deadline, answer)
            .await
            .unwrap_or_else(|response| response)
    }

    /// Calls a hook of the instance of hook target number `index`, as a route's handler is
    /// called: awaited from its child process, inline when it has earned it and a slot is free,
    /// or on the blocking pool; with the instance's deadline. A failure is the answer the client
    /// gets.
    async fn call_hook(
        &self,
        index: usize,
        call: HookCall<'_, '_>,
        body: &Bytes,
    ) -> Result<HookAnswer, Response> {
        let router = &self.now.router;
        let target = router.hook_target(index);
        let lease = router.hook_lease(target);
        let instance = lease.instance();
        let what = Call::Hook(instance.name().to_owned(), call.name());
        let deadline = self.deadline(instance);
        if lease.is_remote() {
            if self.shared.grace_over() {
                return Err(stopping(instance, &what));
            }
            let Some(answer) = lease.hook_async(call, deadline) else {
                unreachable!("a hook of a plugin in a child process is awaited")
            };
            return self.awaited(instance, &what, deadline, answer).await;
        }
        if let Some(_slot) = self.admit_inline(&target.pacing) {
            return self.hook_inline(target, call, None);
        }
        let owned = OwnedCall::new(call, body);
        let pooled = what.clone();
        self.on_pool(instance, &what, move |service| {
            let target = service.now.router.hook_target(index);
            let request = owned.request.view();
            let call = match &owned.response {
                Some(response) => HookCall::Response(&request, response),
                None => HookCall::Request(&request),
            };
            let lease = service.now.router.hook_lease(target);
            service
                .shared
                .timed(&target.pacing, || pooled.clone(), || lease.hook(call))
                .0
        })
        .await
    }

    /// Calls an in-process hook on this thread (the caller holds an inline slot): 504 when it
    /// returns past its deadline.
    #[expect(
        clippy::result_large_err,
        reason = "the error is the client's answer, moved to it once; as the async steps' errors"
    )]
    fn hook_inline(
        &self,
        target: &HookTarget,
        call: HookCall<'_, '_>,
        progress: Option<&Progress>,
    ) -> Result<HookAnswer, Response> {
        let lease = self.now.router.hook_lease(target);
        let instance = lease.instance();
        let hook = call.name();
        let what = || Call::Hook(instance.name().to_owned(), hook);
        let (result, took) = self.shared.timed(&target.pacing, what, || lease.hook(call));
        let deadline = self.deadline(instance);
        if took > deadline {
            return Err(late(instance, &what(), deadline, progress));
        }
        result.map_err(|error| failure(&error))
    }

    /// Awaits the answer of a call to a child process at most `deadline` (then 504, counted),
    /// or until the grace period of a shutdown ends (then 503).
    async fn awaited<T>(
        &self,
        instance: &Instance,
        call: &Call,
        deadline: Duration,
        answer: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Response> {
        self.waited(instance, call, deadline, answer)
            .await?
            .map_err(|error| failure(&error))
    }

    /// [`awaited`](Self::awaited), with the call's own error left to the caller.
    async fn waited<T>(
        &self,
        instance: &Instance,
        call: &Call,
        deadline: Duration,
        answer: impl Future<Output = Result<T, Error>>,
    ) -> Result<Result<T, Error>, Response> {
        match self
            .shared
            .unless_stopping(tokio::time::timeout(deadline, answer))
            .await
        {
            Some(Ok(result)) => Ok(result),
            Some(Err(_)) => {
                instance.deadline_missed();
                Err(past_deadline(instance, call, deadline))
            }
            // Dropping the call forgets it: the child's answer, if it comes, is discarded.
            None => Err(stopping(instance, call)),
        }
    }

    /// Calls the handler on tokio's blocking pool (see [`on_pool`](Self::on_pool)).
    async fn call_blocking(
        &self,
        route: &RouteMatch<'_, '_>,
        request: &Request<'_>,
        body: &Bytes,
    ) -> Response {
        let call = Call::route(route, request.method);
        let owned = OwnedRequest::new(request, body);
        let pooled = call.clone();
        self.on_pool(route.instance(), &call, move |service| {
            let request = owned.view();
            let Lookup::Found(route) = service.now.router.lookup(request.method, request.path)
            else {
                unreachable!("the route was found before the call was sent here")
            };
            service
                .shared
                .timed(route.pacing(), || pooled.clone(), || route.call(&request))
                .0
        })
        .await
        .unwrap_or_else(|response| response)
    }

    /// Runs a call of `instance` on tokio's blocking pool, and answers 504 if it runs past its
    /// deadline (the call runs on to its end; see [`Instance::calls_past_deadline`]).
    ///
    /// [`Instance::calls_past_deadline`]: crate::Instance::calls_past_deadline
    async fn on_pool<T: Send + 'static>(
        &self,
        instance: &Instance,
        call: &Call,
        job: impl FnOnce(&Serving) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Response> {
        let progress = Arc::new(Progress::new(
            instance.clone(),
            call.clone(),
            self.deadline(instance),
        ));
        self.on_pool_tracked(progress, move |service, _| job(service))
            .await
    }

    /// Runs a job of one or more calls on tokio's blocking pool. The job says which call it
    /// runs through `progress` (which starts at the first); each is waited for at most its own
    /// instance's deadline from its start, and the one past it is answered 504 and counted
    /// (the job runs on to its end: a call cannot be cancelled).
    async fn on_pool_tracked<T: Send + 'static>(
        &self,
        progress: Arc<Progress>,
        job: impl FnOnce(&Serving, &Progress) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Response> {
        let (first, call) = progress.current();
        // No call starts once the grace period is over (its body may have arrived just then).
        if self.shared.grace_over() {
            return Err(stopping(&first, &call));
        }
        let (_, running) = first.calls_past_deadline();
        if running >= MAX_CALLS_PAST_DEADLINE {
            let error = Error::new(ErrorKind::Overloaded { running }).with_plugin(first.name());
            return Err(failure(&error));
        }
        let service = self.clone();
        let waiter = Waiter {
            outcome: Arc::new(AtomicU8::new(RUNNING)),
            progress: progress.clone(),
        };
        let (theirs, progress) = (waiter.outcome.clone(), progress);
        let mut task = tokio::task::spawn_blocking(move || {
            if theirs.load(Ordering::Acquire) == ABANDONED {
                // Nobody waits for it any more (it waited for a thread past its deadline, or
                // its client went away): the plugin is not called.
                let (blamed, _) = progress.returned();
                return Err(Error::new(ErrorKind::Closed).with_plugin(blamed.name()));
            }
            let started = Instant::now();
            let result = job(&service, &progress);
            if theirs
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                let (_, blamed) = progress.returned();
                tracing::warn!(
                    target: FAILURE,
                    "{} returned after {:?}, with nobody waiting for it (past its deadline, or its client went away)",
                    blamed.describe(),
                    started.elapsed(),
                );
            }
            result
        });
        let progress = &waiter.progress;
        let result = loop {
            let (instance, since) = progress.since();
            let deadline = self.deadline(&instance);
            // Looked at again at least every `shortest`, the shortest deadline of the calls the
            // job may make: a later call may have a shorter deadline than this one.
            let until = (since + deadline).min(Instant::now() + progress.shortest);
            let until = tokio::time::Instant::from_std(until);
            let waited = self
                .shared
                .unless_stopping(tokio::time::timeout_at(until, &mut task));
            match waited.await {
                Some(Ok(joined)) => break joined,
                // Not past the deadline of the call that runs now.
                Some(Err(_)) if progress.since().1 != since || since.elapsed() < deadline => {}
                // Past the deadline, or at the end of a shutdown's grace period: nobody waits
                // for the call any more (it runs on), unless it returned just then.
                missed => {
                    let (instance, call) = progress.current();
                    if waiter.give_up() {
                        if missed.is_none() {
                            return Err(stopping(&instance, &call));
                        }
                        instance.deadline_missed();
                        return Err(past_deadline(&instance, &call, deadline));
                    }
                    break task.await;
                }
            }
        };
        match result {
            Ok(result) => result.map_err(|error| failure(&error)),
            Err(join) => {
                let (instance, call) = waiter.progress.current();
                tracing::error!(
                    target: FAILURE,
                    "{}: the task of the call failed: {join}",
                    call.describe(),
                );
                Err(plugin_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    instance.name(),
                    "failed",
                    &call.failed(),
                ))
            }
        }
    }
}

/// Which call a job on the blocking pool runs, and since when (see
/// [`PluginService::on_pool_tracked`]), and which instance was blamed when the server stopped
/// waiting for it.
struct Progress {
    running: parking_lot::Mutex<Running>,
    /// The shortest deadline of the calls the job may make.
    shortest: Duration,
}

struct Running {
    instance: Instance,
    call: Call,
    since: Instant,
    /// The call counted as one nobody waits for, and its instance (see [`Waiter`]).
    blamed: Option<(Instance, Call)>,
}

impl Progress {
    /// A job whose first call is `call` of `instance`, starting now; none of its calls has a
    /// deadline shorter than `shortest`.
    fn new(instance: Instance, call: Call, shortest: Duration) -> Self {
        Self {
            running: parking_lot::Mutex::new(Running {
                instance,
                call,
                since: Instant::now(),
                blamed: None,
            }),
            shortest,
        }
    }

    /// Says that the job starts `call` of `instance` now, unless the instance has too many
    /// calls running past their deadline already (then the answer is 503, as for one call).
    #[expect(
        clippy::result_large_err,
        reason = "the error is the client's answer, moved to it once; as the async steps' errors"
    )]
    fn enter(&self, instance: &Instance, call: Call) -> Result<(), Response> {
        let (_, running) = instance.calls_past_deadline();
        if running >= MAX_CALLS_PAST_DEADLINE {
            let error = Error::new(ErrorKind::Overloaded { running }).with_plugin(instance.name());
            return Err(failure(&error));
        }
        let mut running = self.running.lock();
        running.instance = instance.clone();
        running.call = call;
        running.since = Instant::now();
        Ok(())
    }

    /// The call running now.
    fn current(&self) -> (Instance, Call) {
        let running = self.running.lock();
        (running.instance.clone(), running.call.clone())
    }

    /// The instance of the call running now, and since when it runs.
    fn since(&self) -> (Instance, Instant) {
        let running = self.running.lock();
        (running.instance.clone(), running.since)
    }

    /// Counts the call the server stopped waiting for as running with nobody waiting for it.
    fn abandon(&self) {
        let mut running = self.running.lock();
        running.instance.call_abandoned();
        running.blamed = Some((running.instance.clone(), running.call.clone()));
    }

    /// Whether the server stopped waiting for the job: a call of it that returns late is
    /// counted and answered already.
    fn abandoned(&self) -> bool {
        self.running.lock().blamed.is_some()
    }

    /// Counts the abandoned call as returned; the call and the instance it was counted against.
    fn returned(&self) -> (Instance, Call) {
        let mut running = self.running.lock();
        let blamed = running
            .blamed
            .take()
            .unwrap_or_else(|| (running.instance.clone(), running.call.clone()));
        blamed.0.abandoned_call_returned();
        blamed
    }
}

impl Serving {
    /// Who answered, for the access log and the metrics: the plugin whose hook answered (hook
    /// target `by`), or else the one whose route the request found.
    fn answerer<'r>(&'r self, by: Option<usize>, found: &Lookup<'r, '_>) -> By<'r> {
        let router = &self.now.router;
        match by {
            Some(index) => By {
                plugin: Some(
                    router
                        .hook_lease(router.hook_target(index))
                        .instance()
                        .name(),
                ),
                series: Series::Hook(index),
            },
            None => found_plugin(found),
        }
    }
}

/// The route a request found as who answered it, for the access log and the metrics.
fn found_plugin<'r>(found: &Lookup<'r, '_>) -> By<'r> {
    match found {
        Lookup::Found(route) => By::route(route),
        _ => By::NONE,
    }
}

/// Who answered a request: the plugin the access log names, and the request series the
/// metrics count it in.
#[derive(Clone, Copy)]
struct By<'r> {
    plugin: Option<&'r str>,
    series: Series,
}

impl<'r> By<'r> {
    /// No plugin: the server answered (no route, `/healthz`, a refused request).
    const NONE: By<'static> = By {
        plugin: None,
        series: Series::Unrouted,
    };

    /// The route's plugin.
    fn route(route: &RouteMatch<'r, '_>) -> Self {
        By {
            plugin: Some(route.plugin()),
            series: Series::Route(route.id()),
        }
    }
}

/// A connection the `on_connect` hooks accepted, as each of its requests carries it.
pub(crate) struct Admitted {
    /// Its addresses.
    pub(crate) connection: Connection,
    /// The plugins that decided about it (see [`Deciders`]): only they hear of its end.
    pub(crate) deciders: Deciders,
    /// Why its requests answer 503: a plugin with an `on_connect` hook was out of service when
    /// it was accepted (`/healthz` still answers).
    pub(crate) closed_by: OnceLock<Error>,
}

/// Whether `error` says a plugin is out of service (an HTTP server answers 503), rather than
/// that its call failed.
fn out_of_service(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Poisoned { .. }
            | ErrorKind::Closed
            | ErrorKind::Unavailable { .. }
            | ErrorKind::Overloaded { .. }
            | ErrorKind::Backlogged { .. }
            | ErrorKind::ChildBusy { .. }
    )
}

/// The steps of an exchange served over HTTP: as [`Steps`] (`Router::exchange`), each hook call
/// as [`PluginService::call_hook`] runs it and the route as [`PluginService::call_route`] does;
/// as [`StepsNow`] (`Router::exchange_now`), every call on this thread, the caller holding an
/// inline slot for the whole exchange (see [`PluginService::exchange_inline`]) or running it on
/// the blocking pool (see [`PluginService::exchange_pooled`]). A request without a route is
/// answered 404 or 405, which the response hooks see.
struct Served<'a, 'r, 'p> {
    service: &'a Serving,
    found: &'a Lookup<'r, 'p>,
    /// The method the client sent (a `HEAD` reaches a `GET` route as `GET`).
    client_method: &'a str,
    body: &'a Bytes,
    /// On the blocking pool: where the job says which call it runs.
    progress: Option<&'a Progress>,
    /// The hook target whose plugin answered the request (it responded, or failed), if one
    /// did: the access log names it rather than the route's.
    answered_by: Answerer,
}

/// The hook target that answered an exchange, if one did (`usize::MAX`: none): an atomic, as
/// the steps are shared across the exchange's awaits.
struct Answerer(std::sync::atomic::AtomicUsize);

impl Default for Answerer {
    fn default() -> Self {
        Self(std::sync::atomic::AtomicUsize::new(usize::MAX))
    }
}

impl Answerer {
    fn set(&self, index: usize) {
        self.0.store(index, Ordering::Relaxed);
    }

    fn get(&self) -> Option<usize> {
        match self.0.load(Ordering::Relaxed) {
            usize::MAX => None,
            index => Some(index),
        }
    }
}

impl Served<'_, '_, '_> {
    /// Notes the hook target number `index` as the answerer if its hook failed or responded.
    #[expect(
        clippy::result_large_err,
        reason = "the error is the client's answer, moved to it once; as the steps' errors"
    )]
    fn answered(
        &self,
        index: usize,
        result: Result<HookAnswer, Response>,
    ) -> Result<HookAnswer, Response> {
        if let Err(_) | Ok(HookAnswer::Request(RequestVerdict::Respond(_))) = &result {
            self.answered_by.set(index);
        }
        result
    }

    /// The answer without a route: 404 or 405.
    fn unrouted(&self, request: &Request<'_>) -> Response {
        match self.found {
            Lookup::MethodNotAllowed(allowed) => {
                not_allowed(self.client_method, request.path, allowed)
            }
            _ => not_found(request.path),
        }
    }
}

impl Steps for Served<'_, '_, '_> {
    type Stop = Response;

    async fn hook(&self, index: usize, call: HookCall<'_, '_>) -> Result<HookAnswer, Response> {
        let result = self.service.call_hook(index, call, self.body).await;
        self.answered(index, result)
    }

    fn stop(&self, error: Error) -> Response {
        failure(&error)
    }

    async fn route(&self, request: &Request<'_>) -> Result<Response, Response> {
        Ok(match self.found {
            Lookup::Found(route) => self.service.call_route(route, request, self.body).await,
            _ => self.unrouted(request),
        })
    }
}

impl StepsNow for Served<'_, '_, '_> {
    type Stop = Response;

    fn hook(&self, index: usize, call: HookCall<'_, '_>) -> Result<HookAnswer, Response> {
        let router = &self.service.now.router;
        let target = router.hook_target(index);
        if let Some(progress) = self.progress {
            let instance = router.hook_lease(target).instance();
            progress.enter(
                instance,
                Call::Hook(instance.name().to_owned(), call.name()),
            )?;
        }
        let result = self.service.hook_inline(target, call, self.progress);
        self.answered(index, result)
    }

    fn stop(&self, error: Error) -> Response {
        failure(&error)
    }

    fn route(&self, request: &Request<'_>) -> Result<Response, Response> {
        Ok(match self.found {
            Lookup::Found(route) => {
                if let Some(progress) = self.progress
                    && let Err(refused) =
                        progress.enter(route.instance(), Call::route(route, request.method))
                {
                    return Ok(refused);
                }
                self.service.call_inline(route, request, self.progress)
            }
            _ => self.unrouted(request),
        })
    }
}

/// A call the server makes, for its log lines and answers.
#[derive(Clone)]
enum Call {
    /// A route's handler: the plugin, the method and the route's pattern.
    Route(String, String),
    /// A hook: the plugin and the hook's name.
    Hook(String, &'static str),
}

impl Call {
    fn route(route: &RouteMatch<'_, '_>, method: &str) -> Self {
        Call::Route(
            route.plugin().to_owned(),
            format!("{method} {}", route.pattern()),
        )
    }

    /// The call, for the log: `GET /x of plugin `p``.
    fn describe(&self) -> String {
        match self {
            Call::Route(plugin, route) => format!("{route} of plugin `{plugin}`"),
            Call::Hook(plugin, hook) => format!("the {hook} hook of plugin `{plugin}`"),
        }
    }

    /// What the client reads when the call ran past `deadline`.
    fn late(&self, deadline: Duration) -> String {
        match self {
            Call::Route(_, route) => format!("it did not answer {route} within {deadline:?}"),
            Call::Hook(_, hook) => format!("its {hook} hook did not answer within {deadline:?}"),
        }
    }

    /// What the client reads when the call failed in the host.
    fn failed(&self) -> String {
        match self {
            Call::Route(_, route) => format!("the handler for {route} failed"),
            Call::Hook(_, hook) => format!("its {hook} hook failed"),
        }
    }

    /// The call, as the end of a sentence: `GET /x`, `its on_request hook`.
    fn subject(&self) -> String {
        match self {
            Call::Route(_, route) => route.clone(),
            Call::Hook(_, hook) => format!("its {hook} hook"),
        }
    }
}

/// A request owned, for a call that runs on another thread.
struct OwnedRequest {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    body: Bytes,
    connection: Option<Connection>,
}

impl OwnedRequest {
    /// A copy of `request`, whose body is `body`.
    fn new(request: &Request<'_>, body: &Bytes) -> Self {
        Self {
            method: request.method.to_owned(),
            path: request.path.to_owned(),
            query: request.query.to_owned(),
            headers: request.header_map(),
            body: body.clone(),
            connection: request.connection.cloned(),
        }
    }

    /// The request, borrowed.
    fn view(&self) -> Request<'_> {
        let mut request = plugin_request(
            &self.method,
            &self.path,
            &self.query,
            &self.headers,
            &self.body,
        );
        request.connection = self.connection.as_ref();
        request
    }
}

/// A hook call owned, for a call that runs on another thread.
struct OwnedCall {
    request: OwnedRequest,
    /// For `on_response`, the response so far.
    response: Option<Response>,
}

impl OwnedCall {
    fn new(call: HookCall<'_, '_>, body: &Bytes) -> Self {
        match call {
            HookCall::Request(request) => Self {
                request: OwnedRequest::new(request, body),
                response: None,
            },
            HookCall::Response(request, response) => Self {
                request: OwnedRequest::new(request, body),
                response: Some(response.clone()),
            },
            HookCall::Connect(_) => unreachable!("on_connect runs on the connection's task"),
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
    progress: Arc<Progress>,
}

impl Waiter {
    /// Stops waiting; false if the call returned already.
    fn give_up(&self) -> bool {
        let gave_up = self
            .outcome
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if gave_up {
            self.progress.abandon();
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
    /// Makes a call (a handler or a hook), and records how long it took for its pacing.
    /// `call` names the call for the log, made only when a line is written.
    fn timed<T>(
        &self,
        pacing: &Pacing,
        call: impl Fn() -> Call,
        f: impl FnOnce() -> T,
    ) -> (T, Duration) {
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        match pacing.record(took >= self.blocking_threshold) {
            Some(Move::Pool) => tracing::warn!(
                "{} took {took:?}, its third slow call (over {:?}) of the last 8: it runs on the blocking pool until it is fast again",
                call().describe(),
                self.blocking_threshold,
            ),
            Some(Move::Inline) => {
                tracing::debug!("{} is fast: it runs inline", call().describe())
            }
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

/// What every answer shares: the access log line, the metrics and `HEAD`'s empty body.
struct Exchange<'a> {
    /// When the request arrived, if the access log is on or metrics are kept: read once.
    started: Option<Instant>,
    /// Whether the access log is on.
    logged: bool,
    /// The handles of the request series, if metrics are kept.
    metrics: Option<&'a RouteTable>,
    head: bool,
}

impl Serving {
    /// Starts the answer to `request`.
    /// Starts the answer to `request`, whose head arrived at `arrived` (`None`: now).
    fn exchange(&self, request: &http::request::Parts, arrived: Option<Instant>) -> Exchange<'_> {
        let logged = tracing::enabled!(target: ACCESS, tracing::Level::INFO);
        let metrics = self.now.metrics.get();
        Exchange {
            started: (logged || metrics.is_some()).then(|| arrived.unwrap_or_else(Instant::now)),
            logged,
            metrics,
            head: request.method == Method::HEAD,
        }
    }
}

impl Exchange<'_> {
    /// Writes the access log line and counts the request in the series of `by`; strips the
    /// mark of a host failure answer (see [`plugin_error`]), which the client never sees.
    fn finish(
        &self,
        request: &http::request::Parts,
        mut response: Response,
        by: By<'_>,
    ) -> HttpResponse {
        let failure = response.failure;
        if let Some(started) = self.started {
            let took = started.elapsed();
            if self.logged {
                tracing::info!(
                    target: ACCESS,
                    method = request.method.as_str(),
                    path = request.uri.path(),
                    status = response.status,
                    duration_us = took.as_micros() as u64,
                    plugin = by.plugin.unwrap_or("-"),
                );
            }
            if let Some(metrics) = self.metrics {
                metrics
                    .handles(by.series)
                    .record(response.status, failure, took);
            }
        }
        if self.head {
            let len = response.body.len();
            response
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
            response.body = Vec::new();
        }
        into_http(response)
    }
}

/// The request's query, without `?`.
fn query(parts: &http::request::Parts) -> &str {
    parts.uri.query().unwrap_or("")
}

/// The host's view of an HTTP request, borrowing everything; `path` is the normalized path.
fn plugin_request<'a>(
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

fn not_allowed(method: &str, path: &str, allowed: &[&str]) -> Response {
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
        response.headers.insert(ALLOW, value);
    }
    response
}

/// The answer for a path that no route matches: 404.
fn not_found(path: &str) -> Response {
    let error = format!("no route matches {}", clip(path));
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": error }),
    )
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

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response {
        status: status.as_u16(),
        body: body.to_string().into_bytes(),
        ..Response::default()
    };
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn too_large(limit: usize) -> Response {
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
fn failure(error: &Error) -> Response {
    let (status, kind, message) = match error.kind() {
        ErrorKind::HandlerFailed { route, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            format!("the handler for {route} failed"),
        ),
        ErrorKind::Panicked { call, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "panicked",
            crate::hook::panicked(call),
        ),
        ErrorKind::HookFailed { hook, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            format!("its {hook} hook failed"),
        ),
        ErrorKind::BadPath { reason } => (StatusCode::BAD_REQUEST, "bad_path", reason.clone()),
        ErrorKind::Poisoned { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "poisoned",
            "out of service after it panicked".to_owned(),
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
///
/// It carries its kind for the metrics ([`Response::failure`]), which the client never sees.
fn plugin_error(status: StatusCode, plugin: &str, kind: &str, message: &str) -> Response {
    let mut response = json(
        status,
        &serde_json::json!({ "error": format!("plugin `{plugin}`: {message}"), "plugin": plugin, "kind": kind }),
    );
    response.failure = Some(Failure::of_kind(kind));
    response
}

/// The response for a call that returned past its deadline, run inline or in a pooled job
/// (`progress`): [`past_deadline`]'s, unless the server stopped waiting for the job already,
/// and then counted and logged the call: then one that nobody reads.
fn late(
    instance: &Instance,
    call: &Call,
    deadline: Duration,
    progress: Option<&Progress>,
) -> Response {
    if progress.is_some_and(Progress::abandoned) {
        return plugin_error(
            StatusCode::GATEWAY_TIMEOUT,
            instance.name(),
            "timeout",
            &call.late(deadline),
        );
    }
    instance.deadline_missed();
    past_deadline(instance, call, deadline)
}

/// The response for a call that ran past its deadline: 504, naming the plugin.
fn past_deadline(instance: &Instance, call: &Call, deadline: Duration) -> Response {
    tracing::error!(
        target: FAILURE,
        "plugin `{}` ({}): {} ran past its deadline of {deadline:?}: its client gets 504; the call itself cannot be cancelled and runs on",
        instance.name(),
        instance.file().map_or_else(|| "built-in".into(), |f| f.display().to_string()),
        call.subject(),
    );
    plugin_error(
        StatusCode::GATEWAY_TIMEOUT,
        instance.name(),
        "timeout",
        &call.late(deadline),
    )
}

/// The response for a request still waiting for its plugin when the grace period of a
/// shutdown ended: 503, naming the plugin.
fn stopping(instance: &Instance, call: &Call) -> Response {
    tracing::debug!(
        target: FAILURE,
        "{} was still waiting at the end of the grace period, or came after it: its client gets 503",
        call.describe(),
    );
    let message = format!(
        "the host is stopping, and {} did not finish within its grace period",
        call.subject()
    );
    plugin_error(
        StatusCode::SERVICE_UNAVAILABLE,
        instance.name(),
        "stopping",
        &message,
    )
}

/// The response for a request whose body was still arriving at the end of the grace period of
/// a shutdown, with no route to name a plugin: 503.
fn host_stopping() -> Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "the host is stopping" }),
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

//! Serving a [`Router`] over HTTP: a `tower::Service` that applications can mount in their own
//! server (axum, hyper, ...), and [`serve`], a hyper 1 server with graceful shutdown.

use crate::error::{Error, ErrorKind};
use crate::message::Request;
use crate::router::{Lookup, RouteMatch, Router};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The default limit of a request body: 2 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How long a handler call may take before its route moves to the blocking pool: 10 ms.
pub const DEFAULT_BLOCKING_THRESHOLD: Duration = Duration::from_millis(10);

/// The path the service answers itself, before any plugin route.
pub const HEALTH_PATH: &str = "/healthz";

/// The response type of [`PluginService`].
pub type HttpResponse = http::Response<Full<Bytes>>;

/// The plugin routes as a `tower::Service`: mount it in any tower-based server, or pass it to
/// [`serve`].
///
/// Behaviour: `GET /healthz` answers `{"status":"ok","plugins":[...]}`; an unknown path is 404;
/// a known path with another method is 405 with an `Allow` header; `HEAD` works for every `GET`
/// route; a body over the limit is 413 and never reaches the plugin; a handler error or panic is
/// 500 with a JSON body naming the plugin.
///
/// Handlers are called on the async worker thread that serves the connection: a plugin call
/// costs nanoseconds, and a hop to another thread would cost microseconds on every request.
/// A route whose handler once takes longer than the blocking threshold (10 ms by default) is
/// moved to tokio's blocking pool for good, as Go's scheduler hands a thread stuck in a system
/// call over to another; so a slow plugin stalls at most one worker, once, and never again.
#[derive(Clone)]
pub struct PluginService {
    router: Arc<Router>,
    body_limit: usize,
    blocking_threshold: Duration,
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
        Self {
            router: Arc::new(router),
            body_limit: DEFAULT_BODY_LIMIT,
            blocking_threshold: DEFAULT_BLOCKING_THRESHOLD,
        }
    }

    /// Sets the largest request body accepted, in bytes.
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.body_limit = limit;
        self
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Sets how long a handler call may take before its route is moved to the blocking pool.
    pub fn with_blocking_threshold(mut self, threshold: Duration) -> Self {
        self.blocking_threshold = threshold;
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

    /// Answers without waiting when nothing needs an `await`: no body to read, and a route that
    /// runs inline (or no route at all). Otherwise gives the request back, untouched. This keeps
    /// the common case (a GET) free of a large future and of a heap allocation.
    fn answer_now<B: http_body::Body>(&self, request: http::Request<B>) -> Attempt<B> {
        let (parts, body) = request.into_parts();
        let exchange = Exchange::start(&parts);
        let path = parts.uri.path();
        if path == HEALTH_PATH && matches!(parts.method, Method::GET | Method::HEAD) {
            return Attempt::Answered(exchange.finish(&parts, self.health(), None));
        }
        let (found, method) = self.find(&parts);
        let (response, plugin) = match found {
            Lookup::Found(route) if body.is_end_stream() && !route.offloaded() => {
                let response = self.call_inline(&route, &parts, method, &[]);
                (response, Some(route.plugin()))
            }
            Lookup::Found(_) => return Attempt::Deferred(http::Request::from_parts(parts, body)),
            Lookup::MethodNotAllowed(allowed) => (not_allowed(method, path, &allowed), None),
            Lookup::NotFound => {
                let error = format!("no route matches {path}");
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

    /// Finds the request's route. `HEAD` uses the path's `GET` route when it has no `HEAD` route
    /// of its own. Returns the method the handler sees.
    fn find<'r, 'p>(&'r self, parts: &'p http::request::Parts) -> (Lookup<'r, 'p>, &'p str) {
        let (method, path) = (parts.method.as_str(), parts.uri.path());
        match self.router.lookup(method, path) {
            Lookup::Found(route) => (Lookup::Found(route), method),
            _ if parts.method == Method::HEAD => (self.router.lookup("GET", path), "GET"),
            other => (other, method),
        }
    }

    /// `GET /healthz`: every plugin served, and those out of service after a panic.
    fn health(&self) -> HttpResponse {
        let poisoned = self.router.poisoned();
        let status = if poisoned.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let body = serde_json::json!({
            "status": status,
            "plugins": self.router.plugins(),
            "poisoned": poisoned,
        });
        json(StatusCode::OK, &body)
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
        let (Lookup::Found(route), method) = self.find(&parts) else {
            unreachable!("answer_now answers every request without a route")
        };
        let response = match self.read_body(&parts, body).await {
            Err(response) => response,
            Ok(body) if route.offloaded() => self.call_blocking(&parts, method, body).await,
            Ok(body) => self.call_inline(&route, &parts, method, &body),
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
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit as u64) {
            return Err(too_large(self.body_limit));
        }
        match Limited::new(body, self.body_limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(self.body_limit)),
            Err(e) => {
                let error = format!("cannot read the request body: {e}");
                Err(json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error }),
                ))
            }
        }
    }

    /// Calls the handler on this thread; if the call takes longer than the threshold, the route
    /// runs on the blocking pool from then on.
    fn call_inline(
        &self,
        route: &RouteMatch<'_, '_>,
        parts: &http::request::Parts,
        method: &str,
        body: &[u8],
    ) -> HttpResponse {
        let started = Instant::now();
        let result = route.call(&request(method, target(parts), &parts.headers, body));
        let took = started.elapsed();
        if took >= self.blocking_threshold {
            route.offload();
            tracing::warn!(
                target: "plugin_host::access",
                "{method} {} of plugin `{}` took {took:?}: its requests run on the blocking pool from now on",
                route.pattern(),
                route.plugin(),
            );
        }
        result.map_or_else(|error| failure(&error), into_http)
    }

    /// Calls the handler on tokio's blocking pool.
    async fn call_blocking(
        &self,
        parts: &http::request::Parts,
        method: &str,
        body: Bytes,
    ) -> HttpResponse {
        let router = self.router.clone();
        let (method, target, headers) = (
            method.to_owned(),
            target(parts).to_owned(),
            parts.headers.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            router.dispatch(&request(&method, &target, &headers, &body))
        });
        match task.await {
            Ok(result) => result.map_or_else(|error| failure(&error), into_http),
            Err(join) => {
                let error = format!("the handler task failed: {join}");
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({ "error": error }),
                )
            }
        }
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
        let logged = tracing::enabled!(target: "plugin_host::access", tracing::Level::INFO);
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
                target: "plugin_host::access",
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

/// The request target: the path and the query.
fn target(parts: &http::request::Parts) -> &str {
    parts.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The host's view of an HTTP request, borrowing everything.
fn request<'a>(
    method: &'a str,
    target: &'a str,
    headers: &'a http::HeaderMap,
    body: &'a [u8],
) -> Request<'a> {
    let mut request = Request::new(method, target).body(body);
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
    let error = format!("{method} is not allowed for {path}");
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

/// The response for a handler that failed (500) or panicked (500), or whose instance is out of
/// service after an earlier panic (503).
fn failure(error: &Error) -> HttpResponse {
    let (status, kind) = match error.kind() {
        ErrorKind::Panicked { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "panicked"),
        ErrorKind::Poisoned { .. } => (StatusCode::SERVICE_UNAVAILABLE, "poisoned"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
    };
    tracing::error!(target: "plugin_host::access", "{error}");
    json(
        status,
        &serde_json::json!({ "error": error.to_string(), "plugin": error.plugin(), "kind": kind }),
    )
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

/// Serves `service` on `listener` until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish for at most `grace`, and returns whether they all did.
pub async fn serve(
    listener: TcpListener,
    service: PluginService,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> bool {
    let graceful = GracefulShutdown::new();
    let builder = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: back off rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // `service_fn` over `handle` rather than the `tower::Service` impl: no boxed
                // future per request. Each connection gets its own `Arc`, so the reference
                // count a request touches is not shared with other threads.
                let service = Arc::new(service.clone());
                let handler = hyper::service::service_fn(move |request| {
                    match service.answer_now(request) {
                        Attempt::Answered(response) => Answer::Now(Some(response)),
                        Attempt::Deferred(request) => {
                            let service = service.clone();
                            Answer::Later(Box::pin(async move { service.answer_later(request).await }))
                        }
                    }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), handler);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended with an error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
}

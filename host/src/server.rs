//! Serving a [`Router`] over HTTP: a `tower::Service` that applications can mount in their own
//! server (axum, hyper, ...), and [`serve`], a hyper 1 server with graceful shutdown.

use crate::error::{Error, ErrorKind};
use crate::message::Request;
use crate::router::{Lookup, Router};
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The default limit of a request body: 2 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

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
/// 500 with a JSON body naming the plugin. Handlers run on tokio's blocking pool, so a slow
/// plugin never stalls the threads that serve other requests.
#[derive(Clone)]
pub struct PluginService {
    router: Arc<Router>,
    body_limit: usize,
}

impl PluginService {
    /// A service over `router` with the default body limit.
    pub fn new(router: Router) -> Self {
        Self {
            router: Arc::new(router),
            body_limit: DEFAULT_BODY_LIMIT,
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

    /// Answers one request.
    pub async fn handle<B>(self, request: http::Request<B>) -> HttpResponse
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let head = parts.method == Method::HEAD;
        let method = if head { "GET" } else { parts.method.as_str() }.to_owned();
        let path = parts.uri.path().to_owned();
        let (response, plugin) = match self.route(&method, &path) {
            Routing::Answered(response) => (response, None),
            Routing::Plugin(plugin) => {
                let response = self.call(parts, body, method.clone()).await;
                (response, Some(plugin))
            }
        };
        tracing::info!(
            target: "plugin_host::access",
            method = if head { "HEAD" } else { method.as_str() },
            path,
            status = response.status().as_u16(),
            duration_us = started.elapsed().as_micros() as u64,
            plugin = plugin.as_deref().unwrap_or("-"),
        );
        if head {
            let (mut parts, body) = response.into_parts();
            let len = http_body::Body::size_hint(&body).exact().unwrap_or(0);
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            return http::Response::from_parts(parts, Full::default());
        }
        response
    }

    /// Decides, before the body is read, whether the request reaches a plugin.
    fn route(&self, method: &str, path: &str) -> Routing {
        if path == HEALTH_PATH && method == "GET" {
            let body = serde_json::json!({ "status": "ok", "plugins": self.router.plugins() });
            return Routing::Answered(json(StatusCode::OK, &body));
        }
        match self.router.lookup(method, path) {
            Lookup::Found(route) => Routing::Plugin(route.plugin().to_owned()),
            Lookup::MethodNotAllowed(allowed) => {
                let mut allow = allowed.join(", ");
                if allowed.contains(&"GET") {
                    allow.push_str(", HEAD");
                }
                let body = serde_json::json!({ "error": format!("{method} is not allowed for {path}"), "allow": allow });
                let mut response = json(StatusCode::METHOD_NOT_ALLOWED, &body);
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    response.headers_mut().insert(ALLOW, value);
                }
                Routing::Answered(response)
            }
            Lookup::NotFound => Routing::Answered(json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": format!("no route matches {path}") }),
            )),
        }
    }

    /// Reads the body within the limit and runs the handler on the blocking pool.
    async fn call<B>(&self, parts: http::request::Parts, body: B, method: String) -> HttpResponse
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
            return too_large(self.body_limit);
        }
        let body = match Limited::new(body, self.body_limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return too_large(self.body_limit);
            }
            Err(e) => {
                let error = format!("cannot read the request body: {e}");
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error }),
                );
            }
        };
        let router = self.router.clone();
        let task = tokio::task::spawn_blocking(move || {
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut request = Request::new(&method, target).body(&body);
            for (name, value) in &parts.headers {
                request = request.header(name.as_str(), value.as_bytes());
            }
            router.dispatch(&request).map(into_http)
        });
        match task.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => failure(&error),
            Err(join) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "error": format!("the handler task failed: {join}") }),
            ),
        }
    }
}

/// Where a request goes.
enum Routing {
    /// To the plugin of this name.
    Plugin(String),
    /// Nowhere: the service answers it with this response.
    Answered(HttpResponse),
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

/// The 500 response for a handler that failed or panicked.
fn failure(error: &Error) -> HttpResponse {
    let kind = match error.kind() {
        ErrorKind::Panicked { .. } => "panicked",
        _ => "failed",
    };
    tracing::error!(target: "plugin_host::access", "{error}");
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({ "error": error.to_string(), "plugin": error.plugin(), "kind": kind }),
    )
}

/// Converts a plugin's response; a header the `http` crate rejects is dropped with a warning.
fn into_http(response: crate::Response) -> HttpResponse {
    let mut out = http::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    for (name, value) in response.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            (Ok(name), Ok(value)) => {
                out.headers_mut().append(name, value);
            }
            _ => tracing::warn!("dropped the invalid response header {name:?}"),
        }
    }
    out
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
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = builder.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                );
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

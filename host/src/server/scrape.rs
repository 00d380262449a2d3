//! The metrics on an address of their own ([`serve_metrics`]): a small HTTP/1.1 server that
//! answers `GET /metrics` and nothing else.

use super::{HttpResponse, PluginService, ServeOptions, into_http, json, not_allowed, not_found};
use crate::limits::METRICS_CONNECTIONS;
use crate::metrics::METRICS_PATH;
use http::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the metrics of `service` (kept with
/// [`PluginService::with_metrics_elsewhere`]) on `listener` until `shutdown` completes:
/// `GET /metrics` answers them, any other path 404. At most [`METRICS_CONNECTIONS`]
/// connections are served at once (one more is closed at once), and a connection that takes
/// longer than `options.header_timeout` to send a request head, or to send the next one, is
/// closed. Connections still open at shutdown are dropped with the runtime.
pub async fn serve_metrics(
    listener: TcpListener,
    service: PluginService,
    shutdown: impl Future<Output = ()>,
    options: &ServeOptions,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("the metrics listener could not accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Over the cap, the connection is closed unanswered.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = service.clone();
        let handler = hyper::service::service_fn(move |request: http::Request<_>| {
            let response = answer(&service, request.method(), request.uri().path());
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), handler);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!("a metrics connection ended with an error: {e}");
            }
        });
    }
}

/// The answer of the metrics listener to `method` and `path`.
fn answer(service: &PluginService, method: &Method, path: &str) -> HttpResponse {
    let response = match (path, method) {
        (METRICS_PATH, &Method::GET | &Method::HEAD) => match service.metrics_response() {
            Some(mut response) => {
                if method == Method::HEAD {
                    response.body.clear();
                }
                response
            }
            None => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "this service keeps no metrics (PluginService::with_metrics_elsewhere)" }),
            ),
        },
        (METRICS_PATH, _) => not_allowed(method.as_str(), path, &["GET"]),
        _ => not_found(path),
    };
    into_http(response)
}

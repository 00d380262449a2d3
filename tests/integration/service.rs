//! The router as a `tower::Service`: called directly, and mounted in an axum application.

use crate::util::{entry, http, samples};
use plugin_host::server::PluginService;
use serde_json::json;
use tower::ServiceExt;

fn service() -> (plugin_host::Registry, PluginService) {
    let s = samples();
    let registry = plugin_host::config::deploy(
        &[
            entry(&s.hello, "hello", json!({})),
            entry(&s.greeter, "greeter", json!({})),
        ],
        false,
    )
    .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let service = PluginService::new(registry.router().unwrap());
    (registry, service)
}

#[tokio::test]
async fn the_service_answers_a_tower_call() {
    let (_registry, service) = service();
    let request = http::Request::get("/greet/ada")
        .body(String::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "Hello, ada!");
}

#[test]
fn an_axum_application_mounts_the_plugin_routes_under_a_prefix() {
    let (registry, service) = service();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "app" }))
        .nest_service("/plugins", service);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let app = http(addr, "GET", "/", b"");
    let hello = http(addr, "GET", "/plugins/hello/ada", b"");
    let greet = http(addr, "GET", "/plugins/greet/bob?greeting=Hey", b"");
    let missing = http(addr, "GET", "/plugins/nothing", b"");
    assert_eq!((app.status, app.text()), (200, "app".to_owned()));
    assert_eq!((hello.status, hello.text()), (200, "hello, ada".to_owned()));
    assert_eq!((greet.status, greet.text()), (200, "Hey, bob!".to_owned()));
    assert_eq!(missing.status, 404);
    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

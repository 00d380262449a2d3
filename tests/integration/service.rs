//! The router as a `tower::Service`: called directly, and mounted in an axum application.

use crate::util::{entry, faulty, http, samples};
use plugin_host::server::PluginService;
use serde_json::json;
use tower::ServiceExt;

fn service() -> (plugin_host::Registry, PluginService) {
    let s = samples();
    let registry = started(&[
        entry(&s.hello, "hello", json!({})),
        entry(&s.greeter, "greeter", json!({})),
    ]);
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

/// The started registry of `entries`.
fn started(entries: &[plugin_host::config::PluginEntry]) -> plugin_host::Registry {
    let registry = plugin_host::config::deploy(entries, false).unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    registry
}

/// A router replaced while a request runs on it: new requests get the new router at once, the
/// running one finishes on the old, and the old router drains only then; its plugins stop once
/// it is dropped.
#[test]
fn a_replaced_router_serves_new_requests_and_drains_the_running_ones() {
    let s = samples();
    let old = started(&[entry(faulty(), "sleepy", json!({"path": "/x"}))]);
    let new = started(&[entry(&s.hello, "hello", json!({}))]);
    let service = PluginService::new(old.router().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let get = |target: &str| {
        let request = http::Request::get(target).body(String::new()).unwrap();
        service.clone().oneshot(request)
    };
    let running = runtime.spawn(get("/x/sleep?ms=400"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let retired = service.replace_router(new.router().unwrap());
    assert!(
        retired.in_use(),
        "the sleeping request holds the old router"
    );
    let status =
        |response: Result<plugin_host::server::HttpResponse, _>| response.unwrap().status();
    assert_eq!(
        runtime
            .block_on(get("/hello/ada"))
            .map(|r| r.status())
            .unwrap(),
        200
    );
    assert_eq!(
        status(runtime.block_on(get("/x/ok"))),
        404,
        "the old routes are gone"
    );
    assert_eq!(service.router().plugins(), ["hello"]);
    let started = std::time::Instant::now();
    assert!(retired.drain(std::time::Duration::from_secs(10)));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "drained before the running request ended"
    );
    let answered = runtime.block_on(running).unwrap();
    assert_eq!(
        status(answered),
        200,
        "the running request finished on the old router"
    );
    old.stop_all().unwrap_or_else(|e| panic!("{e}"));
    drop(service);
    new.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

/// A retired router that a request holds past the drain's limit: `drain` says so, and lets go.
#[test]
fn a_drain_gives_up_at_its_limit() {
    let old = started(&[entry(faulty(), "sleepy", json!({"path": "/x"}))]);
    let service = PluginService::new(old.router().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let request = http::Request::get("/x/sleep?ms=600")
        .body(String::new())
        .unwrap();
    let running = runtime.spawn(service.clone().oneshot(request));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let retired = service.replace_router(plugin_host::Registry::new().router().unwrap());
    let started = std::time::Instant::now();
    assert!(!retired.drain(std::time::Duration::from_millis(100)));
    assert!(started.elapsed() < std::time::Duration::from_millis(400));
    assert_eq!(runtime.block_on(running).unwrap().unwrap().status(), 200);
    old.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

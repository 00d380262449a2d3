//! The shared router: collection order, conflicts, dispatch to Rust, C and C++ handlers.

use crate::util::{faulty, samples};
use plugin_host::{ErrorKind, Factory, Lookup, Registry, Request, RouteInfo, Router};
use serde_json::json;
use std::path::Path;

fn started(plugins: &[(&str, &Path, serde_json::Value)]) -> Registry {
    let registry = Registry::new();
    for (name, path, config) in plugins {
        let factory = Factory::load(path).unwrap_or_else(|e| panic!("{e}"));
        registry
            .register(factory.create(name, config).unwrap())
            .unwrap();
    }
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    registry
}

fn all_samples() -> (Registry, Router) {
    let s = samples();
    let registry = started(&[
        ("hello", &s.hello, json!({})),
        ("greeter", &s.greeter, json!({})),
        ("wordcount", &s.wordcount, json!({})),
        ("counter", &s.counter, json!({})),
    ]);
    let router = registry.router().unwrap_or_else(|e| panic!("{e}"));
    (registry, router)
}

fn route(method: &str, path: &str, plugin: &str) -> RouteInfo {
    RouteInfo {
        method: method.to_owned(),
        path: path.to_owned(),
        plugin: plugin.to_owned(),
    }
}

#[test]
fn routes_are_collected_in_registration_order() {
    let (_registry, router) = all_samples();
    assert_eq!(
        router.routes(),
        [
            route("GET", "/hello", "hello"),
            route("GET", "/hello/{name}", "hello"),
            route("GET", "/ping", "hello"),
            route("GET", "/greet/{name}", "greeter"),
            route("GET", "/c/hello", "greeter"),
            route("POST", "/c/echo", "greeter"),
            route("POST", "/words", "wordcount"),
            route("GET", "/cpp/files/{*path}", "wordcount"),
            route("GET", "/counter", "counter"),
            route("POST", "/counter", "counter"),
        ]
    );
}

#[test]
fn the_same_route_twice_is_a_conflict_naming_both_plugins() {
    let s = samples();
    let registry = started(&[
        ("greeter-a", &s.greeter, json!({})),
        ("greeter-b", &s.greeter, json!({})),
    ]);
    let error = registry.router().err().expect("conflict");
    assert!(
        matches!(error.kind(), ErrorKind::RouteConflict { route, other, .. }
            if route == "GET /greet/{name}" && other == "greeter-a"),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("greeter-b"));
    let message = error.to_string();
    assert!(
        message.contains("greeter-a") && message.contains("greeter-b"),
        "{message}"
    );
    assert!(
        message.contains(&s.greeter.display().to_string()),
        "{message}"
    );
}

#[test]
fn overlapping_parameters_are_a_conflict() {
    let s = samples();
    let registry = started(&[
        ("hello", &s.hello, json!({})),
        ("counter", &s.counter, json!({ "path": "/hello/{who}" })),
    ]);
    let error = registry.router().err().expect("conflict");
    assert!(
        matches!(error.kind(), ErrorKind::RouteConflict { route, existing, other }
            if route == "GET /hello/{who}" && existing == "GET /hello/{name}" && other == "hello"),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("counter"));
}

#[test]
fn dispatch_reaches_rust_handlers_with_parameters_and_query() {
    let (_registry, router) = all_samples();
    let response = router
        .dispatch(&Request::new("GET", "/hello/ada?punctuation=!"))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello, ada!");
    assert_eq!(
        response.header("Content-Type"),
        Some(&b"text/plain; charset=utf-8"[..])
    );
    let response = router.dispatch(&Request::new("GET", "/ping")).unwrap();
    assert_eq!((response.status, response.body.len()), (200, 0));
}

#[test]
fn dispatch_reaches_c_handlers_with_parameters_query_headers_and_body() {
    let (_registry, router) = all_samples();
    let response = router
        .dispatch(&Request::new("GET", "/greet/grace?x=1&greeting=Hi"))
        .unwrap();
    assert_eq!(response.body, b"Hi, grace!");
    let body = br#"{"answer":42}"#;
    let request = Request::new("POST", "/c/echo")
        .header("content-type", b"application/json")
        .body(body);
    let response = router.dispatch(&request).unwrap();
    assert_eq!(response.body, body);
    assert_eq!(
        response.header("content-type"),
        Some(&b"application/json"[..])
    );
}

#[test]
fn dispatch_reaches_cpp_handlers_with_a_body_and_a_catch_all() {
    let (_registry, router) = all_samples();
    let request = Request::new("POST", "/words").body(b"one two  three\nfour");
    let response = router.dispatch(&request).unwrap();
    assert_eq!(response.body, br#"{"words":4,"bytes":19}"#);
    let response = router
        .dispatch(&Request::new("GET", "/cpp/files/a/b/c.txt"))
        .unwrap();
    assert_eq!(response.body, b"file: a/b/c.txt");
}

#[test]
fn unknown_paths_and_methods_are_reported() {
    let (_registry, router) = all_samples();
    let error = router
        .dispatch(&Request::new("GET", "/nowhere"))
        .err()
        .unwrap();
    assert!(matches!(error.kind(), ErrorKind::RouteNotFound { path } if path == "/nowhere"));
    let error = router
        .dispatch(&Request::new("DELETE", "/counter"))
        .err()
        .unwrap();
    assert!(
        matches!(error.kind(), ErrorKind::MethodNotAllowed { allowed, .. } if allowed == &["GET", "POST"]),
        "{error:?}"
    );
    match router.lookup("GET", "/greet/linus") {
        Lookup::Found(found) => {
            assert_eq!(found.plugin(), "greeter");
            assert_eq!(found.pattern(), "/greet/{name}");
            assert_eq!(found.params().collect::<Vec<_>>(), [("name", "linus")]);
        }
        _ => panic!("no match"),
    }
}

#[test]
fn a_failing_handler_is_an_error_naming_the_plugin() {
    let registry = started(&[("faulty", faulty(), json!({}))]);
    let router = registry.router().unwrap();
    let error = router
        .dispatch(&Request::new("GET", "/faulty/error"))
        .err()
        .unwrap();
    assert!(
        matches!(error.kind(), ErrorKind::HandlerFailed { route, reason }
            if route == "GET /faulty/error" && reason == "deliberate handler failure"),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("faulty"));
    assert!(error.to_string().contains(&faulty().display().to_string()));
}

fn is_panic(error: &plugin_host::Error) -> bool {
    matches!(error.kind(), ErrorKind::Panicked { call, message }
        if call == "GET /faulty/panic" && message.contains("deliberate handler panic"))
}

#[test]
fn a_panicking_handler_poisons_its_plugin_and_the_host_keeps_serving_the_others() {
    let registry = started(&[
        ("faulty", faulty(), json!({})),
        ("hello", &samples().hello, json!({})),
    ]);
    let router = registry.router().unwrap();
    let error = router
        .dispatch(&Request::new("GET", "/faulty/panic"))
        .err()
        .unwrap();
    assert!(is_panic(&error), "{error:?}");
    assert_eq!(error.plugin(), Some("faulty"));
    // The instance is out of service: its routes no longer reach it.
    let faulty_instance = registry.get("faulty").unwrap();
    assert!(
        faulty_instance
            .poisoned()
            .unwrap()
            .contains("deliberate handler panic")
    );
    assert_eq!(router.poisoned(), ["faulty"]);
    for target in ["/faulty/ok", "/faulty/panic"] {
        let error = router.dispatch(&Request::new("GET", target)).err().unwrap();
        assert!(
            matches!(error.kind(), ErrorKind::Poisoned { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&faulty().display().to_string()),
            "{error}"
        );
    }
    // Everything else keeps working.
    let response = router.dispatch(&Request::new("GET", "/hello")).unwrap();
    assert_eq!(response.body, b"hello from Rust");
}

#[test]
fn a_plugin_may_keep_serving_after_a_panic() {
    let registry = started(&[("faulty", faulty(), json!({}))]);
    registry
        .get("faulty")
        .unwrap()
        .keep_serving_after_panic(true);
    let router = registry.router().unwrap();
    for _ in 0..3 {
        let error = router
            .dispatch(&Request::new("GET", "/faulty/panic"))
            .err()
            .unwrap();
        assert!(is_panic(&error), "{error:?}");
        let response = router.dispatch(&Request::new("GET", "/faulty/ok")).unwrap();
        assert_eq!(response.body, b"ok");
    }
    assert!(router.poisoned().is_empty());
}

#[test]
fn concurrent_requests_to_a_stateful_plugin_are_all_counted() {
    let (_registry, router) = all_samples();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..100 {
                    router.dispatch(&Request::new("POST", "/counter")).unwrap();
                }
            });
        }
    });
    let response = router.dispatch(&Request::new("GET", "/counter")).unwrap();
    assert_eq!(response.body, br#"{"value":800}"#);
}

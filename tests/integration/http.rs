//! Real HTTP on 127.0.0.1: the server in front of the sample plugins.

use crate::util::{TestServer, entry, faulty, go_library, http, http_raw, isolated, samples};
use plugin_host::config::PluginEntry;
use plugin_host::server::DEFAULT_BODY_LIMIT;
use plugin_host::{ErrorKind, Factory};
use serde_json::json;
use std::time::{Duration, Instant};

/// How the samples run: in the host's process, or each in a worker process of its own.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    InProcess,
    Isolated,
}

/// Every test of this file that takes a `Mode` runs twice, as `in_process::NAME` and
/// `isolated::NAME`, with the same expected answers.
macro_rules! in_both_modes {
    ($($test:ident),* $(,)?) => {
        mod in_process {
            $(#[test] fn $test() { super::$test(super::Mode::InProcess) })*
        }
        mod isolated {
            $(#[test] fn $test() { super::$test(super::Mode::Isolated) })*
        }
    };
}

in_both_modes!(
    every_sample_route_answers_over_http,
    a_json_body_and_its_headers_are_echoed_back,
    a_one_mebibyte_body_passes_through,
    unknown_paths_are_404_and_other_methods_405_with_allow,
    head_works_for_get_routes,
    a_body_over_the_limit_is_413_and_never_reaches_the_plugin,
    a_failing_or_panicking_handler_is_500_naming_the_plugin_and_serving_goes_on,
    a_plugin_poisoned_by_a_panic_answers_503_and_health_says_so,
    two_hundred_concurrent_requests_are_all_answered,
    a_slow_handler_does_not_stall_other_routes,
);

/// The entries, run as `mode` says.
fn run(mode: Mode, entries: Vec<PluginEntry>) -> Vec<PluginEntry> {
    match mode {
        Mode::InProcess => entries,
        Mode::Isolated => entries.into_iter().map(isolated).collect(),
    }
}

fn all_samples(mode: Mode) -> TestServer {
    let s = samples();
    let entries = vec![
        entry(&s.hello, "hello", json!({})),
        entry(&s.greeter, "greeter", json!({})),
        entry(&s.wordcount, "wordcount", json!({})),
        entry(&s.counter, "counter", json!({ "start": 5 })),
        entry(faulty(), "faulty", json!({})),
    ];
    TestServer::start(&run(mode, entries), DEFAULT_BODY_LIMIT)
}

fn every_sample_route_answers_over_http(mode: Mode) {
    let server = all_samples(mode);
    let get = |target: &str| http(server.addr, "GET", target, b"");
    let cases = [
        (get("/hello"), "hello from Rust"),
        (get("/hello/ada?punctuation=!"), "hello, ada!"),
        (get("/greet/grace?greeting=Hi"), "Hi, grace!"),
        (get("/c/hello"), "hello from C"),
        (get("/cpp/files/docs/readme.md"), "file: docs/readme.md"),
        (get("/counter"), r#"{"value":5}"#),
        (
            http(server.addr, "POST", "/counter", br#"{"by":3}"#),
            r#"{"value":8}"#,
        ),
        (
            http(server.addr, "POST", "/words", b"to be or not to be"),
            r#"{"words":6,"bytes":18}"#,
        ),
    ];
    for (response, body) in cases {
        assert_eq!((response.status, response.text()), (200, body.to_owned()));
    }
    let health = get("/healthz");
    assert_eq!(health.status, 200);
    let mut health = serde_json::from_slice::<serde_json::Value>(&health.body).unwrap();
    // Where each plugin runs: nothing to say in-process; a serving child with its pid isolated.
    let processes = health.as_object_mut().unwrap().remove("processes").unwrap();
    let processes = processes.as_object().unwrap();
    match mode {
        Mode::InProcess => assert!(processes.is_empty(), "{processes:?}"),
        Mode::Isolated => {
            assert_eq!(processes.len(), 5, "{processes:?}");
            for process in processes.values() {
                assert_eq!(
                    (&process["mode"], &process["state"]),
                    (&json!("isolated"), &json!("serving"))
                );
                assert!(process["pid"].as_u64().is_some(), "{process}");
            }
        }
    }
    assert_eq!(
        health,
        json!({
            "status": "ok",
            "plugins": ["hello", "greeter", "wordcount", "counter", "faulty"],
            "poisoned": [],
            "failed": [],
            "overloaded": [],
            "calls_past_deadline": {},
        })
    );
}

#[test]
fn the_go_sample_answers_over_http() {
    let shout = samples().shout.as_ref().map(|p| p.display().to_string());
    let Some(shout) = go_library(&shout.unwrap_or_default()) else {
        return;
    };
    let server = TestServer::start(
        &[
            entry(&shout, "shout", json!({ "suffix": "?!" })),
            entry(&samples().hello, "hello", json!({})),
        ],
        DEFAULT_BODY_LIMIT,
    );
    let response = http(server.addr, "GET", "/shout/hey%20you", b"");
    assert_eq!(
        (response.status, response.text()),
        (200, "HEY YOU?!".to_owned())
    );
    let response = http(server.addr, "POST", "/shout", b"make it loud");
    assert_eq!(
        (response.status, response.text()),
        (200, "MAKE IT LOUD".to_owned())
    );
    // A status set from the plugin.
    let response = http(server.addr, "POST", "/shout", b"");
    assert_eq!(
        (response.status, response.text()),
        (400, "send a body\n".to_owned())
    );
    // Go's runtime lives beside the Rust plugin.
    assert_eq!(
        http(server.addr, "GET", "/hello", b"").text(),
        "hello from Rust"
    );
    // A configuration Go's encoding/json refuses is a create error naming the plugin.
    let error = Factory::load(&shout)
        .unwrap()
        .create("loud", &json!({ "suffix": 3 }))
        .err()
        .expect("refused");
    assert!(
        matches!(error.kind(), ErrorKind::CreateFailed { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("plugin `loud`")
            && error
                .to_string()
                .contains("invalid configuration: json: cannot unmarshal number"),
        "{error}"
    );
}

fn a_json_body_and_its_headers_are_echoed_back(mode: Mode) {
    let server = all_samples(mode);
    let body = br#"{"name":"ada","langs":["c","rust"]}"#;
    let response = http_raw(
        server.addr,
        "POST",
        "/c/echo",
        &[("content-type", "application/json")],
        body,
        None,
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.body, body);
}

fn a_one_mebibyte_body_passes_through(mode: Mode) {
    let server = all_samples(mode);
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = http(server.addr, "POST", "/c/echo", &body);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), body.len());
    assert!(response.body == body, "the echoed body differs");
}

fn unknown_paths_are_404_and_other_methods_405_with_allow(mode: Mode) {
    let server = all_samples(mode);
    let response = http(server.addr, "GET", "/nowhere", b"");
    assert_eq!(response.status, 404);
    assert!(response.text().contains("/nowhere"), "{}", response.text());
    // A catch-all (`/cpp/files/{*path}`) needs at least one character after its slash.
    assert_eq!(http(server.addr, "GET", "/cpp/files/", b"").status, 404);
    assert_eq!(
        http(server.addr, "GET", "/cpp/files/a", b"").text(),
        "file: a"
    );
    let response = http(server.addr, "DELETE", "/counter", b"");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, POST, HEAD"));
    let response = http(server.addr, "PUT", "/words", b"");
    assert_eq!(
        (response.status, response.header("allow")),
        (405, Some("POST"))
    );
}

fn head_works_for_get_routes(mode: Mode) {
    let server = all_samples(mode);
    let response = http(server.addr, "HEAD", "/hello/ada", b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("10"));
    assert!(response.body.is_empty());
}

fn a_body_over_the_limit_is_413_and_never_reaches_the_plugin(mode: Mode) {
    let s = samples();
    let entries = run(mode, vec![entry(&s.counter, "counter", json!({}))]);
    let server = TestServer::start(&entries, 1024);
    // Announced larger than the limit: refused before any byte of the body is read.
    let response = http_raw(
        server.addr,
        "POST",
        "/counter",
        &[],
        b"",
        Some(3 * 1024 * 1024),
    );
    assert_eq!(response.status, 413);
    // Sent in full, one byte over the limit.
    let body = format!(r#"{{"by":1{}}}"#, " ".repeat(1024));
    let response = http(server.addr, "POST", "/counter", body.as_bytes());
    assert_eq!(response.status, 413);
    let response = http(server.addr, "GET", "/counter", b"");
    assert_eq!(
        response.text(),
        r#"{"value":0}"#,
        "the plugin saw no request"
    );
}

fn a_failing_or_panicking_handler_is_500_naming_the_plugin_and_serving_goes_on(mode: Mode) {
    for (target, kind, says, reason) in crate::util::FAULTY_FAILURES {
        // A fresh server each time: the panic takes the plugin out of service.
        let server = all_samples(mode);
        let response = http(server.addr, "GET", target, b"");
        assert_eq!(response.status, 500);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["plugin"], "faulty");
        assert_eq!(body["kind"], kind);
        assert_eq!(body["error"], format!("plugin `faulty`: {says}"), "{body}");
        // The client learns which plugin failed and how, not the plugin's reason, where its
        // file lives or what an operator should do: the log has those.
        assert!(!response.text().contains(reason), "{body}");
        assert!(
            !response.text().contains(&faulty().display().to_string()),
            "{body}"
        );
        assert_eq!(http(server.addr, "GET", "/hello", b"").status, 200);
    }
}

fn a_plugin_poisoned_by_a_panic_answers_503_and_health_says_so(mode: Mode) {
    let server = all_samples(mode);
    assert_eq!(http(server.addr, "GET", "/faulty/panic", b"").status, 500);
    let response = http(server.addr, "GET", "/faulty/ok", b"");
    assert_eq!(response.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        (body["plugin"].as_str(), body["kind"].as_str()),
        (Some("faulty"), Some("poisoned"))
    );
    let health: serde_json::Value =
        serde_json::from_slice(&http(server.addr, "GET", "/healthz", b"").body).unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["poisoned"], json!(["faulty"]));
    assert_eq!(http(server.addr, "GET", "/hello", b"").status, 200);
}

fn two_hundred_concurrent_requests_are_all_answered(mode: Mode) {
    let server = all_samples(mode);
    let addr = server.addr;
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..200)
            .map(|_| scope.spawn(move || http(addr, "POST", "/counter", b"").status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(
        http(addr, "GET", "/counter", b"").text(),
        r#"{"value":205}"#
    );
}

/// While a handler sleeps for `ms`, twenty requests to another route are each answered within
/// 500 ms.
fn others_answer_promptly_while_sleeping(addr: std::net::SocketAddr, ms: u64) {
    std::thread::scope(|scope| {
        let started = Instant::now();
        let target = format!("/faulty/sleep?ms={ms}");
        let slow = scope.spawn(move || http(addr, "GET", &target, b""));
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..20 {
            let sent = Instant::now();
            assert_eq!(http(addr, "GET", "/hello", b"").status, 200);
            let took = sent.elapsed();
            assert!(took < Duration::from_millis(500), "a request took {took:?}");
        }
        let checked = started.elapsed();
        assert!(
            checked < Duration::from_millis(ms - 100),
            "checked while the slow one ran"
        );
        let slow = slow.join().unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(ms),
            "it did sleep"
        );
        assert_eq!((slow.status, slow.text()), (200, "awake".to_owned()));
    });
}

fn a_slow_handler_does_not_stall_other_routes(mode: Mode) {
    // The test server has two worker threads, as a 2-core machine.
    let server = all_samples(mode);
    // First call: the route is not known to be slow and runs on a worker, which it blocks;
    // the other worker serves everything else.
    others_answer_promptly_while_sleeping(server.addr, 2000);
    // From then on the route runs on the blocking pool and blocks no worker at all.
    others_answer_promptly_while_sleeping(server.addr, 2000);
}

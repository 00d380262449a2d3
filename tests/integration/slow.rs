//! Slow and hung handlers never stall other plugins or `/healthz`, and a call past its deadline
//! answers 504 naming the plugin.

use crate::util::{TestServer, entry, faulty, http, samples};
use plugin_host::server::{DEFAULT_BODY_LIMIT, MAX_CALLS_PAST_DEADLINE, ServeOptions};
use serde_json::json;
use std::time::{Duration, Instant};

/// The test server's worker threads (see `TestServer`).
const WORKERS: usize = 2;

fn server(handler_timeout: Option<Duration>) -> TestServer {
    let s = samples();
    let mut faulty = entry(faulty(), "faulty", json!({}));
    faulty.handler_timeout = handler_timeout;
    TestServer::start(
        &[entry(&s.hello, "hello", json!({})), faulty],
        DEFAULT_BODY_LIMIT,
    )
}

/// Sends `calls` concurrent requests to `/faulty/sleep?ms=...` that stay in their handler for
/// `hang`, and while they do, checks that `/healthz` and another plugin's route answer quickly.
fn others_answer_while_calls_hang(server: &TestServer, calls: usize, hang: Duration) {
    let addr = server.addr;
    let target = format!("/faulty/sleep?ms={}", hang.as_millis());
    std::thread::scope(|scope| {
        let hung: Vec<_> = (0..calls)
            .map(|_| scope.spawn(|| http(addr, "GET", &target, b"")))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            for target in ["/healthz", "/hello"] {
                let sent = Instant::now();
                assert_eq!(http(addr, "GET", target, b"").status, 200, "{target}");
                slowest = slowest.max(sent.elapsed());
            }
        }
        assert!(
            slowest < Duration::from_millis(100),
            "the slowest answer took {slowest:?}"
        );
        assert!(
            started.elapsed() + Duration::from_millis(300) < hang,
            "checked while the calls hung"
        );
        for call in hung {
            assert_eq!(call.join().unwrap().status, 200);
        }
    });
}

#[test]
fn four_times_the_workers_in_hung_calls_leave_healthz_and_other_plugins_fast() {
    let server = server(None);
    others_answer_while_calls_hang(&server, 4 * WORKERS, Duration::from_secs(3));
}

#[test]
fn hung_calls_of_a_route_that_earned_inline_leave_a_worker_free() {
    let server = server(None);
    // Fast calls in a row: the route runs inline on the workers from now on.
    for _ in 0..20 {
        assert_eq!(
            http(server.addr, "GET", "/faulty/sleep?ms=0", b"").status,
            200
        );
    }
    others_answer_while_calls_hang(&server, 4 * WORKERS, Duration::from_secs(3));
}

fn json_of(response: &crate::util::HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.text()))
}

#[test]
fn a_call_past_its_deadline_answers_504_at_the_deadline_and_is_counted() {
    let server = server(Some(Duration::from_millis(200)));
    let sent = Instant::now();
    let response = http(server.addr, "GET", "/faulty/sleep?ms=1500", b"");
    let took = sent.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    let body = json_of(&response);
    assert_eq!(
        (body["plugin"].as_str(), body["kind"].as_str()),
        (Some("faulty"), Some("timeout"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer GET /faulty/sleep within 200ms"),
        "{body}"
    );
    // The call runs on: counted, and still running.
    let health = json_of(&http(server.addr, "GET", "/healthz", b""));
    assert_eq!(
        health["calls_past_deadline"],
        json!({ "faulty": { "total": 1, "running": 1 } })
    );
    assert_eq!(health["status"], "ok");
    std::thread::sleep(Duration::from_millis(1600));
    let health = json_of(&http(server.addr, "GET", "/healthz", b""));
    assert_eq!(
        health["calls_past_deadline"],
        json!({ "faulty": { "total": 1, "running": 0 } })
    );
    // Other routes of the plugin serve on.
    assert_eq!(http(server.addr, "GET", "/faulty/ok", b"").status, 200);
}

#[test]
fn an_inline_call_that_returns_past_its_deadline_answers_504() {
    let s = samples();
    let server = TestServer::start_with(
        &[
            entry(faulty(), "faulty", json!({})),
            entry(&s.hello, "hello", json!({})),
        ],
        |service| service.with_handler_timeout(Duration::from_millis(100)),
        ServeOptions::default(),
    );
    for _ in 0..20 {
        assert_eq!(
            http(server.addr, "GET", "/faulty/sleep?ms=0", b"").status,
            200
        );
    }
    // Inline now: the call cannot be left behind, so it answers 504 when it returns.
    let response = http(server.addr, "GET", "/faulty/sleep?ms=300", b"");
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(json_of(&response)["plugin"], "faulty");
    let health = json_of(&http(server.addr, "GET", "/healthz", b""));
    assert_eq!(health["calls_past_deadline"]["faulty"]["total"], 1);
}

#[test]
fn a_plugin_with_too_many_calls_past_their_deadline_is_refused_503_until_they_return() {
    let server = server(Some(Duration::from_millis(100)));
    let addr = server.addr;
    let hang = Duration::from_millis(2500);
    let target = format!("/faulty/sleep?ms={}", hang.as_millis());
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..MAX_CALLS_PAST_DEADLINE)
            .map(|_| scope.spawn(|| http(addr, "GET", &target, b"").status))
            .collect();
        let statuses: Vec<u16> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        assert!(statuses.iter().all(|&s| s == 504), "{statuses:?}");
        let refused = http(addr, "GET", "/faulty/ok", b"");
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(json_of(&refused)["kind"], "overloaded");
        let health = http(addr, "GET", "/healthz", b"");
        assert_eq!(health.status, 503);
        assert_eq!(json_of(&health)["overloaded"], json!(["faulty"]));
        assert_eq!(http(addr, "GET", "/hello", b"").status, 200);
        std::thread::sleep(hang);
        assert_eq!(http(addr, "GET", "/faulty/ok", b"").status, 200);
        assert_eq!(http(addr, "GET", "/healthz", b"").status, 200);
    });
}

#[test]
fn a_call_whose_client_went_away_counts_as_running_unattended_until_it_returns() {
    use std::io::Write;
    let server = server(None);
    let mut client = std::net::TcpStream::connect(server.addr).unwrap();
    client
        .write_all(b"GET /faulty/sleep?ms=1500 HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    // No deadline was missed, but nobody waits for the call: it counts towards the cap.
    let health = json_of(&http(server.addr, "GET", "/healthz", b""));
    assert_eq!(
        health["calls_past_deadline"],
        json!({ "faulty": { "total": 0, "running": 1 } }),
        "{health}"
    );
    std::thread::sleep(Duration::from_millis(1300));
    let health = json_of(&http(server.addr, "GET", "/healthz", b""));
    assert_eq!(health["calls_past_deadline"], json!({}), "{health}");
}

//! HTTP edges: `/healthz` for load balancers, `Host`, path safety, what error bodies say, bind
//! failures and an empty configuration.

use crate::util::{Served, TestServer, entry, faulty, host, http, http_raw, samples, scratch};
use plugin_host::server::DEFAULT_BODY_LIMIT;
use serde_json::json;
use std::io::{Read, Write};

fn server() -> TestServer {
    let s = samples();
    TestServer::start(
        &[
            entry(&s.hello, "hello", json!({})),
            entry(&s.wordcount, "wordcount", json!({})),
            entry(faulty(), "faulty", json!({})),
        ],
        DEFAULT_BODY_LIMIT,
    )
}

/// Sends `raw` as is on a fresh connection and reads everything until the server closes.
fn send_raw(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn healthz_is_503_when_degraded_and_405_for_other_methods() {
    let server = server();
    assert_eq!(http(server.addr, "GET", "/healthz", b"").status, 200);
    let post = http(server.addr, "POST", "/healthz", b"");
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(http(server.addr, "GET", "/faulty/panic", b"").status, 500);
    let health = http(server.addr, "GET", "/healthz", b"");
    assert_eq!(health.status, 503, "{}", health.text());
    let body: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(
        (&body["status"], &body["poisoned"]),
        (&json!("degraded"), &json!(["faulty"]))
    );
    assert_eq!(http(server.addr, "HEAD", "/healthz", b"").status, 503);
}

#[test]
fn an_http_1_1_request_without_host_is_400() {
    let server = server();
    let answer = send_raw(
        server.addr,
        b"GET /hello HTTP/1.1\r\nconnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Host header"), "{answer}");
    // HTTP/1.0 has no such rule.
    let answer = send_raw(server.addr, b"GET /hello HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("hello from Rust"), "{answer}");
}

#[test]
fn dot_segments_are_removed_and_a_path_above_the_root_is_400() {
    let server = server();
    let get = |target: &str| http(server.addr, "GET", target, b"");
    // Removed before routing: the plugin sees the normalized path.
    let response = get("/cpp/files/docs/../readme.md");
    assert_eq!(
        (response.status, response.text()),
        (200, "file: readme.md".to_owned())
    );
    let response = get("/cpp/x/../files/%2e/a/%2E%2e/b");
    assert_eq!(
        (response.status, response.text()),
        (200, "file: b".to_owned())
    );
    // The issue's reproduction no longer reaches the catch-all parameter: it is `/etc/passwd`.
    let response = get("/cpp/files/a/../../../etc/passwd");
    assert_eq!(
        (response.status, response.text()),
        (
            404,
            r#"{"error":"no route matches /etc/passwd"}"#.to_owned()
        )
    );
    // One more `..`, raw or encoded, climbs above the root.
    for target in [
        "/cpp/files/a/../../../../etc/passwd",
        "/cpp/files/%2e%2e/%2e%2e/%2E%2E/etc/passwd",
        "/../hello",
    ] {
        let response = get(target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert!(
            response.text().contains("climbs above the root"),
            "{target}"
        );
    }
}

#[test]
fn parameters_are_percent_decoded_and_never_hold_a_dot_dot_segment() {
    let server = server();
    let get = |target: &str| http(server.addr, "GET", target, b"");
    let response = get("/hello/ada%20lovelace");
    assert_eq!(
        (response.status, response.text()),
        (200, "hello, ada lovelace".to_owned())
    );
    assert_eq!(get("/hello/%C3%A9mile").text(), "hello, émile");
    assert_eq!(get("/hello/a+b").text(), "hello, a+b");
    let refused = [
        ("/hello/%FF", "not valid UTF-8"),
        ("/hello/%zz", "invalid percent-encoding"),
        ("/hello/a%00b", "NUL"),
        ("/cpp/files/docs%2F..%2F..%2Fetc%2Fpasswd", "`..` segment"),
        ("/cpp/files/..%5Cwindows", "`..` segment"),
        ("/hello/..%2F", "`..` segment"),
    ];
    for (target, says) in refused {
        let response = get(target);
        assert_eq!(response.status, 400, "{target}: {}", response.text());
        assert!(
            response.text().contains(says),
            "{target}: {}",
            response.text()
        );
    }
}

#[test]
fn a_huge_method_or_path_is_not_echoed_back_whole() {
    let server = server();
    let method = "X".repeat(10_000);
    let response = http_raw(server.addr, &method, "/hello", &[], b"", None);
    assert_eq!(response.status, 405);
    assert!(response.body.len() < 400, "{} bytes", response.body.len());
    let path = format!("/{}", "p".repeat(10_000));
    let response = http(server.addr, "GET", &path, b"");
    assert_eq!(response.status, 404);
    assert!(response.body.len() < 400, "{} bytes", response.body.len());
}

#[test]
fn serve_says_which_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = host()
        .args(["serve", "--listen", &address, "--plugins-dir"])
        .arg(scratch("bind"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on {address}: address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn an_empty_plugin_folder_is_served_with_a_warning() {
    let served = Served::start(
        &["--plugins-dir".as_ref(), scratch("empty").as_os_str()],
        None,
    );
    assert_eq!(http(served.addr, "GET", "/healthz", b"").status, 200);
    assert_eq!(http(served.addr, "GET", "/anything", b"").status, 404);
    served.terminate();
    let (status, stderr) = served.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("no plugin is loaded"),
        "{stderr}"
    );
}

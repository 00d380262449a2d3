//! Connections that send nothing are closed: a header-read timeout, a keep-alive idle timeout
//! and a cap on open connections, with short settings.

use crate::util::{Served, TestServer, entry, samples, scratch, write_config};
use plugin_host::server::ServeOptions;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn server(options: ServeOptions) -> TestServer {
    TestServer::start_with(
        &[entry(&samples().hello, "hello", json!({}))],
        |service| service,
        options,
    )
}

fn options(header: u64, keepalive: u64, max_connections: usize) -> ServeOptions {
    ServeOptions {
        header_timeout: Duration::from_millis(header),
        keepalive_timeout: Duration::from_millis(keepalive),
        max_connections,
        ..ServeOptions::default()
    }
}

/// Waits up to `within` for the server to close `stream`; returns how long it took.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1024];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => return None,
        }
        if started.elapsed() >= within {
            return None;
        }
    }
}

/// Sends a keep-alive `GET /hello` and reads exactly its answer.
fn exchange(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"hello from Rust") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "{raw:?}");
        raw.push(byte[0]);
    }
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{raw:?}");
}

#[test]
fn a_connection_that_sends_nothing_or_half_a_head_is_closed_after_the_header_timeout() {
    let server = server(options(300, 10_000, 100));
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow")
        .unwrap();
    for stream in [&mut silent, &mut half] {
        let took = closed_within(stream, Duration::from_secs(3)).expect("closed");
        assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    // Header timeout long, keep-alive short: the idle wait is the keep-alive's.
    let server = server(options(10_000, 300, 100));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    exchange(&mut stream);
    let took = closed_within(&mut stream, Duration::from_secs(3)).expect("closed");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
}

#[test]
fn the_two_timeouts_are_distinct() {
    // Header timeout short, keep-alive long: an idle kept-alive connection stays open past the
    // header timeout and serves its next request.
    let server = server(options(200, 10_000, 100));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    exchange(&mut stream);
    std::thread::sleep(Duration::from_millis(600));
    exchange(&mut stream);
}

/// Opens `n` connections that send nothing.
fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

#[test]
fn connections_over_the_cap_get_503_and_are_closed() {
    let server = server(options(10_000, 10_000, 8));
    let mut open = idle_connections(server.addr, 8);
    std::thread::sleep(Duration::from_millis(200));
    let mut over = TcpStream::connect(server.addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(body.contains("too many connections"), "{answer}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{answer}"
    );
    // Some close: new clients are served again.
    open.truncate(4);
    std::thread::sleep(Duration::from_millis(200));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    exchange(&mut stream);
}

#[test]
fn idle_sockets_cannot_deny_service_for_longer_than_the_header_timeout() {
    // The reproduction, scaled down: a low open-file limit and more idle sockets than
    // it allows. The default cap (3/4 of the limit) keeps descriptors free, the cap's 503 and
    // the header timeout close the idle sockets, and new clients are served again.
    let dir = scratch("fd-limit");
    let config = write_config(&dir, &[(&samples().hello, "hello", "")]);
    let served = Served::start(
        &[
            "--header-timeout".as_ref(),
            "1".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        Some("ulimit -n 64"),
    );
    let mut kept = TcpStream::connect(served.addr).unwrap();
    exchange(&mut kept);
    let flood = idle_connections(served.addr, 80);
    std::thread::sleep(Duration::from_millis(1500));
    // The flood's sockets are closed by now (503 over the cap, header timeout under it): a new
    // client is served, and so is a kept-alive one.
    let mut fresh = TcpStream::connect(served.addr).unwrap();
    exchange(&mut fresh);
    exchange(&mut kept);
    drop(flood);
    served.terminate();
    let (status, stderr) = served.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("connection limit of 48 reached"),
        "no cap line in\n{stderr}"
    );
}

#[test]
fn a_body_that_does_not_arrive_in_full_is_408() {
    let server = TestServer::start_with(
        &[entry(&samples().wordcount, "wordcount", json!({}))],
        |service| service.with_body_timeout(Duration::from_millis(300)),
        ServeOptions::default(),
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"POST /words HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nto be")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut answer = String::new();
    let started = Instant::now();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn a_client_that_stops_reading_its_response_is_closed_after_the_keepalive_timeout() {
    const BODY: usize = 32 * 1024 * 1024;
    let server = TestServer::start_with(
        &[entry(&samples().greeter, "greeter", json!({}))],
        |service| service.with_body_limit(BODY),
        options(10_000, 300, 100),
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let head = format!("POST /c/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'x'; BODY]).unwrap();
    // The echo is far larger than the socket buffers: the server stalls writing it.
    std::thread::sleep(Duration::from_secs(2));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(
        received < BODY,
        "the whole echo arrived: the server waited for the reader"
    );
}

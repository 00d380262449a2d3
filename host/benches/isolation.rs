//! What isolation costs, each case against its baseline in the same run.
//!
//! Run: `cargo bench -p pluglet-host --bench isolation`.
//! - `round trip`: `Router::dispatch` of `GET /ping` to the `hello` sample run isolated (in a
//!   worker process, over the process protocol), against a raw ping-pong of 64 bytes over a Unix
//!   socket pair between this process and a child of its own. Goal: at most 2x the raw round
//!   trip.
//! - `spawn to ready`: creating and starting an isolated `hello` (process start, handshake,
//!   `start`), then stopping it. Goal: at most 10 ms.

use criterion::{Criterion, criterion_group};
use plugin_host::process::{ProcessOptions, ProcessPlugin};
use plugin_host::{Registry, Request};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// Set in the environment of the echo child.
const ECHO: &str = "ISOLATION_BENCH_ECHO";

/// The echo child: answers every 64 bytes on its standard input (a socket) with the same.
fn echo() {
    let socket = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("stdin");
    let mut socket = std::fs::File::from(socket);
    let mut buffer = [0u8; 64];
    while socket.read_exact(&mut buffer).is_ok() {
        if socket.write_all(&buffer).is_err() {
            return;
        }
    }
}

fn options() -> ProcessOptions {
    ProcessOptions {
        worker: Some(sample_plugins::host_binary().to_owned()),
        ..Default::default()
    }
}

fn isolation(c: &mut Criterion) {
    let hello = &sample_plugins::samples().hello;
    let plugin = ProcessPlugin::isolated(hello, &Default::default(), options())
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::new();
    registry
        .register(plugin.create(None, &serde_json::json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let request = Request::new("GET", "/ping");

    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ECHO, "1")
        .stdin(OwnedFd::from(theirs))
        .spawn()
        .unwrap();

    let mut group = c.benchmark_group("round trip");
    group.bench_function("isolated: Router::dispatch of GET /ping to a worker", |b| {
        b.iter(|| {
            let response = router.dispatch(black_box(&request)).unwrap();
            assert_eq!(response.status, 200);
        })
    });
    group.bench_function("baseline: raw 64-byte ping-pong over a Unix socket", |b| {
        let mut buffer = [7u8; 64];
        b.iter(|| {
            ours.write_all(black_box(&buffer)).unwrap();
            ours.read_exact(&mut buffer).unwrap();
        })
    });
    group.finish();
    drop(ours);
    let _ = child.wait();
    drop(router);
    registry.stop_all().unwrap();

    let mut group = c.benchmark_group("spawn to ready");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("isolated hello: create and start (then stop)", |b| {
        b.iter_custom(|iterations| {
            let mut ready = Duration::ZERO;
            for _ in 0..iterations {
                let started = std::time::Instant::now();
                let instance = plugin.create(None, &serde_json::json!({})).unwrap();
                instance.start().unwrap();
                ready += started.elapsed();
                instance.stop().unwrap();
            }
            ready
        })
    });
    group.finish();
}

criterion_group!(benches, isolation);

fn main() {
    if std::env::var_os(ECHO).is_some() {
        echo();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

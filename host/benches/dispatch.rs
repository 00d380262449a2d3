//! What the ABI costs per request.
//!
//! Run: `cargo bench -p pluglet-host --bench dispatch`. Both cases do the same route lookup on the
//! same router; they differ only in what is called:
//! - `abi`: `Router::dispatch` to `GET /ping` of the `hello` sample, a Rust plugin loaded from
//!   its shared library, through the C ABI and the SDK (request view, writer callbacks, panic
//!   guard);
//! - `baseline`: `Router::lookup` followed by a plain Rust call of an equivalent function.
//!
//! The goal is `abi` within 1.25x of `baseline`.

use criterion::{Criterion, criterion_group, criterion_main};
use plugin_host::{Factory, Lookup, Registry, Request, Response};
use std::hint::black_box;

/// What `hello`'s `/ping` handler does, as a plain Rust function.
#[inline(never)]
fn ping<'p>(_: &Request<'_>, params: impl Iterator<Item = (&'p str, &'p str)>) -> Response {
    black_box(params.count());
    Response::default()
}

fn dispatch(c: &mut Criterion) {
    let hello = &sample_plugins::samples().hello;
    let registry = Registry::new();
    let instance = Factory::load(hello)
        .and_then(|f| f.create("hello", &serde_json::json!({})))
        .unwrap_or_else(|e| panic!("{e}"));
    registry.register(instance).unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let request = Request::new("GET", "/ping");

    let mut group = c.benchmark_group("dispatch GET /ping");
    group.bench_function("abi: Router::dispatch to the loaded plugin", |b| {
        b.iter(|| {
            let response = router.dispatch(black_box(&request)).unwrap();
            assert_eq!(response.status, 200);
        })
    });
    group.bench_function("baseline: Router::lookup + plain Rust call", |b| {
        b.iter(|| {
            let request = black_box(&request);
            let Lookup::Found(route) = router.lookup(request.method(), request.path()) else {
                unreachable!("/ping is routed")
            };
            let response = ping(request, route.params());
            assert_eq!(response.status, 200);
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);

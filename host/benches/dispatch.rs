//! What the ABI and the hook chain cost per request.
//!
//! Run: `cargo bench -p pluglet-host --bench dispatch`. The cases do the same route lookup;
//! they differ only in what is called:
//! - `abi`: `Router::dispatch` to `GET /ping` of the `hello` sample, a Rust plugin loaded from
//!   its shared library, through the C ABI and the SDK (request view, writer callbacks, panic
//!   guard);
//! - `hook`: the same, with one more plugin registered before `hello`, built into the
//!   benchmark (`Factory::builtin`), whose one hook, `on_request`, does nothing: what a hook
//!   adds;
//! - `hooks`: the same with a plugin whose `on_request` and `on_response` hooks do nothing;
//! - `baseline`: `Router::lookup` followed by a plain Rust call of an equivalent function.
//!
//! The goals: `abi` within 1.25x of `baseline`; `hook` less than 10 ns above `abi`.

use criterion::{Criterion, criterion_group, criterion_main};
use plugin_api::{Hooks, Host, NoConfig, Plugin, Routes};
use plugin_host::{Factory, Lookup, Registry, Request, Response, Router};
use std::hint::black_box;

/// A plugin with no routes whose `on_request` hook, and `on_response` hook when `RESPONSE`,
/// are the SDK's defaults, which do nothing.
struct NoopHooks<const RESPONSE: bool>;

impl<const RESPONSE: bool> Plugin for NoopHooks<RESPONSE> {
    const NAME: &'static str = "noop";
    const VERSION: &'static str = "1.0.0";
    const HOOKS: Hooks = Hooks {
        on_request: true,
        on_response: RESPONSE,
        ..Hooks::NONE
    };
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> plugin_api::Result<Self> {
        Ok(NoopHooks)
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> plugin_api::Result<()> {
        Ok(())
    }
}

/// The router of a started registry of `factories`' instances, registered in this order (the
/// router keeps them).
fn serve(factories: &[&Factory]) -> Router {
    let registry = Registry::new();
    for factory in factories {
        let instance = factory
            .create(factory.name(), &serde_json::json!({}))
            .unwrap_or_else(|e| panic!("{e}"));
        registry.register(instance).unwrap();
    }
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    registry.router().unwrap()
}

/// What `hello`'s `/ping` handler does, as a plain Rust function.
#[inline(never)]
fn ping<'p>(_: &Request<'_>, params: impl Iterator<Item = (&'p str, &'p str)>) -> Response {
    black_box(params.count());
    Response::default()
}

fn dispatch(c: &mut Criterion) {
    let hello = Factory::load(&sample_plugins::samples().hello).unwrap_or_else(|e| panic!("{e}"));
    let one = Factory::builtin::<NoopHooks<false>>().unwrap_or_else(|e| panic!("{e}"));
    let both = Factory::builtin::<NoopHooks<true>>().unwrap_or_else(|e| panic!("{e}"));
    let router = serve(&[&hello]);
    let hooked_once = serve(&[&one, &hello]);
    let hooked = serve(&[&both, &hello]);
    let request = Request::new("GET", "/ping");

    let mut group = c.benchmark_group("dispatch GET /ping");
    group.bench_function("abi: Router::dispatch to the loaded plugin", |b| {
        b.iter(|| {
            let response = router.dispatch(black_box(&request)).unwrap();
            assert_eq!(response.status, 200);
        })
    });
    group.bench_function(
        "hook: the same with one no-op on_request hook in front",
        |b| {
            b.iter(|| {
                let response = hooked_once.dispatch(black_box(&request)).unwrap();
                assert_eq!(response.status, 200);
            })
        },
    );
    group.bench_function(
        "hooks: the same with no-op on_request and on_response hooks",
        |b| {
            b.iter(|| {
                let response = hooked.dispatch(black_box(&request)).unwrap();
                assert_eq!(response.status, 200);
            })
        },
    );
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

//! Router lookup as the route table grows.
//!
//! Run: `cargo bench -p pluglet-host --bench lookup`. Looks up the last route of routers with 10,
//! 1,000 and 10,000 routes (`/r{i}/items/{id}`, all from one built-in plugin). The goal is the
//! 10,000-route lookup within 2x of the 10-route lookup.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use plugin_api::{Host, Plugin, Request, Response, Result, Routes};
use plugin_host::{Factory, Lookup, Registry};
use serde::Deserialize;
use std::hint::black_box;

/// A plugin with `count` routes.
struct Many {
    count: usize,
}

#[derive(Deserialize)]
struct Config {
    count: usize,
}

impl Many {
    fn noop(&self, _: &Request<'_>, _: &mut Response<'_>) -> Result<()> {
        Ok(())
    }
}

impl Plugin for Many {
    const NAME: &'static str = "many";
    const VERSION: &'static str = "1.0.0";
    type Config = Config;

    fn create(config: Config, _: Host) -> Result<Self> {
        Ok(Self {
            count: config.count,
        })
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        for i in 0..self.count {
            routes.get(&format!("/r{i}/items/{{id}}"), Self::noop)?;
        }
        Ok(())
    }
}

fn lookup(c: &mut Criterion) {
    let factory = Factory::builtin::<Many>().unwrap();
    let mut group = c.benchmark_group("router lookup");
    for count in [10usize, 1_000, 10_000] {
        let registry = Registry::new();
        let instance = factory
            .create("many", &serde_json::json!({ "count": count }))
            .unwrap();
        registry.register(instance).unwrap();
        registry.start_all().unwrap_or_else(|e| panic!("{e}"));
        let router = registry.router().unwrap();
        let path = format!("/r{}/items/42", count - 1);
        group.bench_with_input(BenchmarkId::from_parameter(count), &path, |b, path| {
            b.iter(|| {
                let Lookup::Found(route) = router.lookup("GET", black_box(path)) else {
                    unreachable!("the route exists")
                };
                black_box(route.params().count())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);

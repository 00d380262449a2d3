//! The main job until the HTTP server lands: load the four sample plugins (Rust, C, C++),
//! start them in order, print the registry and the routes, dispatch a few requests through the
//! shared router, and stop them in reverse order.
//!
//! Run: `cargo run -p pluglet-host --example demo` (it builds the samples itself).

use plugin_host::{FactoryRegistry, Registry, Request};
use serde_json::json;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let samples = sample_plugins::samples();
    let factories = FactoryRegistry::new();
    for path in [
        &samples.hello,
        &samples.greeter,
        &samples.wordcount,
        &samples.counter,
    ] {
        factories.load(path)?;
    }
    let registry = Registry::new();
    for (factory, instance, config) in [
        ("hello", "hello", json!({})),
        ("greeter", "greeter", json!({})),
        ("wordcount", "wordcount", json!({})),
        (
            "counter",
            "visits",
            json!({ "path": "/visits", "start": 41 }),
        ),
    ] {
        registry.register(factories.create(factory, instance, &config)?)?;
    }
    registry.start_all()?;

    println!("plugins (start order):");
    for instance in registry.instances() {
        let file = instance
            .file()
            .map_or("built-in".into(), |f| f.display().to_string());
        println!(
            "  {:<10} {:<10} {:<6} {file}",
            instance.name(),
            instance.plugin_name(),
            instance.version()
        );
    }
    let router = registry.router()?;
    println!("routes:");
    for route in router.routes() {
        println!(
            "  {:<6} {:<20} -> {}",
            route.method, route.path, route.plugin
        );
    }

    println!("requests:");
    let requests = [
        Request::new("GET", "/hello/world?punctuation=!"),
        Request::new("GET", "/greet/ada?greeting=Hi"),
        Request::new("POST", "/words").body(b"plugins in three languages"),
        Request::new("POST", "/visits"),
    ];
    for request in &requests {
        let response = router.dispatch(request)?;
        println!(
            "  {} {} -> {} {}",
            request.method(),
            request.path(),
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    // A router keeps its plugins started; drop it before stopping them.
    drop(router);
    registry.stop_all()?;
    Ok(())
}

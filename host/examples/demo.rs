//! The sample plugins through the library API alone, without HTTP: stage them with the
//! configuration `plugin-host serve` is shown with in the README (the same plugins: Rust, C,
//! C++, and Go when `go` is installed), load and create them as `serve` does
//! (`plugin_host::config::deploy`: each library loaded once, every key of an entry applied),
//! start them in order, print them and their routes, dispatch one request to each through the
//! shared router, and stop them in reverse order.
//!
//! Run: `cargo run -p pluglet-host --example demo [FOLDER]` (it builds the samples itself, and
//! stages them in `target/samples/`, or FOLDER).

use plugin_host::{Request, config};
use std::path::PathBuf;
use std::process::ExitCode;

/// A demo request: the instance it shows, method, target, headers, body.
type DemoRequest = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [u8],
);

/// One request for each sample instance the staged configuration serves. The hook plugins have
/// no routes of their own: theirs goes to a route they stand in front of (`ratelimit` does not
/// limit a request without a connection).
const REQUESTS: [DemoRequest; 9] = [
    ("timing", "GET", "/ping", &[], b""),
    ("ratelimit", "GET", "/likes", &[], b""),
    (
        "apikey",
        "GET",
        "/hello",
        &[("x-api-key", sample_plugins::DEMO_KEY)],
        b"",
    ),
    ("hello", "GET", "/hello/world?punctuation=!", &[], b""),
    ("greeter", "GET", "/greet/ada?greeting=Hi", &[], b""),
    (
        "wordcount",
        "POST",
        "/words",
        &[],
        b"plugins in four languages",
    ),
    ("visits", "POST", "/visits", &[], b""),
    ("likes", "POST", "/likes", &[], b""),
    ("shout", "GET", "/shout/hey", &[], b""),
];

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(plugin_host::stderr_colours())
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
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(sample_plugins::staging_dir, PathBuf::from);
    let staged = sample_plugins::stage(&dir)?;
    let registry = config::deploy(&config::read_config(&staged)?, false)?;
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
    for (instance, method, target, headers, body) in REQUESTS {
        if registry.get(instance).is_none() {
            continue;
        }
        let mut request = Request::new(method, target).body(body);
        for (name, value) in headers {
            request = request.header(name, value.as_bytes());
        }
        let response = router.dispatch(&request)?;
        let timing = response
            .headers
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map_or_else(String::new, |v| format!(" (server-timing: {v})"));
        println!(
            "  {} {} -> {} {}{timing}",
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

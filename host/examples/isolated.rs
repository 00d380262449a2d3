//! An application that runs a plugin isolated without the `plugin-host` binary: its own
//! executable is the worker. It calls `plugin_host::process::worker_main()` first thing in
//! `main`; when the host side of this very program starts a worker, that call runs the plugin
//! and never returns.
//!
//! Run: `cargo run -p pluglet-host --example isolated -- PLUGIN_LIBRARY [METHOD PATH]` (the
//! `hello` sample answers `GET /hello`). It prints the worker's pid and the plugin's answer.

use plugin_host::process::{ProcessOptions, ProcessPlugin};
use plugin_host::{Registry, Request};
use std::process::ExitCode;

fn main() -> ExitCode {
    // A worker started by this application runs here, and exits when it is stopped.
    plugin_host::process::worker_main();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let library = args
        .next()
        .ok_or("usage: isolated PLUGIN_LIBRARY [METHOD PATH]")?;
    let method = args.next().unwrap_or_else(|| "GET".to_owned());
    let path = args.next().unwrap_or_else(|| "/hello".to_owned());
    // `ProcessOptions::worker` is left unset: the worker is this executable.
    let plugin = ProcessPlugin::isolated(&library, &Default::default(), ProcessOptions::default())?;
    let registry = Registry::new();
    registry.register(plugin.create(None, &serde_json::json!({}))?)?;
    registry.start_all()?;
    let router = registry.router()?;
    let instance = registry.instances().remove(0);
    let pid = instance
        .process()
        .and_then(|(_, pid, _)| pid)
        .ok_or("no worker")?;
    let response = router.dispatch(&Request::new(&method, &path))?;
    println!("worker pid {pid}");
    println!(
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    drop(router);
    registry.stop_all()?;
    Ok(())
}

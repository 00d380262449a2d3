//! The three commands.

use crate::{Cli, Command, Source};
use plugin_host::config::{self, PluginEntry};
use plugin_host::server::{PluginService, serve};
use plugin_host::{Error, Factory, Instance, LoadOptions, Registry, Router};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub fn run(cli: Cli) -> Result<ExitCode> {
    let insecure = cli.allow_insecure_permissions;
    match cli.command {
        Command::Serve {
            source,
            listen,
            body_limit,
            grace,
        } => {
            let service_config = (body_limit, Duration::from_secs(grace));
            serve_command(&source, insecure, listen, service_config)
        }
        Command::List { source } => list(&source, insecure),
        Command::Check { files } => Ok(check(&files, insecure)),
    }
}

fn entries(source: &Source) -> Result<Vec<PluginEntry>> {
    Ok(match (&source.config, &source.plugins_dir) {
        (Some(file), _) => config::read_config(file)?,
        (None, Some(dir)) => config::scan_dir(dir)?,
        (None, None) => unreachable!("clap requires one source"),
    })
}

/// Loads and starts the plugins, and builds their router.
fn start(source: &Source, insecure: bool) -> Result<(Registry, Router)> {
    let registry = config::deploy(&entries(source)?, insecure)?;
    registry.start_all()?;
    match registry.router() {
        Ok(router) => Ok((registry, router)),
        Err(e) => {
            if let Err(stop) = registry.stop_all() {
                eprintln!("{stop}");
            }
            Err(e.into())
        }
    }
}

fn file_of(instance: &Instance) -> String {
    instance
        .file()
        .map_or_else(|| "built-in".to_owned(), |f| f.display().to_string())
}

fn print_table(registry: &Registry, router: &Router) {
    println!(
        "{:<20} {:<16} {:<10} {:<9} FILE",
        "PLUGIN", "TYPE", "VERSION", "STATE"
    );
    for instance in registry.instances() {
        let state = if instance.poisoned().is_some() {
            "poisoned".to_owned()
        } else {
            format!("{:?}", instance.state()).to_lowercase()
        };
        println!(
            "{:<20} {:<16} {:<10} {:<9} {}",
            instance.name(),
            instance.plugin_name(),
            instance.version(),
            state,
            file_of(&instance)
        );
    }
    println!();
    println!("{:<8} {:<32} PLUGIN", "METHOD", "PATH");
    for route in router.routes() {
        println!("{:<8} {:<32} {}", route.method, route.path, route.plugin);
    }
}

fn serve_command(
    source: &Source,
    insecure: bool,
    listen: std::net::SocketAddr,
    (body_limit, grace): (usize, Duration),
) -> Result<ExitCode> {
    // At least two workers, so that the first call of a slow handler (which runs inline until it
    // is known to be slow, see `PluginService`) never stalls the whole server.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(listen))?;
    let address = listener.local_addr()?;
    let (registry, router) = start(source, insecure)?;
    print_table(&registry, &router);
    println!("\nlistening on http://{address}");
    std::io::stdout().flush()?;
    let service = PluginService::new(router).with_body_limit(body_limit);
    let drained = runtime.block_on(serve(listener, service, shutdown_signal(), grace));
    if !drained {
        tracing::warn!("requests still in flight after the grace period of {grace:?}");
    }
    // The grace period is over. A handler still running on the blocking pool keeps its plugin
    // started (stop_all then reports it in use), so nothing is stopped under a running handler.
    runtime.shutdown_timeout(Duration::ZERO);
    tracing::info!("stopping plugins");
    registry.stop_all()?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received: draining requests");
}

fn list(source: &Source, insecure: bool) -> Result<ExitCode> {
    let (registry, router) = start(source, insecure)?;
    print_table(&registry, &router);
    drop(router);
    registry.stop_all()?;
    Ok(ExitCode::SUCCESS)
}

/// One file's verdict: the started instance, or why it failed.
fn check_one(file: &Path, insecure: bool) -> std::result::Result<(Factory, Instance), Error> {
    let options = LoadOptions {
        allow_insecure_permissions: insecure,
        ..LoadOptions::default()
    };
    let factory = Factory::load_with(file, &options)?;
    let instance = factory.create(factory.name(), &serde_json::json!({}))?;
    instance.start()?;
    Ok((factory, instance))
}

fn check(files: &[std::path::PathBuf], insecure: bool) -> ExitCode {
    let accepted = Registry::new();
    let mut failures = 0;
    for file in files {
        let verdict = check_one(file, insecure).and_then(|(factory, instance)| {
            if let Err(duplicate) = accepted.register(instance.clone()) {
                let _ = instance.stop();
                return Err(duplicate);
            }
            let router = match accepted.router() {
                Ok(router) => router,
                Err(conflict) => {
                    let _ = accepted.unregister(instance.name());
                    let _ = instance.stop();
                    return Err(conflict);
                }
            };
            let routes: Vec<String> = router
                .routes()
                .into_iter()
                .filter(|r| r.plugin == instance.name())
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            let (major, minor) = factory.abi_version();
            let found = factory.inspection().map_or_else(String::new, |i| {
                let mark = i.abi_mark.map_or(
                    "no ABI mark (checked after loading)".to_owned(),
                    |(major, minor)| format!("ABI mark {major}.{minor}"),
                );
                format!(
                    "{} {}, exports plugin_factory, {mark}; ",
                    i.format, i.architecture
                )
            });
            Ok(format!(
                "{found}plugin `{}` {}, ABI {major}.{minor}, {} route(s): {}",
                factory.name(),
                factory.version(),
                routes.len(),
                routes.join(", ")
            ))
        });
        match verdict {
            Ok(summary) => println!("ok    {}: {summary}", file.display()),
            Err(e) => {
                failures += 1;
                println!("FAIL  {}: {e}", file.display());
            }
        }
    }
    if let Err(e) = accepted.stop_all() {
        eprintln!("{e}");
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{failures} of {} file(s) failed", files.len());
        ExitCode::FAILURE
    }
}

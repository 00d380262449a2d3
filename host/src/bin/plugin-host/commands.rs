//! What each command does: `serve`, `list` and `check` here; `new`, `include-dir` and `sdk-dir`
//! through `scaffold`, which writes their files.

use crate::reload::{self, Reloader, Trigger, Watch};
use crate::{Cli, Command, MetricsAt, Source, scaffold};
use plugin_host::config::{self, PluginEntry, Run};
use plugin_host::metrics::{METRICS_PATH, Metrics};
use plugin_host::process::Mode;
use plugin_host::server::{PluginService, ServeOptions, serve, serve_metrics};
use plugin_host::{Deployment, Error, ErrorKind, Factory, Instance, Registry, Router, State};
use std::io::Write;
use std::path::PathBuf;
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
            handler_timeout,
            header_timeout,
            keepalive_timeout,
            max_connections,
            metrics,
            watch,
        } => {
            let defaults = ServeOptions::default();
            let options = ServeOptions {
                grace: grace.0,
                header_timeout: header_timeout.0,
                keepalive_timeout: keepalive_timeout.0,
                max_connections: max_connections.unwrap_or(defaults.max_connections),
            };
            let settings = Settings {
                listen,
                body_limit,
                handler_timeout: handler_timeout.0,
                options,
                metrics,
                watch,
            };
            serve_command(&source, insecure, &settings)
        }
        Command::List { source } => list(&source, insecure),
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = scaffold::new_project(&name, lang, &dir)?;
            let mut out = std::io::stdout();
            writeln!(out, "created {} ({lang} plugin `{name}`):", dir.display())?;
            for file in files {
                writeln!(out, "  {}", file.display())?;
            }
            writeln!(out, "next: see {}", dir.join("README.md").display())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::IncludeDir { dir } => {
            writeln!(
                std::io::stdout(),
                "{}",
                scaffold::include_dir(dir)?.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SdkDir { dir } => {
            writeln!(std::io::stdout(), "{}", scaffold::sdk_dir(dir)?.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files, config } => {
            let entries = match config {
                Some(config) => config::read_config(&config)?,
                None => files.into_iter().map(PluginEntry::new).collect(),
            };
            Ok(check(&entries, insecure))
        }
    }
}

fn entries(source: &Source) -> Result<Vec<PluginEntry>> {
    Ok(match (&source.config, &source.plugins_dir) {
        (Some(file), _) => config::read_config(file)?,
        (None, Some(dir)) => config::scan_dir(dir)?,
        (None, None) => unreachable!("clap requires one source"),
    })
}

/// Loads and starts the plugins of `entries`, and builds their router.
fn start(entries: &[PluginEntry], insecure: bool) -> Result<(Registry, Router)> {
    let registry = config::deploy(entries, insecure)?;
    registry.start_all()?;
    match registry.router() {
        Ok(router) => Ok((registry, router)),
        Err(e) => {
            if let Err(stop) = registry.stop_all() {
                tracing::error!("{stop}");
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

/// An instance's state (its child's, for a plugin in a process) and where it runs:
/// `in-process`, or `isolated`/`program` with the child's pid.
fn where_it_runs(instance: &Instance) -> (String, String) {
    let state = if instance.poisoned().is_some() {
        "poisoned".to_owned()
    } else {
        format!("{:?}", instance.state()).to_lowercase()
    };
    match instance.process() {
        None => (state, "in-process".to_owned()),
        Some((mode, pid, child)) => {
            let mode = mode.as_str();
            let pid = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let state = match (instance.state(), child) {
                (State::Started, child) => child.as_str().to_owned(),
                _ => state,
            };
            (state, format!("{mode} pid {pid}"))
        }
    }
}

/// A row of the plugins' table.
enum Row<'a> {
    /// An instance, created (and started, unless that failed).
    Created(Instance),
    /// The entry of a plugin in a child process that `list` did not start, and how it would
    /// run: what the entry says.
    NotStarted(&'a PluginEntry, Mode),
}

impl Row<'_> {
    /// The row's cells: plugin, type, version, state, where it runs, file.
    fn cells(&self) -> [String; 6] {
        match self {
            Row::Created(instance) => {
                let (state, runs) = where_it_runs(instance);
                [
                    instance.name().to_owned(),
                    instance.plugin_name().to_owned(),
                    instance.version().to_owned(),
                    state,
                    runs,
                    file_of(instance),
                ]
            }
            Row::NotStarted(entry, mode) => {
                let unknown = || "-".to_owned();
                [
                    entry.name.clone().unwrap_or_else(unknown),
                    unknown(),
                    unknown(),
                    "not started".to_owned(),
                    mode.as_str().to_owned(),
                    entry.path.display().to_string(),
                ]
            }
        }
    }
}

fn write_table(out: &mut impl Write, rows: &[Row<'_>], router: &Router) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<16} {:<10} {:<11} {:<18} FILE",
        "PLUGIN", "TYPE", "VERSION", "STATE", "RUNS"
    )?;
    for row in rows {
        let [plugin, kind, version, state, runs, file] = row.cells();
        writeln!(
            out,
            "{plugin:<20} {kind:<16} {version:<10} {state:<11} {runs:<18} {file}"
        )?;
    }
    writeln!(out)?;
    writeln!(out, "{:<8} {:<32} PLUGIN", "METHOD", "PATH")?;
    for route in router.routes() {
        writeln!(
            out,
            "{:<8} {:<32} {}",
            route.method, route.path, route.plugin
        )?;
    }
    let hooked: Vec<(&str, String)> = router
        .plugins()
        .into_iter()
        .zip(router.hook_sets())
        .filter(|(_, hooks)| hooks.any())
        .map(|(plugin, hooks)| (plugin, hooks.names().join(", ")))
        .collect();
    if !hooked.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<20} HOOKS (requests pass them in this order, responses in reverse)",
            "PLUGIN"
        )?;
        for (plugin, hooks) in hooked {
            writeln!(out, "{plugin:<20} {hooks}")?;
        }
    }
    Ok(())
}

/// What `serve` was asked for.
struct Settings {
    listen: std::net::SocketAddr,
    body_limit: usize,
    handler_timeout: Duration,
    options: ServeOptions,
    metrics: MetricsAt,
    /// Reload when the configuration or a plugin file changes.
    watch: bool,
}

/// The exit status of `serve` when a plugin did not stop cleanly: its `stop` failed or got no
/// answer (a child process is then ended with SIGTERM or SIGKILL), or an in-process plugin was
/// left started because a call was still running in its handler (it is never stopped under
/// one). Nothing runs any more once `serve` has exited either way.
const INCOMPLETE_SHUTDOWN: u8 = 3;

/// The exit status of `serve` when every plugin stopped cleanly but requests were still in
/// flight at the end of the grace period: they were answered 503 (the host is stopping).
const REQUESTS_CUT_SHORT: u8 = 4;

fn serve_command(source: &Source, insecure: bool, settings: &Settings) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()?;
    let listen = settings.listen;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| format!("cannot listen on {listen}: {}", io_reason(&e)))?;
    let address = listener.local_addr()?;
    let scrapes = match settings.metrics {
        MetricsAt::Apart(at) => {
            let scrapes = runtime
                .block_on(tokio::net::TcpListener::bind(at))
                .map_err(|e| format!("cannot listen on {at} (--metrics): {}", io_reason(&e)))?;
            Some(scrapes)
        }
        MetricsAt::On | MetricsAt::Off => None,
    };
    // Everything that can fail before serving is set up before any plugin starts: a plugin
    // is never dropped without its `stop`.
    let trigger = Trigger::default();
    let (shutdown, hangup) = {
        let _entered = runtime.enter();
        (shutdown_signal()?, hangup_signal(trigger.clone())?)
    };
    let reload_source = reload_source(source);
    let watch = match settings.watch {
        true => Some(Watch::new(&reload_source, trigger.clone())?),
        false => None,
    };
    let entries = entries(source)?;
    let mut deployment = Deployment::new(insecure);
    let router = match deployment.reload(&entries)?.router {
        Some(router) => router,
        // Nothing to start (no entries): nothing changed.
        None => deployment.registry().router()?,
    };
    let rows: Vec<Row<'_>> = deployment
        .registry()
        .instances()
        .into_iter()
        .map(Row::Created)
        .collect();
    // Standard output may be closed or a broken pipe: serving goes on regardless.
    let _ = write_table(&mut std::io::stdout(), &rows, &router)
        .and_then(|()| writeln!(std::io::stdout(), "\nlistening on http://{address}"))
        .and_then(
            |()| match scrapes.as_ref().map(tokio::net::TcpListener::local_addr) {
                Some(Ok(at)) => writeln!(std::io::stdout(), "metrics on http://{at}{METRICS_PATH}"),
                _ => Ok(()),
            },
        )
        .and_then(|()| std::io::stdout().flush());
    drop(rows);
    let service = PluginService::new(router)
        .with_body_limit(settings.body_limit)
        .with_handler_timeout(settings.handler_timeout);
    let options = &settings.options;
    let service = match (settings.metrics, scrapes) {
        (MetricsAt::On, _) => service.with_metrics(Metrics::new()),
        (MetricsAt::Apart(_), Some(scrapes)) => {
            let service = service.with_metrics_elsewhere(Metrics::new());
            let (served, options) = (service.clone(), options.clone());
            // Ends with the runtime, after `serve`.
            runtime.spawn(async move {
                serve_metrics(scrapes, served, std::future::pending(), &options).await;
            });
            service
        }
        _ => service,
    };
    let started = Reloader::start(
        reload_source,
        deployment,
        (service.clone(), options.grace),
        trigger.clone(),
        watch,
    );
    let reloader = match started {
        Ok(reloader) => reloader,
        Err(failed) => {
            let (error, mut deployment) = *failed;
            stop_deployment(&mut deployment);
            return Err(error.into());
        }
    };
    runtime.spawn(hangup);
    // No reload starts once a shutdown has begun.
    let shutdown = async move {
        shutdown.await;
        trigger.close();
    };
    // `serve` answered the requests still in flight at the end of the grace period (503).
    let drained = runtime.block_on(serve(listener, service, shutdown, options));
    // No new call can start once the runtime is down. A call still running in-process keeps
    // its plugin started (`close_and_stop_all` never stops an in-process instance under a
    // running handler; it names it); a child process is stopped whatever runs in it.
    runtime.shutdown_timeout(Duration::ZERO);
    // A reload that was running has finished: what runs now is the deployment's.
    let mut deployment = reloader.stop();
    tracing::info!("stopping plugins");
    match stop_deployment(&mut deployment) {
        true if drained => Ok(ExitCode::SUCCESS),
        true => Ok(ExitCode::from(REQUESTS_CUT_SHORT)),
        false => Ok(ExitCode::from(INCOMPLETE_SHUTDOWN)),
    }
}

/// Stops the deployment's plugins in reverse order, then those that reloads retired but could
/// not stop (a call still ran in them); logs each failure. Whether every one stopped cleanly.
fn stop_deployment(deployment: &mut Deployment) -> bool {
    let mut errors = deployment
        .registry()
        .close_and_stop_all()
        .err()
        .map_or_else(Vec::new, |errors| errors.0);
    errors.extend(reload::stop_pending(deployment, true));
    for error in &errors {
        tracing::error!("{error}");
    }
    errors.is_empty()
}

/// What a reload reads again: the configuration file, or the plugin folder.
fn reload_source(source: &Source) -> reload::Source {
    let (path, folder) = match (&source.config, &source.plugins_dir) {
        (Some(file), _) => (file.clone(), false),
        (None, Some(dir)) => (dir.clone(), true),
        (None, None) => unreachable!("clap requires one source"),
    };
    let source = source.clone();
    reload::Source {
        read: Box::new(move || entries(&source)),
        path,
        folder,
    }
}

/// Listens for SIGHUP from now on (so that one sent as soon as `serve` says it listens is
/// neither missed nor ends the process, as its default action would); the task that asks
/// `trigger` for a reload at each.
fn hangup_signal(trigger: Trigger) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(async move {
        #[cfg(unix)]
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            trigger.reload();
        }
        #[cfg(not(unix))]
        let _ = trigger;
    })
}

/// The worker threads of `serve`: one per core, and at least two, so that one is always free
/// while another runs a plugin call inline (see `PluginService`).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// An I/O error's reason, without the OS error number: `permission denied`.
fn io_reason(error: &std::io::Error) -> String {
    let text = error.to_string();
    let reason = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = reason.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// Listens for SIGINT and SIGTERM from now on (so that a signal sent as soon as `serve` says it
/// listens is not missed), and completes when one arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received: draining requests");
    })
}

/// Prints what the configuration says, in its order, without serving and without starting a
/// child process: the plugins that run in this process are loaded, created and started, as
/// `serve` does, for their names, versions and routes, then stopped; an isolated library or a
/// program is a row `not started`, with what its entry says (its name, if it gives one, and
/// its file), and without routes, which only the running plugin tells (`check --config` starts
/// it). A plugin process that `list` started would have to be stopped again at once, and its
/// `serving` would say nothing of what `serve` will see.
fn list(source: &Source, insecure: bool) -> Result<ExitCode> {
    let entries = entries(source)?;
    let in_process: Vec<PluginEntry> = entries
        .iter()
        .filter(|entry| matches!(entry.run, Run::InProcess))
        .cloned()
        .collect();
    let (registry, router) = start(&in_process, insecure)?;
    let mut instances = registry.instances().into_iter();
    let rows: Vec<Row<'_>> = entries
        .iter()
        .filter_map(|entry| match entry.run {
            Run::InProcess => instances.next().map(Row::Created),
            Run::Isolated(_) => Some(Row::NotStarted(entry, Mode::Isolated)),
            Run::Program { .. } => Some(Row::NotStarted(entry, Mode::Program)),
        })
        .collect();
    let mut out = std::io::stdout();
    write_table(&mut out, &rows, &router)?;
    let children = entries.len() - in_process.len();
    if children > 0 {
        writeln!(
            out,
            "\n{children} plugin(s) in child processes not started, their routes not listed: \
             `plugin-host check --config FILE` starts them and lists their routes"
        )?;
    }
    drop(router);
    registry.stop_all()?;
    Ok(ExitCode::SUCCESS)
}

/// One entry's verdict: its started instance, and its factory when it runs in-process; or why
/// it failed.
fn check_one(
    loader: &mut config::Loader,
    entry: &PluginEntry,
) -> std::result::Result<(Option<Factory>, Instance), Error> {
    let factory = match entry.run {
        config::Run::InProcess => Some(loader.factory(entry)?),
        _ => None,
    };
    let instance = loader.instantiate(entry)?;
    instance.start().map_err(|error| entry.locate(error))?;
    Ok((factory, instance))
}

/// Checks each entry (loads, creates, starts, lists routes, and finds conflicts with the entries
/// before it) and prints one verdict per entry; fails if any failed.
fn check(entries: &[PluginEntry], insecure: bool) -> ExitCode {
    let mut loader = config::Loader::new(insecure);
    let accepted = Registry::new();
    let mut failures = 0;
    for entry in entries {
        let verdict = check_one(&mut loader, entry).and_then(|(factory, instance)| {
            if let Err(duplicate) = accepted.register(instance.clone()) {
                let _ = instance.stop();
                return Err(entry.locate(duplicate));
            }
            let router = match accepted.router() {
                Ok(router) => router,
                Err(conflict) => {
                    let _ = accepted.unregister(instance.name());
                    let _ = instance.stop();
                    return Err(entry.locate(conflict));
                }
            };
            let routes: Vec<String> = router
                .routes()
                .into_iter()
                .filter(|r| r.plugin == instance.name())
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            let found =
                factory
                    .as_ref()
                    .and_then(Factory::inspection)
                    .map_or_else(String::new, |i| {
                        let mark = i.abi_mark.map_or(
                            "no ABI mark (checked after loading)".to_owned(),
                            |(major, minor)| format!("ABI mark {major}.{minor}"),
                        );
                        format!(
                            "{} {}, exports plugin_factory, {mark}; ",
                            i.format, i.architecture
                        )
                    });
            let named = if instance.name() == instance.plugin_name() {
                String::new()
            } else {
                format!(" as `{}`", instance.name())
            };
            let runs = match &factory {
                Some(factory) => {
                    let (major, minor) = factory.abi_version();
                    format!("ABI {major}.{minor}")
                }
                None => where_it_runs(&instance).1,
            };
            let routes = match routes.len() {
                0 => "no routes".to_owned(),
                n => format!("{n} route(s): {}", routes.join(", ")),
            };
            let hooks = match instance.hooks().names().join(", ") {
                names if names.is_empty() => String::new(),
                names => format!(", hooks: {names}"),
            };
            Ok(format!(
                "{found}plugin `{}` {}{named}, {runs}, {routes}{hooks}",
                instance.plugin_name(),
                instance.version(),
            ))
        });
        let file = entry.path.display();
        match verdict {
            Ok(summary) => println!("ok    {file}: {summary}"),
            Err(e) => {
                failures += 1;
                println!("FAIL  {file}: {e}");
                // Without a configuration file, a plugin that needs a configuration got `{}`.
                if matches!(e.kind(), ErrorKind::CreateFailed { .. }) && entry.source.is_none() {
                    println!(
                        "      (it was created with the configuration {{}}; to check it with its \
                         own, list it in a configuration file and run `plugin-host check \
                         --config FILE`)"
                    );
                }
            }
        }
    }
    if let Err(e) = accepted.stop_all() {
        tracing::error!("{e}");
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{failures} of {} failed", entries.len());
        ExitCode::FAILURE
    }
}

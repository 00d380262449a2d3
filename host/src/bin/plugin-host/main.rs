//! `plugin-host`: load plugins at startup and serve their routes over HTTP.

mod commands;
mod logging;
mod reload;
mod scaffold;

use clap::{Args, Parser, Subcommand};
use plugin_host::server::ServeOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A duration given on the command line, as a number of seconds; shown the same way, so that
/// a default comes from the library's own value (`default_value_t`) rather than a copy of it.
#[derive(Clone, Copy)]
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// A number of seconds, zero allowed.
fn seconds(text: &str) -> Result<Seconds, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map(Seconds)
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

/// A positive number of seconds.
fn positive_seconds(text: &str) -> Result<Seconds, String> {
    text.parse::<f64>()
        .ok()
        .and_then(plugin_host::config::positive_seconds)
        .map(Seconds)
        .ok_or_else(|| format!("`{text}` is not a positive number of seconds"))
}

/// Loads native plugins (Rust, C, C++, Go) through the stable C ABI, and plugin programs, and
/// serves their routes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter, as in RUST_LOG (`info`, `debug`, `plugin_host=debug,plugin=trace`). Overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Load plugin files even if they, or a folder above them, can be written by someone other
    /// than their owner and root (a warning is logged for each).
    #[arg(long, global = true)]
    allow_insecure_permissions: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load, start and serve the plugins until SIGINT or SIGTERM; SIGHUP reloads the
    /// configuration, starting only what changed. Exit status after a signal:
    /// 0 when every request finished within the grace period and every plugin stopped cleanly;
    /// 4 when requests still in flight at its end were answered 503 but every plugin stopped
    /// cleanly; 3 when a plugin did not stop cleanly (the log says which and why).
    Serve {
        #[command(flatten)]
        source: Source,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The largest request body accepted, in bytes.
        #[arg(long, default_value_t = plugin_host::server::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// Seconds to let requests in flight finish after a shutdown signal; then those still
        /// waiting answer 503, and the plugins are stopped in reverse order (an in-process one
        /// with a call still running is left as it is; a child process is always ended).
        #[arg(
            long,
            default_value_t = Seconds(ServeOptions::default().grace),
            value_parser = seconds
        )]
        grace: Seconds,
        /// Seconds a handler call may run before its client gets 504 (a plugin's
        /// `handler_timeout` in the config overrides it).
        #[arg(
            long,
            default_value_t = Seconds(plugin_host::server::DEFAULT_HANDLER_TIMEOUT),
            value_parser = positive_seconds
        )]
        handler_timeout: Seconds,
        /// Seconds a client may take to send a request head in full (from its first byte, or
        /// from the connection for the first request).
        #[arg(
            long,
            default_value_t = Seconds(ServeOptions::default().header_timeout),
            value_parser = positive_seconds
        )]
        header_timeout: Seconds,
        /// Seconds an idle keep-alive connection waits for its next request.
        #[arg(
            long,
            default_value_t = Seconds(ServeOptions::default().keepalive_timeout),
            value_parser = positive_seconds
        )]
        keepalive_timeout: Seconds,
        /// How many connections may be open at once; more get 503 and are closed
        /// [default: 10000, or 3/4 of the open-file limit if lower].
        #[arg(long)]
        max_connections: Option<usize>,
        /// Where the Prometheus metrics are served: `on` (`GET /metrics` on the listen address,
        /// answered before the plugin routes), `off` (`/metrics` reaches the plugins), or
        /// ADDR:PORT (there only, never on the listen address).
        #[arg(long, default_value = "on", value_parser = metrics_at)]
        metrics: MetricsAt,
        /// Reload when the configuration file (or the plugin folder) or a plugin's file
        /// changes, as on SIGHUP: only what changed is started anew (see the README's Reload).
        #[arg(long)]
        watch: bool,
    },
    /// Print the plugins and their routes without serving, in the configuration's order.
    /// Plugins that run in this process are loaded and started, as `serve` does, for their
    /// routes, then stopped; no child process is started: an isolated library or a program is
    /// shown `not started`, with what its entry says, and without its routes (`check --config`
    /// starts it and lists them).
    List {
        #[command(flatten)]
        source: Source,
    },
    /// Validate plugin files: permissions, format and architecture, exports, ABI mark (all
    /// before loading), then descriptor, name, start, routes, and route conflicts among them.
    /// Exit status 0 only if all pass.
    Check {
        /// The plugin libraries, each created with an empty configuration (`{}`).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        files: Vec<PathBuf>,
        /// Check every enabled entry of this configuration file instead, as `serve` would create
        /// it: with its name, configuration and pin (two entries of one file are two checks).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a new plugin project that builds and passes `check` as it is: a build file, a
    /// source with one route, a `plugin.toml` to serve it, and a README.
    New {
        /// The plugin's name (also its route, `/NAME`, and its library, `libNAME.so`).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// The folder to create (it must not exist, or be empty) [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write the C header, plugin_api.h, to a folder and print the folder, for a C, C++ or Go
    /// build's include path: `cc -I"$(plugin-host include-dir)" ...`.
    IncludeDir {
        /// The folder [default: $XDG_DATA_HOME/pluglet/VERSION/include, or under
        /// ~/.local/share].
        dir: Option<PathBuf>,
    },
    /// Write the Rust SDK, the crate pluglet-api of this host's version, to a folder and print
    /// the folder, for a plugin's Cargo.toml:
    /// `pluglet-api = { version = "0.1", path = "vendor/pluglet-api" }`.
    SdkDir {
        /// The folder [default: $XDG_DATA_HOME/pluglet/VERSION/pluglet-api, or under
        /// ~/.local/share].
        dir: Option<PathBuf>,
    },
}

/// Where `serve` answers `GET /metrics` (`--metrics`).
#[derive(Clone, Copy, Debug)]
enum MetricsAt {
    /// On the listen address.
    On,
    /// Nowhere: no metrics are kept.
    Off,
    /// On this address only.
    Apart(SocketAddr),
}

/// Parses `--metrics`: `on`, `off` or ADDR:PORT.
fn metrics_at(text: &str) -> Result<MetricsAt, String> {
    match text {
        "on" => Ok(MetricsAt::On),
        "off" => Ok(MetricsAt::Off),
        address => address.parse().map(MetricsAt::Apart).map_err(|_| {
            format!("`{address}` is neither `on`, `off` nor an address such as 127.0.0.1:9090")
        }),
    }
}

/// Where the plugins come from.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct Source {
    /// A TOML file listing the plugins (see the README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A folder whose libraries are all loaded, in sorted file-name order.
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    // A worker running an isolated plugin for a host never comes back from this.
    plugin_host::process::worker_main();
    plugin_host::install_crash_report();
    let cli = Cli::parse();
    let logs = match logging::init(cli.log_level.as_deref()) {
        Ok(logs) => logs,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Through the log writer, after the logs before it: a closed stderr cannot panic
            // this, nor a stuck one hang it. Formatted first: nothing runs under the writer's lock.
            let message = format!("error: {e}");
            let _ = writeln!(logs.writer(), "{message}");
            ExitCode::FAILURE
        }
    };
    // Flushes the logs, waiting at most `logging::FLUSH_DEADLINE`.
    drop(logs);
    code
}

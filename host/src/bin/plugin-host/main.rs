//! `plugin-host`: load plugins at startup and serve their routes over HTTP.

mod commands;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Loads native plugins (Rust, C, C++) through the stable C ABI and serves their routes.
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
    /// Load, start and serve the plugins until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        source: Source,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The largest request body accepted, in bytes.
        #[arg(long, default_value_t = plugin_host::server::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// Seconds to let requests in flight finish after a shutdown signal.
        #[arg(long, default_value_t = 10)]
        grace: u64,
    },
    /// Print the plugins and their routes without serving.
    List {
        #[command(flatten)]
        source: Source,
    },
    /// Validate plugin files: permissions, format and architecture, exports, ABI mark (all
    /// before loading), then descriptor, name, start, routes, and route conflicts among them.
    /// Exit status 0 only if all pass.
    Check {
        /// The plugin libraries.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Where the plugins come from.
#[derive(Args)]
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
    plugin_host::install_crash_report();
    let cli = Cli::parse();
    commands::init_logging(cli.log_level.as_deref());
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

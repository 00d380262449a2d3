//! The plugin host: loads native plugins through the stable C ABI of `plugin-api`, keeps them
//! in ordered registries, runs their lifecycle and routes requests to their handlers.
//!
//! - [`Factory`]: a validated plugin (a loaded library or a built-in type) that creates
//!   [`Instance`]s; [`FactoryRegistry`] keeps factories by name.
//! - [`Registry`]: instances by name in insertion order; `start_all` in that order, `stop_all`
//!   in reverse, and [`Router`] over the routes of the started ones.
//!
//! - [`server`]: the routes as a `tower::Service`, and a hyper server with graceful shutdown;
//!   [`config`]: which plugins to load, from a TOML file or a folder. The `plugin-host` binary
//!   (`serve`, `list`, `check`) is built on these.
//! - [`process`]: plugins in supervised child processes: the very same library files run
//!   isolated ([`process::ProcessPlugin::isolated`]), and plugin programs in any language, over
//!   one documented protocol.
//! - [`install_crash_report`]: when plugin code crashes the process (a segfault, an abort), one
//!   line on standard error names the plugin instance, its file and the call.
//!
//! All unsafe code lives in the private `ffi` module; everything here is safe to call.
#![deny(missing_docs)]

pub mod config;
mod error;
mod ffi;
mod inspect;
pub mod limits;
mod message;
mod pacing;
mod path;
mod plugin;
pub mod process;
mod registry;
mod router;
pub mod server;
mod trust;

pub use error::{Error, ErrorKind, Errors};
pub use ffi::install_crash_report;
pub use inspect::Inspection;
pub use message::{Request, Response};
pub use plugin::{Factory, Instance, LoadOptions, State};
pub use registry::{FactoryRegistry, Registry};
pub use router::{Lookup, RouteInfo, RouteMatch, Router};
pub use trust::sha256_hex;

/// Logs a plugin's message at its `PLUGIN_LOG_*` level (any other value is trace), under the
/// target `plugin`, tagged with the plugin's and the instance's names: for in-process plugins
/// (through `PluginHost::log`) and plugins in child processes (their `log` messages) alike.
pub(crate) fn plugin_log(level: u32, plugin: &str, instance: &str, message: &str) {
    use plugin_api::abi::{PLUGIN_LOG_DEBUG, PLUGIN_LOG_ERROR, PLUGIN_LOG_INFO, PLUGIN_LOG_WARN};
    match level {
        PLUGIN_LOG_ERROR => tracing::error!(target: "plugin", plugin, instance, "{message}"),
        PLUGIN_LOG_WARN => tracing::warn!(target: "plugin", plugin, instance, "{message}"),
        PLUGIN_LOG_INFO => tracing::info!(target: "plugin", plugin, instance, "{message}"),
        PLUGIN_LOG_DEBUG => tracing::debug!(target: "plugin", plugin, instance, "{message}"),
        _ => tracing::trace!(target: "plugin", plugin, instance, "{message}"),
    }
}

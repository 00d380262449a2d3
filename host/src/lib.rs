//! The plugin host: loads native plugins through the stable C ABI of `plugin-api`, keeps them
//! in ordered registries, runs their lifecycle and routes requests to their handlers.
//!
//! - [`Factory`]: a validated plugin (a loaded library or a built-in type) that creates
//!   [`Instance`]s; [`FactoryRegistry`] keeps factories by name.
//! - [`Registry`]: instances by name in insertion order; `start_all` in that order, `stop_all`
//!   in reverse, and [`Router`] over the routes of the started ones.
//!
//! - [`server`]: the routes as a `tower::Service`, and a hyper server with graceful shutdown;
//!   [`config`]: which plugins to load, from a TOML file or a folder; [`Deployment`]: a
//!   configuration running, reloaded by starting only what changed. The `plugin-host` binary
//!   (`serve`, `list`, `check`) is built on these.
//! - [`process`]: plugins in supervised child processes: the very same library files run
//!   isolated ([`process::ProcessPlugin::isolated`]), and plugin programs in any language, over
//!   one documented protocol.
//! - [`metrics`]: Prometheus metrics of a serving host (per route, per plugin, reloads).
//! - [`install_crash_report`]: when plugin code crashes the process (a segfault, an abort), one
//!   line on standard error names the plugin instance, its file and the call.
//!
//! All unsafe code lives in the private `ffi` module; everything here is safe to call.
#![deny(missing_docs)]

mod block;
pub mod config;
mod deploy;
mod error;
mod ffi;
mod gate;
mod hook;
mod inspect;
pub mod limits;
mod message;
pub mod metrics;
mod pacing;
mod path;
mod plugin;
mod pluginlog;
pub mod process;
mod registry;
mod router;
pub mod server;
mod trust;

pub use deploy::{Deployment, Reload};
pub use error::{Error, ErrorKind, Errors, PluginText};
pub use ffi::install_crash_report;
pub use hook::{Connection, ConnectionStats, HookSet};
pub use inspect::Inspection;
pub use message::{Request, Response};
pub use plugin::{Factory, Instance, LoadOptions, State};
#[doc(hidden)]
pub use pluginlog::civil_date;
pub use pluginlog::{LogLimit, stderr_colours};
pub use registry::{FactoryRegistry, Registry};
pub use router::{Lookup, RouteInfo, RouteMatch, Router};
pub use trust::sha256_hex;

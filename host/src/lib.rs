//! The plugin host: loads native plugins through the stable C ABI of `plugin-api`, keeps them
//! in ordered registries, runs their lifecycle and routes requests to their handlers.
//!
//! - [`Factory`]: a validated plugin (a loaded library or a built-in type) that creates
//!   [`Instance`]s; [`FactoryRegistry`] keeps factories by name.
//! - [`Registry`]: instances by name in insertion order; `start_all` in that order, `stop_all`
//!   in reverse, and [`Router`] over the routes of the started ones.
//!
//! All unsafe code lives in the private `ffi` module; everything here is safe to call.
#![deny(missing_docs)]

mod error;
mod ffi;
mod message;
mod plugin;
mod registry;
mod router;

pub use error::{Error, ErrorKind, Errors};
pub use message::{Request, Response};
pub use plugin::{Factory, Instance, State};
pub use registry::{FactoryRegistry, Registry};
pub use router::{Lookup, RouteInfo, RouteMatch, Router};

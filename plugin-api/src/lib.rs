//! The plugin ABI and the Rust SDK.
//!
//! - [`abi`]: the `#[repr(C)]` contract between host and plugins. `include/plugin_api.h` is
//!   generated from it; C and C++ plugins use that header.
//! - The SDK: implement [`Plugin`] for a type and export it with [`export_plugin!`]. The
//!   macro generates `plugin_factory` and every `extern "C"` shim; each shim catches panics.
//!
//! ```ignore
//! use plugin_api::{Host, NoConfig, Plugin, Request, Response, Result, Routes};
//!
//! struct Hello;
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     type Config = NoConfig;
//!     fn create(_: NoConfig, _: Host) -> Result<Self> { Ok(Hello) }
//!     fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
//!         routes.get("/hello", |_, _, res| res.text("hello"))?;
//!         Ok(())
//!     }
//! }
//! plugin_api::export_plugin!(Hello);
//! ```
#![deny(missing_docs)]

pub mod abi;
#[doc(hidden)]
pub mod export;
mod raw;
mod sdk;

pub use sdk::{Error, Handler, Host, NoConfig, Plugin, Request, Response, Result, Routes};

/// The version of this crate, the SDK (`pluglet-api`): what `plugin-host new` makes a Rust
/// plugin depend on.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C header of this ABI, `plugin_api.h`, as text: what C, C++ and Go plugins include.
/// `plugin-host include-dir` writes it to disk for builds outside this repository.
pub const C_HEADER: &str = include_str!("../plugin_api.h");

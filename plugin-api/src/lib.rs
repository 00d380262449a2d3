//! The plugin ABI and the Rust SDK.
//!
//! - [`abi`]: the `#[repr(C)]` contract between host and plugins. `include/plugin_api.h` is
//!   generated from it; C and C++ plugins use that header.
//! - The SDK: implement [`Plugin`] for a type and export it with [`export_plugin!`]. The
//!   macro generates `plugin_factory` and every `extern "C"` shim; each shim catches panics.
//!   Besides routes, a plugin may have hooks on every request, response and connection
//!   ([`Plugin::HOOKS`], [`RequestHook`], [`ResponseHook`]): see [`Plugin`]'s docs.
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
//!
//! The crate carries its own source, [`SDK_SOURCE`], as it carries the C header: `plugin-host`
//! writes it into a plugin project, so that a Rust plugin builds against the SDK of the host that
//! serves it without a registry.
#![deny(missing_docs)]

pub mod abi;
#[doc(hidden)]
pub mod export;
mod hooks;
mod raw;
mod sdk;

pub use hooks::{Connection, ConnectionStats, Hooks, RequestHook, ResponseHook, Verdict};
pub use sdk::{Error, Handler, Host, NoConfig, Plugin, Request, Response, Result, Routes};

/// The version of this crate, the SDK (`pluglet-api`): what `plugin-host new` makes a Rust
/// plugin depend on.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C header of this ABI, `plugin_api.h`, as text: what C, C++ and Go plugins include.
/// `plugin-host include-dir` writes it to disk for builds outside this repository.
pub const C_HEADER: &str = include_str!("../plugin_api.h");

/// This crate's source, file by file (path in the crate, text), as a crate that builds on its
/// own: `plugin-host sdk-dir` writes it to a folder and `plugin-host new --lang rust` into the
/// new project, which depends on it with `pluglet-api = { version = "...", path = "..." }`.
///
/// The files are the ones this crate is built from, not a second copy. Only the manifest
/// differs: `Cargo.toml` here inherits from the repository's workspace, so the copy's
/// `Cargo.toml` is `Cargo.standalone.toml`, which the copy also holds under its own name (its
/// `SDK_SOURCE` includes it, like every other file). A test keeps its dependencies in step
/// with the workspace's, and this list in step with `src/`.
pub const SDK_SOURCE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../Cargo.standalone.toml")),
    (
        "Cargo.standalone.toml",
        include_str!("../Cargo.standalone.toml"),
    ),
    ("plugin_api.h", C_HEADER),
    ("src/lib.rs", include_str!("lib.rs")),
    ("src/abi.rs", include_str!("abi.rs")),
    ("src/export.rs", include_str!("export.rs")),
    ("src/hooks.rs", include_str!("hooks.rs")),
    ("src/raw.rs", include_str!("raw.rs")),
    ("src/sdk.rs", include_str!("sdk.rs")),
];

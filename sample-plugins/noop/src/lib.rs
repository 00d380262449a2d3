//! `noop`: request and response hooks that do nothing, and no routes.
//!
//! It measures what the hook chain itself costs: `bench/http.sh` serves a route with three
//! instances of it in front and without, in the same run. The hooks are the SDK's defaults,
//! which return at once; only [`Plugin::HOOKS`] asks the host to call them.
//!
//! No configuration.

use plugin_api::{Hooks, Host, NoConfig, Plugin, Result, Routes};

/// The plugin.
pub struct Noop;

impl Plugin for Noop {
    const NAME: &'static str = "noop";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks {
        on_request: true,
        on_response: true,
        ..Hooks::NONE
    };
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> Result<Self> {
        Ok(Noop)
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
        Ok(())
    }
}

plugin_api::export_plugin!(Noop);

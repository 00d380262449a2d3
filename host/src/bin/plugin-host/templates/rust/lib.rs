//! {{name}}: a plugin for plugin-host, written with the pluglet-api SDK.

use plugin_api::{Host, Plugin, Request, Response, Result, Routes};

/// The instance's configuration: the `[plugin.config]` table of its entry in plugin.toml
/// (`{}` when there is none, so every field has a default).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            greeting: "hello".to_owned(),
        }
    }
}

/// One instance. Handlers run on many threads at once: keep mutable state behind atomics or
/// locks.
pub struct Plug {
    config: Config,
}

impl Plug {
    /// GET /{{name}}?who=NAME
    fn hello(&self, request: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        let who = request.query_param("who").unwrap_or("world");
        response.header("x-plugin", "{{name}}")?;
        response.text(&format!("{}, {who}, from {{name}}\n", self.config.greeting))
    }
}

impl Plugin for Plug {
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn create(config: Config, host: Host) -> Result<Self> {
        host.info("created");
        Ok(Self { config })
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        routes.get("/{{name}}", Self::hello)?;
        Ok(())
    }

    // Hooks that see every request (`on_request`, `on_response`, `on_connect`,
    // `on_disconnect`) are trait methods too: name them in `const HOOKS` and implement them
    // (see "Hooks" in the host's README).
}

plugin_api::export_plugin!(Plug);

//! `counter`: a stateful plugin with a JSON configuration, safe under concurrent requests.
//!
//! Configuration (every key optional):
//! `{ "path": "/counter", "start": 0, "step": 1 }`. Several instances with different paths
//! can serve side by side.
//!
//! - `GET {path}` answers `{"value": N}`.
//! - `POST {path}` adds `step` (or the body's `{"by": N}`) and answers the new value.

use plugin_api::{Error, Host, Plugin, Request, Response, Result, Routes};
use serde::Deserialize;
use std::sync::atomic::{AtomicI64, Ordering};

/// The configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the counter is served.
    pub path: String,
    /// The initial value.
    pub start: i64,
    /// What `POST` adds when the body names no amount.
    pub step: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: "/counter".to_owned(),
            start: 0,
            step: 1,
        }
    }
}

/// The body `POST` accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Increment {
    by: i64,
}

/// The plugin.
pub struct Counter {
    config: Config,
    value: AtomicI64,
    host: Host,
}

impl Counter {
    fn get(&self, _: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        response.json(&serde_json::json!({ "value": self.value.load(Ordering::SeqCst) }))
    }

    fn add(&self, request: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        let by = if request.body().is_empty() {
            self.config.step
        } else {
            serde_json::from_slice::<Increment>(request.body())
                .map_err(|e| Error::msg(format!("bad increment: {e}")))?
                .by
        };
        let value = self.value.fetch_add(by, Ordering::SeqCst) + by;
        response.json(&serde_json::json!({ "value": value }))
    }
}

impl Plugin for Counter {
    const NAME: &'static str = "counter";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn create(config: Config, host: Host) -> Result<Self> {
        if !config.path.starts_with('/') {
            return Err(Error::msg(format!(
                "`path` must start with `/`, got {:?}",
                config.path
            )));
        }
        Ok(Self {
            value: AtomicI64::new(config.start),
            config,
            host,
        })
    }

    fn start(&self) -> Result<()> {
        self.host.info("starting");
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        self.host.info("stopping");
        Ok(())
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        routes
            .get(&self.config.path, Self::get)?
            .post(&self.config.path, Self::add)?;
        Ok(())
    }
}

plugin_api::export_plugin!(Counter);

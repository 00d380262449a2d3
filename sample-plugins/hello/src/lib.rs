//! `hello`: the smallest useful plugin, in Rust.
//!
//! - `GET /hello` answers `hello from Rust`.
//! - `GET /hello/{name}` answers `hello, {name}` (`?punctuation=!` ends it differently).
//! - `GET /ping` answers 200 with an empty body: a handler that does nothing, the cheapest
//!   possible plugin call.

use plugin_api::{Host, NoConfig, Plugin, Request, Response, Result, Routes};

/// The plugin; it keeps the host services to log its lifecycle.
pub struct Hello {
    host: Host,
}

impl Hello {
    fn hello(&self, _: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        response.text("hello from Rust")
    }

    fn hello_name(&self, request: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        let name = request.param("name").unwrap_or("stranger");
        let punctuation = request.query_param("punctuation").unwrap_or("");
        response.text(&format!("hello, {name}{punctuation}"))
    }

    fn ping(&self, _: &Request<'_>, _: &mut Response<'_>) -> Result<()> {
        Ok(())
    }
}

impl Plugin for Hello {
    const NAME: &'static str = "hello";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = NoConfig;

    fn create(_: NoConfig, host: Host) -> Result<Self> {
        Ok(Self { host })
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
            .get("/hello", Self::hello)?
            .get("/hello/{name}", Self::hello_name)?
            .get("/ping", Self::ping)?;
        Ok(())
    }
}

plugin_api::export_plugin!(Hello);

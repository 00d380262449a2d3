//! `timing`: tells the client how long the plugins took, with a `server-timing` header.
//!
//! - `on_request` stamps the request with the header `x-timing-start`: the nanoseconds since
//!   the instance was created, on the monotonic clock (replacing any such header the client
//!   sent).
//! - `on_response` reads the stamp back from the request and adds
//!   `server-timing: plugins;dur=1.234` (milliseconds, three decimals) to the response. A
//!   response whose request has no stamp (its `on_request` hook did not run) gets nothing.
//!
//! Registered first, its `on_request` runs before every other hook and its `on_response` after
//! every other, so the duration covers the other plugins' hooks and the route: the time spent
//! in plugins, and the host's work between them. Routes see the stamp; browsers show
//! `server-timing` in their developer tools.
//!
//! No configuration.

use plugin_api::{
    Hooks, Host, NoConfig, Plugin, Request, RequestHook, ResponseHook, Result, Routes,
};
use std::time::{Duration, Instant};

/// The request header holding the stamp.
pub const STAMP_HEADER: &str = "x-timing-start";

/// The plugin: the instant its stamps count from.
pub struct Timing {
    epoch: Instant,
}

impl Timing {
    /// The time since the epoch, in nanoseconds.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The `server-timing` value for `elapsed`: `plugins;dur=` and milliseconds with three
/// decimals.
pub fn server_timing(elapsed: Duration) -> String {
    format!("plugins;dur={:.3}", elapsed.as_secs_f64() * 1000.0)
}

impl Plugin for Timing {
    const NAME: &'static str = "timing";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks {
        on_request: true,
        on_response: true,
        ..Hooks::NONE
    };
    type Config = NoConfig;

    fn create(_: NoConfig, _: Host) -> Result<Self> {
        Ok(Self {
            epoch: Instant::now(),
        })
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
        Ok(())
    }

    fn on_request(&self, _: &Request<'_>, hook: &mut RequestHook<'_>) -> Result<()> {
        hook.set_header(STAMP_HEADER, self.now().to_string())?;
        Ok(())
    }

    fn on_response(&self, request: &Request<'_>, response: &mut ResponseHook<'_>) -> Result<()> {
        let stamp = request
            .header(STAMP_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(stamp) = stamp {
            let elapsed = Duration::from_nanos(self.now().saturating_sub(stamp));
            response.add_header("server-timing", server_timing(elapsed))?;
        }
        Ok(())
    }
}

plugin_api::export_plugin!(Timing);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_gives_milliseconds_with_three_decimals() {
        assert_eq!(server_timing(Duration::ZERO), "plugins;dur=0.000");
        assert_eq!(
            server_timing(Duration::from_nanos(1_234_567)),
            "plugins;dur=1.235"
        );
        assert_eq!(
            server_timing(Duration::from_secs(2)),
            "plugins;dur=2000.000"
        );
    }
}

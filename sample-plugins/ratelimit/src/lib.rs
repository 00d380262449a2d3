//! `ratelimit`: a token bucket per client address, in front of routes (an `on_request` hook).
//!
//! Configuration (every key optional):
//! `{ "rate": 10, "burst": 20, "max_clients": 10000 }`. Each client address may make `burst`
//! requests at once, then `rate` per second on average (a fraction is fine: `0.5` is one request
//! every two seconds).
//!
//! - A request within the limit goes on unchanged.
//! - Past it, the request is answered at once: 429 with `retry-after: N` (the whole seconds
//!   until the client has a token again, at least 1) and the body
//!   `{"error":"too many requests","retry_after":N}`.
//! - A request without a client address (`Router::dispatch` of a request without a connection)
//!   is not limited.
//! - Memory is bounded: at most `max_clients` addresses are tracked (see [`Limiter`] for which
//!   are dropped first).
//!
//! The key is the IP address, without the port (an IPv4 address mapped into IPv6 counts as the
//! IPv4 one). A client holding many addresses, such as an IPv6 prefix, gets a bucket per
//! address; a limiter for the open internet would key on the /64 prefix.

mod limiter;

pub use limiter::{Limiter, retry_after_secs};
use plugin_api::{Error, Hooks, Host, Plugin, Request, RequestHook, Result, Routes};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The configuration.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Requests per second a client may make on average: the tokens its bucket gains per
    /// second. Above 0.
    pub rate: f64,
    /// Requests a client may make at once: the size of its bucket. At least 1.
    pub burst: u32,
    /// How many client addresses are tracked at most. At least 1.
    pub max_clients: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rate: 10.0,
            burst: 20,
            max_clients: 10_000,
        }
    }
}

/// The plugin.
pub struct RateLimit {
    limiter: Mutex<Limiter<IpAddr>>,
    /// The origin of the limiter's clock.
    epoch: Instant,
}

impl RateLimit {
    /// An instance of `config`, or why it is refused.
    fn new(config: Config) -> Result<Self> {
        let Config {
            rate,
            burst,
            max_clients,
        } = config;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::msg(format!(
                "invalid configuration at `rate`: {rate} is not a number of requests per second above 0"
            )));
        }
        if burst == 0 {
            return Err(Error::msg(
                "invalid configuration at `burst`: 0 would refuse every request; give at least 1",
            ));
        }
        if max_clients == 0 {
            return Err(Error::msg(
                "invalid configuration at `max_clients`: 0 would track no client; give at least 1",
            ));
        }
        Ok(Self {
            limiter: Mutex::new(Limiter::new(rate, burst, max_clients)),
            epoch: Instant::now(),
        })
    }
}

impl Plugin for RateLimit {
    const NAME: &'static str = "ratelimit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks {
        on_request: true,
        ..Hooks::NONE
    };
    type Config = Config;

    fn create(config: Config, _: Host) -> Result<Self> {
        Self::new(config)
    }

    fn routes(&self, _: &mut Routes<'_, Self>) -> Result<()> {
        Ok(())
    }

    fn on_request(&self, request: &Request<'_>, hook: &mut RequestHook<'_>) -> Result<()> {
        let Some(client) = request.client() else {
            return Ok(());
        };
        let address: SocketAddr = client
            .parse()
            .map_err(|_| Error::msg(format!("the client address `{client}` is not IP:PORT")))?;
        // The limiter does saturating arithmetic and cannot panic half-way; the clock is read
        // under the lock, so that the limiter's times never go back.
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let verdict = limiter.take(address.ip().to_canonical(), self.epoch.elapsed());
        drop(limiter);
        if let Err(wait) = verdict {
            let secs = retry_after_secs(wait);
            hook.respond(429)?
                .header("retry-after", secs.to_string())?
                .json(&serde_json::json!({ "error": "too many requests", "retry_after": secs }))?;
        }
        Ok(())
    }
}

plugin_api::export_plugin!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: &str) -> String {
        let config = serde_json::from_str(config).unwrap();
        match RateLimit::new(config) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.message().to_owned(),
        }
    }

    #[test]
    fn the_configuration_takes_whole_and_fractional_rates() {
        for config in [
            r#"{}"#,
            r#"{"rate": 1}"#,
            r#"{"rate": 0.5, "burst": 1, "max_clients": 1}"#,
        ] {
            let config = serde_json::from_str(config).unwrap();
            assert!(RateLimit::new(config).is_ok());
        }
    }

    #[test]
    fn a_rate_of_zero_is_refused() {
        assert_eq!(
            refusal(r#"{"rate": 0}"#),
            "invalid configuration at `rate`: 0 is not a number of requests per second above 0"
        );
        assert_eq!(
            refusal(r#"{"rate": -2.5}"#),
            "invalid configuration at `rate`: -2.5 is not a number of requests per second above 0"
        );
    }

    #[test]
    fn a_burst_of_zero_is_refused() {
        assert_eq!(
            refusal(r#"{"burst": 0}"#),
            "invalid configuration at `burst`: 0 would refuse every request; give at least 1"
        );
    }

    #[test]
    fn max_clients_of_zero_is_refused() {
        assert_eq!(
            refusal(r#"{"max_clients": 0}"#),
            "invalid configuration at `max_clients`: 0 would track no client; give at least 1"
        );
    }
}

//! `apikey`: lets through only the requests that carry a known API key (an `on_request` hook).
//!
//! Configuration:
//! `{ "keys": { "ada": "KEY-OF-ADA", "grace": "KEY-OF-GRACE" }, "header": "x-api-key",
//! "realm": "pluglet" }`: each key's owner and the key, at least one (required); the request
//! header that carries the key (optional, default `x-api-key`); the realm named to clients
//! (optional, default `pluglet`). Give the instance `hook_paths` in its configuration entry to
//! protect some paths only.
//!
//! - A request without the header, or with a key that is not configured, is answered at once:
//!   401 with `www-authenticate: ApiKey realm="pluglet", header="x-api-key"` and the body
//!   `{"error":"missing API key","header":"x-api-key"}` (or `"invalid API key"`).
//! - A request with a configured key goes on without the key header (routes never see the
//!   secret) and with `x-api-key-owner: OWNER` (replacing any such header the client sent).
//!
//! Keys are compared without an early exit, so the time an answer takes does not tell how much
//! of a key was right (the length of a key is no secret).

use plugin_api::{Error, Hooks, Host, Plugin, Request, RequestHook, Result, Routes};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The request header naming the owner of the key, for the route.
pub const OWNER_HEADER: &str = "x-api-key-owner";

/// The configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Each owner's key: owner name -> key. Keys are visible ASCII, no two alike.
    pub keys: BTreeMap<String, String>,
    /// The request header that carries the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// The realm named in `www-authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

fn default_realm() -> String {
    "pluglet".to_owned()
}

/// The plugin.
pub struct ApiKey {
    /// (key, owner) pairs.
    keys: Vec<(String, String)>,
    header: String,
    /// The `www-authenticate` value.
    challenge: String,
}

impl ApiKey {
    /// An instance of `config`, or why it is refused.
    fn new(config: Config) -> Result<Self> {
        let invalid = |key: &str, why: String| {
            Err(Error::msg(format!(
                "invalid configuration at `{key}`: {why}"
            )))
        };
        if config.keys.is_empty() {
            return invalid(
                "keys",
                "no key: give at least one, as `keys = { OWNER = \"KEY\" }`".to_owned(),
            );
        }
        let mut keys: Vec<(String, String)> = Vec::new();
        for (owner, key) in config.keys {
            let at = format!("keys.{owner}");
            if owner.is_empty() || !owner.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return invalid(&at, "an owner name is printable ASCII".to_owned());
            }
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return invalid(
                    &at,
                    "a key is visible ASCII (no space), as clients send it in a header".to_owned(),
                );
            }
            if let Some((_, other)) = keys.iter().find(|(k, _)| *k == key) {
                return invalid(
                    &at,
                    format!("the same key as `{other}`: give each owner a key of their own"),
                );
            }
            keys.push((key, owner));
        }
        let header = config.header.to_ascii_lowercase();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if header.is_empty() || !header.bytes().all(token) {
            return invalid(
                "header",
                format!("{:?} is not an HTTP header name", config.header),
            );
        }
        if !config
            .realm
            .bytes()
            .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
        {
            return invalid(
                "realm",
                format!(
                    "{:?}: a realm is printable ASCII without `\"` or `\\`",
                    config.realm
                ),
            );
        }
        Ok(Self {
            keys,
            challenge: format!("ApiKey realm=\"{}\", header=\"{header}\"", config.realm),
            header,
        })
    }

    /// The owner of `presented`, comparing it with every key, each to its end.
    fn owner(&self, presented: &[u8]) -> Option<&str> {
        let mut owner = None;
        for (key, name) in &self.keys {
            if same(key.as_bytes(), presented) {
                owner = Some(name.as_str());
            }
        }
        owner
    }
}

/// Whether `a` and `b` are equal, looking at every byte when their lengths are.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl Plugin for ApiKey {
    const NAME: &'static str = "apikey";
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
        let error = match request.header(&self.header).map(|key| self.owner(key)) {
            Some(Some(owner)) => {
                hook.remove_header(&self.header)?
                    .set_header(OWNER_HEADER, owner)?;
                return Ok(());
            }
            Some(None) => "invalid API key",
            None => "missing API key",
        };
        hook.respond(401)?
            .header("www-authenticate", &self.challenge)?
            .json(&serde_json::json!({ "error": error, "header": self.header }))
    }
}

plugin_api::export_plugin!(ApiKey);

#[cfg(test)]
mod tests {
    use super::*;

    fn apikey(config: serde_json::Value) -> Result<ApiKey> {
        ApiKey::new(serde_json::from_value(config).unwrap())
    }

    fn refusal(config: serde_json::Value) -> String {
        match apikey(config) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.message().to_owned(),
        }
    }

    #[test]
    fn keys_name_their_owner() {
        let apikey =
            apikey(serde_json::json!({ "keys": { "ada": "k-ada", "grace": "k-grace" } })).unwrap();
        assert_eq!(apikey.owner(b"k-ada"), Some("ada"));
        assert_eq!(apikey.owner(b"k-grace"), Some("grace"));
        for wrong in [&b""[..], b"k-ad", b"k-adb", b"k-ada ", b"K-ADA"] {
            assert_eq!(apikey.owner(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn the_challenge_names_the_realm_and_the_header() {
        let default = apikey(serde_json::json!({ "keys": { "ada": "k" } })).unwrap();
        assert_eq!(default.header, "x-api-key");
        assert_eq!(
            default.challenge,
            r#"ApiKey realm="pluglet", header="x-api-key""#
        );
        let own = apikey(serde_json::json!({
            "keys": { "ada": "k" }, "header": "X-Token", "realm": "shop floor"
        }))
        .unwrap();
        assert_eq!(own.header, "x-token");
        assert_eq!(
            own.challenge,
            r#"ApiKey realm="shop floor", header="x-token""#
        );
    }

    #[test]
    fn no_key_is_refused() {
        assert_eq!(
            refusal(serde_json::json!({ "keys": {} })),
            "invalid configuration at `keys`: no key: give at least one, as `keys = { OWNER = \"KEY\" }`"
        );
    }

    #[test]
    fn a_key_a_client_cannot_send_is_refused() {
        for key in ["", "two words", "tab\t", "caf\u{e9}"] {
            assert_eq!(
                refusal(serde_json::json!({ "keys": { "ada": key } })),
                "invalid configuration at `keys.ada`: a key is visible ASCII (no space), as \
                 clients send it in a header",
                "{key:?}"
            );
        }
    }

    #[test]
    fn an_owner_that_cannot_go_in_a_header_is_refused() {
        assert_eq!(
            refusal(serde_json::json!({ "keys": { "a\nb": "k" } })),
            "invalid configuration at `keys.a\nb`: an owner name is printable ASCII"
        );
    }

    #[test]
    fn two_owners_with_one_key_are_refused() {
        assert_eq!(
            refusal(serde_json::json!({ "keys": { "ada": "k", "grace": "k" } })),
            "invalid configuration at `keys.grace`: the same key as `ada`: give each owner a key \
             of their own"
        );
    }

    #[test]
    fn a_header_name_that_is_no_token_is_refused() {
        assert_eq!(
            refusal(serde_json::json!({ "keys": { "ada": "k" }, "header": "x api key" })),
            "invalid configuration at `header`: \"x api key\" is not an HTTP header name"
        );
    }

    #[test]
    fn a_realm_with_a_quote_is_refused() {
        assert_eq!(
            refusal(serde_json::json!({ "keys": { "ada": "k" }, "realm": "a\"b" })),
            "invalid configuration at `realm`: \"a\\\"b\": a realm is printable ASCII without \
             `\"` or `\\`"
        );
    }
}

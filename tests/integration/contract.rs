//! What a plugin may and may not do through the response writer and the route sink, checked
//! with built-in plugins whose routes come from their configuration.

use crate::util::http;
use plugin_api::{Host, Plugin, Request, Response, Result, Routes};
use plugin_host::server::PluginService;
use plugin_host::{ErrorKind, Factory, Registry};
use serde::Deserialize;
use serde_json::json;

/// A plugin serving the routes its configuration lists (`"METHOD /path"`); every handler
/// answers with its method, and tries the header or status the request's query names.
struct Routed {
    config: Config,
}

#[derive(Deserialize)]
struct Config {
    routes: Vec<String>,
    /// Carry on when the host refuses a route, instead of failing `routes`.
    #[serde(default)]
    ignore_refusals: bool,
}

impl Routed {
    fn answer(&self, request: &Request<'_>, response: &mut Response<'_>) -> Result<()> {
        if let Some(name) = request.query_param("header") {
            return match response.header(name, "1") {
                Ok(_) => response.text("accepted"),
                Err(e) => response.text(e.message()),
            };
        }
        if let Some(status) = request.query_param("status") {
            return match response.status(status.parse()?) {
                Ok(_) => response.text("accepted"),
                Err(e) => response.text(e.message()),
            };
        }
        response.header("x-method", request.method())?;
        response.text(request.method())
    }
}

impl Plugin for Routed {
    const NAME: &'static str = "routed";
    const VERSION: &'static str = "1.0.0";
    type Config = Config;

    fn create(config: Config, _: Host) -> Result<Self> {
        Ok(Self { config })
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        for route in &self.config.routes {
            let (method, path) = route.split_once(' ').expect("METHOD /path");
            let added = routes.route(method, path, Self::answer);
            if !self.config.ignore_refusals {
                added?;
            }
        }
        Ok(())
    }
}

fn registry(instances: &[(&str, &[&str])]) -> Registry {
    let factory = Factory::builtin::<Routed>().unwrap();
    let registry = Registry::new();
    for (name, routes) in instances {
        let instance = factory.create(name, &json!({ "routes": routes })).unwrap();
        registry.register(instance).unwrap();
    }
    registry
}

#[test]
fn framing_headers_and_informational_statuses_are_refused() {
    let registry = registry(&[("routed", &["GET /x"])]);
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let body = |target: &str| -> String {
        let response = router
            .dispatch(&plugin_host::Request::new("GET", target))
            .unwrap();
        String::from_utf8(response.body).unwrap()
    };
    for header in [
        "content-length",
        "Transfer-Encoding",
        "connection",
        "upgrade",
    ] {
        let refused = format!("the host refused the header `{header}`");
        assert_eq!(body(&format!("/x?header={header}")), refused);
    }
    assert_eq!(body("/x?header=x-fine"), "accepted");
    assert_eq!(body("/x?status=101"), "the host refused HTTP status 101");
    assert_eq!(body("/x?status=299"), "accepted");
}

#[test]
fn a_route_method_must_be_upper_case() {
    let registry = registry(&[("routed", &["get /x"])]);
    let errors = registry.start_all().expect_err("refused").0;
    assert!(
        matches!(
            errors[0].kind(),
            ErrorKind::StartFailed { .. } | ErrorKind::RoutesFailed { .. }
        ),
        "{errors:?}"
    );
    assert!(
        errors[0].to_string().contains("upper-case"),
        "{}",
        errors[0]
    );
}

/// Starts one `routed` instance with `routes` and returns why it failed.
fn refusal(routes: &[&str], ignore_refusals: bool) -> plugin_host::Error {
    let factory = Factory::builtin::<Routed>().unwrap();
    let config = json!({ "routes": routes, "ignore_refusals": ignore_refusals });
    let instance = factory.create("routed", &config).unwrap();
    let error = instance
        .start()
        .expect_err("a refused route fails the start");
    assert!(
        matches!(error.kind(), ErrorKind::RoutesFailed { .. }),
        "{error:?}"
    );
    error
}

#[test]
fn a_parameter_name_used_twice_is_refused_at_add() {
    let error = refusal(&["GET /probe/{a}/{a}"], false);
    assert!(
        error
            .to_string()
            .contains("the route GET /probe/{a}/{a}, but the parameter `a` appears twice"),
        "{error}"
    );
    // Also between a parameter and the catch-all.
    let error = refusal(&["GET /files/{rest}/{*rest}"], false);
    assert!(
        error
            .to_string()
            .contains("the parameter `rest` appears twice"),
        "{error}"
    );
}

#[test]
fn a_pattern_matchit_cannot_parse_is_refused_at_add() {
    for pattern in ["/open/{", "/files/{*rest}/more", "/x/{}"] {
        let error = refusal(&[&format!("GET {pattern}")], false);
        assert!(
            error.to_string().contains(&format!(
                "the route GET {pattern}, but it is not a valid pattern"
            )),
            "{error}"
        );
    }
}

#[test]
fn a_refused_route_fails_the_plugin_even_when_it_carries_on() {
    // The plugin ignores the refusal and returns OK from `routes`: the host fails it anyway,
    // so that a plugin never serves with a route missing.
    let error = refusal(&["GET /fine", "get /lower"], true);
    assert!(
        error.to_string().contains("upper-case HTTP token"),
        "{error}"
    );
    let error = refusal(&["GET /fine", "GET /dup/{a}/{a}"], true);
    assert!(error.to_string().contains("appears twice"), "{error}");
}

#[test]
fn escaped_braces_conflict_cleanly() {
    let registry = registry(&[
        ("first", &["GET /lit{{x}}/{p}"]),
        ("second", &["GET /lit{{x}}/{q}"]),
    ]);
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let error = registry.router().err().expect("a conflict");
    assert!(
        matches!(error.kind(), ErrorKind::RouteConflict { .. }),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("second"));
}

#[test]
fn head_reaches_a_head_route_and_falls_back_to_get() {
    let registry = registry(&[("routed", &["GET /both", "HEAD /both", "GET /get-only"])]);
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let service = PluginService::new(registry.router().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let signal = async move {
            let _ = stopped.await;
        };
        let options = plugin_host::server::ServeOptions::default();
        plugin_host::server::serve(listener, service, signal, &options).await
    });
    let head = http(addr, "HEAD", "/both", b"");
    assert_eq!((head.status, head.header("x-method")), (200, Some("HEAD")));
    assert!(head.body.is_empty());
    let head = http(addr, "HEAD", "/get-only", b"");
    assert_eq!((head.status, head.header("x-method")), (200, Some("GET")));
    assert_eq!(head.header("content-length"), Some("3"));
    let put = http(addr, "PUT", "/both", b"");
    assert_eq!((put.status, put.header("allow")), (405, Some("GET, HEAD")));
    stop.send(()).unwrap();
    assert!(runtime.block_on(server).unwrap());
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

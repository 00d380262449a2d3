//! What the README says agrees with what the code does:
//! - `cargo run --example demo` shows the plugins of the table `serve` prints there, the ones
//!   `plugin-host list` shows for the same staged configuration, each answering a request, and
//!   its log holds no colour codes when it goes to a pipe;
//! - the minimum Go version it names is the `go` directive of the Go template's, the Go
//!   sample's and the Go fixture's `go.mod` (which the CI builds with its Go);
//! - the hook samples, staged as "Two commands" stages them, answer as its "Hooks" section
//!   shows, and do what its table of them says.

use crate::util::{Served, hooky, host, http, http_raw, samples, scratch, serve};
use plugin_host::{Connection, Factory, Registry, Request};
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// The README's text.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// The first column of the lines of `text` after the line `header` starts, up to the first
/// line that does not start a row: a blank line, or one `end` starts.
fn column<'a>(text: &'a str, header: &str, end: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| !line.starts_with(header))
        .skip(1)
        .take_while(|line| !line.trim().is_empty() && !line.starts_with(end))
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

/// The instances of the table `serve` prints in the README.
fn readme_plugins() -> Vec<String> {
    let readme = readme();
    let (_, table) = readme
        .split_once("`serve` prints the plugins")
        .expect("the README shows what `serve` prints");
    column(table, "PLUGIN ", "METHOD")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_shows_the_plugins_the_readme_and_list_show() {
    let dir = scratch("demo");
    let output = Command::new(sample_plugins::host_example("demo"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let shown = column(&stdout, "plugins (start order):", "routes:");
    // The Go sample is built, and staged, only where `go` is installed.
    let expected: Vec<String> = readme_plugins()
        .into_iter()
        .filter(|plugin| plugin != "shout" || samples().shout.is_some())
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    assert_eq!(shown, expected, "{stdout}");
    // The configuration the demo staged, as `list` shows it.
    let list = host()
        .args(["list", "--config"])
        .arg(dir.join("plugins.toml"))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(column(&listed, "PLUGIN ", "METHOD"), shown, "{listed}");
    // One request to each, answered.
    let answers = column(&stdout, "requests:", "\0");
    assert_eq!(answers.len(), shown.len(), "{stdout}");
    for line in stdout.lines().skip_while(|l| *l != "requests:").skip(1) {
        assert!(line.contains(" -> 200 "), "{line}\nin\n{stdout}");
    }
    // Its log goes to a pipe here: text, without colour codes.
    assert!(stderr.contains("INFO plugin: starting"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr}");
}

/// The `go` directive of a `go.mod`, such as `1.19`.
fn go_directive(go_mod: &Path) -> String {
    let text = std::fs::read_to_string(go_mod).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("go "))
        .unwrap_or_else(|| panic!("no `go` directive in {}", go_mod.display()))
        .trim()
        .to_owned()
}

#[test]
fn the_minimum_go_version_of_the_readme_is_the_go_mod_directive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // One line: the README wraps its paragraphs anywhere.
    let readme = std::fs::read_to_string(root.join("README.md"))
        .unwrap()
        .replace('\n', " ");
    let (_, go) = readme
        .split_once("## A Go plugin")
        .expect("the README has a Go section");
    let (_, after) = go
        .split_once("It needs Go ")
        .expect("the Go section names the Go it needs");
    let (minimum, _) = after.split_once(" or later").unwrap();
    for go_mod in [
        "host/src/bin/plugin-host/templates/go/go.mod",
        "sample-plugins/shout/go.mod",
        "tests/fixtures/goplugin/go.mod",
    ] {
        assert_eq!(go_directive(&root.join(go_mod)), minimum, "{go_mod}");
    }
}

/// Whether `value` is what `timing` adds: `plugins;dur=` and milliseconds with three decimals.
fn is_server_timing(value: Option<&str>) -> bool {
    let Some((whole, decimals)) = value
        .and_then(|v| v.strip_prefix("plugins;dur="))
        .and_then(|ms| ms.split_once('.'))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(decimals) && decimals.len() == 3
}

#[test]
fn the_staged_hook_samples_answer_as_the_readme_shows() {
    let readme = readme();
    let (_, section) = readme
        .split_once("## Hooks")
        .expect("the README has a Hooks section");
    let shows = |text: &str| assert!(section.contains(text), "the README does not show {text}");
    let config = sample_plugins::stage(&scratch("readme-hooks")).unwrap();
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let addr = served.addr;

    // apikey, on `/hello` only: no key, a wrong key, the demo key.
    let missing = http(addr, "GET", "/hello", b"");
    assert_eq!(missing.status, 401, "{}", missing.text());
    let challenge = missing.header("www-authenticate").unwrap();
    assert_eq!(challenge, r#"ApiKey realm="pluglet", header="x-api-key""#);
    shows(&format!("www-authenticate: {challenge}"));
    shows(&missing.text());
    assert!(
        is_server_timing(missing.header("server-timing")),
        "{missing:?}"
    );
    let wrong = http_raw(addr, "GET", "/hello", &[("x-api-key", "guess")], b"", None);
    assert_eq!(
        (wrong.status, wrong.json()),
        (
            401,
            json!({ "error": "invalid API key", "header": "x-api-key" })
        )
    );
    let key = sample_plugins::DEMO_KEY;
    shows(&format!(
        "curl -H 'x-api-key: {key}' localhost:8080/hello\nhello from Rust\n"
    ));
    let right = http_raw(addr, "GET", "/hello", &[("x-api-key", key)], b"", None);
    assert_eq!(
        (right.status, right.text()),
        (200, "hello from Rust".to_owned())
    );
    let open = http(addr, "GET", "/hello/ada", b"");
    assert_eq!((open.status, open.text()), (200, "hello, ada".to_owned()));
    // timing, on every answer.
    assert!(is_server_timing(open.header("server-timing")), "{open:?}");
    assert_eq!(open.header_values("server-timing").len(), 1, "{open:?}");

    // ratelimit, on `/likes` only: three at once, then 429 until the next token, 5 s later.
    for value in [10, 20, 30] {
        let liked = http(addr, "POST", "/likes", b"");
        assert_eq!(
            (liked.status, liked.json()),
            (200, json!({ "value": value }))
        );
        shows(&format!("{{\"value\":{value}}}\n"));
    }
    let limited = http(addr, "POST", "/likes", b"");
    assert_eq!(limited.status, 429, "{}", limited.text());
    shows("HTTP/1.1 429 Too Many Requests\n");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{limited:?}");
    assert_eq!(
        limited.json(),
        json!({ "error": "too many requests", "retry_after": retry })
    );
    assert!(
        is_server_timing(limited.header("server-timing")),
        "{limited:?}"
    );
    // The other routes are not limited.
    for _ in 0..10 {
        assert_eq!(http(addr, "GET", "/visits", b"").status, 200);
    }
}

#[test]
fn the_apikey_sample_gives_the_route_the_owner_and_not_the_key() {
    let served = serve(
        "readme-apikey",
        &format!(
            "[[plugin]]\npath = {apikey:?}\nhook_paths = [\"/hooky/{{*rest}}\"]\n\
             [plugin.config]\nkeys = {{ ada = \"k-ada\", grace = \"k-grace\" }}\n\n\
             [[plugin]]\npath = {hooky:?}\n[plugin.config]\ntag = \"a\"\n",
            apikey = samples().apikey.display().to_string(),
            hooky = hooky().display().to_string(),
        ),
    );
    // A client cannot pass for someone else: the owner header is the hook's.
    let headers = [("x-api-key", "k-grace"), ("x-api-key-owner", "ada")];
    let echo = http_raw(served.addr, "GET", "/hooky/a/echo", &headers, b"", None);
    assert_eq!(echo.status, 200, "{}", echo.text());
    let seen = echo.json();
    assert_eq!(seen["x-api-key-owner"], json!("grace"), "{seen}");
    assert_eq!(seen.get("x-api-key"), None, "{seen}");
}

#[test]
fn the_ratelimit_sample_limits_client_addresses_and_nothing_else() {
    let ratelimit = Factory::load(&samples().ratelimit).unwrap_or_else(|e| panic!("{e}"));
    let hello = Factory::load(&samples().hello).unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::new();
    let config = json!({ "rate": 0.001, "burst": 1 });
    registry
        .register(ratelimit.create("ratelimit", &config).unwrap())
        .unwrap();
    registry
        .register(hello.create("hello", &json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let status = |client: Option<&str>| {
        let connection = client.map(|client| Connection {
            client: client.to_owned(),
            local: "127.0.0.1:8080".to_owned(),
        });
        let request = Request::new("GET", "/hello");
        let request = match &connection {
            Some(connection) => request.connection(connection),
            None => request,
        };
        let response = router.dispatch(&request).unwrap();
        (
            response.status,
            response.headers.get("retry-after").cloned(),
        )
    };
    // Without a client address (no socket): never limited.
    for _ in 0..3 {
        assert_eq!(status(None), (200, None));
    }
    // By IP address, whatever the port; one token per 1000 s.
    assert_eq!(status(Some("192.0.2.1:4000")), (200, None));
    let (limited, retry) = status(Some("192.0.2.1:4001"));
    assert_eq!(limited, 429);
    let retry: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((999..=1000).contains(&retry), "{retry}");
    assert_eq!(status(Some("192.0.2.2:4000")), (200, None));
    assert_eq!(status(Some("[2001:db8::1]:4000")), (200, None));
    assert_eq!(status(Some("[2001:db8::1]:4001")).0, 429);
    // An IPv4 address mapped into IPv6 is the IPv4 one.
    assert_eq!(status(Some("[::ffff:192.0.2.2]:4000")).0, 429);
    drop(router);
    registry.stop_all().unwrap();
}

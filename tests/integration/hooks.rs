//! Hooks of plugins in the host's process, Rust (`hooky`, through the SDK) and C (`hooks.c`,
//! against the header alone), over real HTTP on 127.0.0.1 with `plugin-host serve`, and through
//! `Router::dispatch`: the order of request and response hooks, a hook that answers, header and
//! response changes, path scopes, failing, panicking and slow hooks, header changes past what a
//! message may have, refused, slow and out-of-service `on_connect` hooks, and what
//! `on_disconnect` is told.

use crate::util::{
    KeepAlive, assert_b_late_then_serving, assert_closed_without_answer, assert_failure,
    assert_told, entry, fixture, get, hooky, host, http, http_raw, line_with, samples, scratch,
    serve, serve_logging,
};
use plugin_host::{Connection, ErrorKind, Factory, HookSet, Request, Router};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// A `[[plugin]]` entry of `hooky` named and tagged `tag`, with the lines `extra` in the entry
/// and `config` in its `[plugin.config]`.
fn hooky_entry(tag: &str, extra: &str, config: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = {tag:?}\n{extra}\n[plugin.config]\ntag = {tag:?}\n\
         {config}\n\n",
        hooky().display().to_string()
    )
}

/// Asserts that `/healthz` answers 503, `degraded`, with `b` the one plugin poisoned.
#[track_caller]
fn assert_b_poisoned_in_health(served: &crate::util::Served) {
    let health = get(served, "/healthz", &[]);
    let body = health.json();
    assert_eq!(
        (health.status, &body["status"], &body["poisoned"]),
        (503, &json!("degraded"), &json!(["b"])),
        "{body}"
    );
}

/// `hooky` three times, registered in the order `a`, `b`, `c`.
fn abc() -> String {
    ["a", "b", "c"].map(|tag| hooky_entry(tag, "", "")).concat()
}

/// A `[[plugin]]` entry of the C library `library` named `name`, with the lines `config` in its
/// `[plugin.config]`.
fn c_entry(library: &Path, name: &str, config: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = {name:?}\n[plugin.config]\n{config}\n\n",
        library.display().to_string()
    )
}

/// `hooks.c` with its routes, `/c-hooks/headers` and `/c-hooks/disconnects`.
fn c_hooks() -> std::path::PathBuf {
    fixture!("FIXTURE_HOOKS")
}

#[test]
fn request_hooks_run_in_registration_order_and_response_hooks_in_reverse() {
    let served = serve("hooks-order", &abc());
    for tag in ["a", "c"] {
        let response = get(&served, &format!("/hooky/{tag}/echo"), &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        // Each on_request saw the change of the ones before it, and the route saw them all.
        assert_eq!(response.json()["x-hook-trail"], "a,b,c");
        // The last registered saw the response first.
        assert_eq!(response.header_values("x-hook-trail"), ["c", "b", "a"]);
    }
}

#[test]
fn a_request_hook_that_answers_ends_the_chain_and_only_earlier_response_hooks_see_it() {
    let text = format!(
        "{}[[plugin]]\npath = {:?}\nname = \"counter\"\n",
        abc(),
        samples().counter.display().to_string()
    );
    let served = serve("hooks-answer", &text);
    // `c` panics if its on_request runs, and the route counts the requests that reach it.
    let response = http_raw(
        served.addr,
        "POST",
        "/counter",
        &[("x-hook-deny", "b"), ("x-hook-panic", "c")],
        b"",
        None,
    );
    assert_eq!(
        (response.status, response.text()),
        (401, "denied by b".to_owned())
    );
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Test realm="b""#)
    );
    // Only `a` was passed on the way in: neither `b` itself nor `c` sees the answer.
    assert_eq!(response.header_values("x-hook-trail"), ["a"]);
    let counter = get(&served, "/counter", &[]);
    assert_eq!(counter.text(), r#"{"value":0}"#, "the route was reached");
    let health = get(&served, "/healthz", &[]).json();
    assert_eq!(
        health["poisoned"],
        json!([]),
        "c's on_request ran: {health}"
    );
    // The access log names the plugin that answered, not the route's.
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    line_with(&log, &["plugin_host::access", "status=401", "plugin=b"]);
}

#[test]
fn request_hooks_change_the_headers_later_hooks_and_the_route_see() {
    let text = c_entry(&c_hooks(), "c-hooks", "") + &hooky_entry("a", "", "");
    let served = serve("hooks-headers", &text);
    let mut client = KeepAlive::connect(served.addr);
    let sent = [("x-c-remove", "gone"), ("x-keep", "kept")];
    let response = client.get("/hooky/a/echo", &sent);
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(
        (&echo["x-c-seen"], &echo["x-c-remove"], &echo["x-keep"]),
        (&json!("1"), &json!(null), &json!("kept")),
        "{echo}"
    );
    // The C hook read the connection's client address.
    assert_eq!(
        echo["x-c-client"],
        client.local_addr().to_string(),
        "{echo}"
    );
    // A route in C sees the Rust hook's change, and the C hook's.
    let response = client.get("/c-hooks/headers", &sent);
    let lines = response.text();
    let lines: Vec<&str> = lines.lines().collect();
    for line in ["x-c-seen: 1", "x-hook-trail: a", "x-keep: kept"] {
        assert!(lines.contains(&line), "no {line:?} in {lines:?}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("x-c-remove")),
        "{lines:?}"
    );
}

#[test]
fn response_hooks_change_the_status_headers_and_body_the_client_gets() {
    let text = c_entry(&c_hooks(), "c-hooks", "") + &hooky_entry("a", "", "");
    let served = serve("hooks-response", &text);
    let response = get(
        &served,
        "/hooky/a/echo",
        &[("x-hook-status", "a"), ("x-c-replace", "1")],
    );
    assert_eq!(
        (response.status, response.text()),
        (299, "replaced by C".to_owned())
    );
    // The server frames the body the hooks left.
    assert_eq!(response.header("content-length"), Some("13"));
    assert_eq!(response.header_values("x-c-hooked"), ["1"]);
    assert_eq!(response.header_values("x-hook-trail"), ["a"]);
    // Without the steering headers, the route's answer goes out as it was, with the headers.
    let response = get(&served, "/hooky/a/echo", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["x-c-seen"], "1");
    assert_eq!(response.header_values("x-c-hooked"), ["1"]);
}

#[test]
fn response_hooks_see_the_hosts_404_and_405_answers() {
    let served = serve("hooks-404-405", &abc());
    let response = get(&served, "/nowhere", &[]);
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.header_values("x-hook-trail"), ["c", "b", "a"]);
    let response = http(served.addr, "POST", "/hooky/a/echo", b"");
    assert_eq!(response.status, 405, "{}", response.text());
    assert!(response.header("allow").is_some(), "{response:?}");
    assert_eq!(response.header_values("x-hook-trail"), ["c", "b", "a"]);
}

#[test]
fn hook_paths_limit_a_plugins_request_and_response_hooks_to_their_patterns() {
    let text = hooky_entry(
        "a",
        r#"hook_paths = ["/hooky/a/{*rest}", "/elsewhere"]"#,
        "",
    ) + &hooky_entry("b", "", "");
    let served = serve("hooks-scope", &text);
    let response = get(&served, "/hooky/a/echo", &[]);
    assert_eq!(response.json()["x-hook-trail"], "a,b");
    assert_eq!(response.header_values("x-hook-trail"), ["b", "a"]);
    // Out of `a`'s scope: it neither denies nor marks the request, nor sees the answer.
    let response = get(&served, "/hooky/b/echo", &[("x-hook-deny", "a")]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["x-hook-trail"], "b");
    assert_eq!(response.header_values("x-hook-trail"), ["b"]);
    let response = get(&served, "/nowhere", &[]);
    assert_eq!(
        (response.status, response.header_values("x-hook-trail")),
        (404, vec!["b"])
    );
    // A literal pattern of the scope: the 404 there passes `a` too.
    let response = get(&served, "/elsewhere", &[]);
    assert_eq!(
        (response.status, response.header_values("x-hook-trail")),
        (404, vec!["b", "a"])
    );
}

#[test]
fn hook_paths_that_are_not_route_patterns_are_refused_with_the_line() {
    let cases = [
        (r#"["api"]"#, "the hook path `api` does not start with `/`"),
        (
            r#"["/ok", "/a/{*rest}/b"]"#,
            "the hook path `/a/{*rest}/b` is not a valid pattern",
        ),
    ];
    for (paths, says) in cases {
        let config = scratch("hooks-bad-scope").join("plugins.toml");
        std::fs::write(
            &config,
            hooky_entry("a", &format!("hook_paths = {paths}"), ""),
        )
        .unwrap();
        let output = host()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        // The entry's fourth line holds `hook_paths`.
        let expected = format!("{}:4: `hook_paths`: {says}", config.display());
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
}

#[test]
fn a_panicking_hook_is_500_then_its_plugin_is_out_of_service_and_health_degraded() {
    let cases = [
        (
            "x-hook-panic",
            "its on_request hook panicked",
            "deliberate on_request panic in b",
        ),
        (
            "x-hook-panic-response",
            "its on_response hook panicked",
            "deliberate on_response panic in b",
        ),
    ];
    for (header, says, message) in cases {
        let served = serve("hooks-panic", &abc());
        let mut client = KeepAlive::connect(served.addr);
        let response = client.get("/hooky/a/echo", &[(header, "b")]);
        assert_failure(&response, 500, "b", "panicked", says);
        assert!(!response.text().contains(message), "{}", response.text());
        // Every request that passes `b`'s hooks, and its routes, answer 503 without reaching it.
        for target in ["/hooky/a/echo", "/hooky/b/echo", "/nowhere"] {
            let response = client.get(target, &[]);
            let body = response.json();
            assert_eq!(
                (response.status, &body["plugin"], &body["kind"]),
                (503, &json!("b"), &json!("poisoned")),
                "{target}: {body}"
            );
        }
        // New connections are served too: the health check says what is out of service.
        assert_b_poisoned_in_health(&served);
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        assert!(log.contains(message), "no `{message}` in:\n{log}");
    }
}

#[test]
fn a_request_hook_past_its_plugins_deadline_is_504_and_serving_goes_on() {
    // `b`'s on_request hook, then `b`'s route, each past `b`'s deadline in an exchange that
    // runs as one job on the blocking pool, from `a`'s hooks to `c`'s: `a` and `c` have the
    // default deadline, 30 s.
    let cases = [
        ("/hooky/a/echo", "x-hook-slow"),
        ("/hooky/b/echo", "x-hook-slow-route"),
    ];
    for (target, slow) in cases {
        let text = hooky_entry("a", "", "")
            + &hooky_entry("b", "handler_timeout = 0.3", "")
            + &hooky_entry("c", "", "");
        let served = serve("hooks-slow", &text);
        // A new hook runs off the server's workers, so its client is answered at the deadline.
        let headers = [(slow, "b"), ("x-hook-sleep-ms", "1500")];
        assert_b_late_then_serving(&served, target, &headers, slow);
        // The call past its deadline is counted once, against `b` alone, and so is its return
        // (after a slow route, the job goes on to the on_response hooks of `c`, `b` and `a`).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let health = get(&served, "/healthz", &[]).json();
            let counted = &health["calls_past_deadline"];
            assert_eq!(
                (counted.as_object().map(|c| c.len()), &counted["b"]["total"]),
                (Some(1), &json!(1)),
                "{slow}: {health}"
            );
            if counted["b"]["running"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{slow}: b's call still counted as running 5 s later: {health}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The log says so once, and names `b`'s call when it returns.
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        let late = log.matches("ran past its deadline").count();
        assert_eq!(late, 1, "{slow}: {log}");
        line_with(
            &log,
            &["plugin `b`", "returned after", "with nobody waiting for it"],
        );
    }
}

#[test]
fn a_connection_a_hook_refuses_is_closed_before_any_answer() {
    let cases = [
        (hooky_entry("a", "", "refuse_connections = true"), None),
        (
            hooky_entry("a", "", "") + &c_entry(&c_hooks(), "c-hooks", "refuse_connections = true"),
            // The reason the C hook gave.
            Some("refuse_connections is true"),
        ),
    ];
    for (text, reason) in cases {
        // Refusals are logged at debug level: a client may open any number of connections.
        let served = serve_logging("hooks-refuse", &text, "info,plugin_host::failure=debug");
        // Each new connection is refused, not only the first.
        assert_closed_without_answer(served.addr);
        assert_closed_without_answer(served.addr);
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        if let Some(reason) = reason {
            assert!(log.contains(reason), "no `{reason}` in:\n{log}");
        }
    }
}

#[test]
fn on_disconnect_is_told_what_each_connection_did() {
    let text = c_entry(&c_hooks(), "c-hooks", "") + &hooky_entry("a", "", "");
    let served = serve("hooks-disconnect", &text);
    let opened = Instant::now();
    let mut client = KeepAlive::connect(served.addr);
    assert_eq!(client.get("/hooky/a/echo", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(100));
    // No connection has closed yet.
    assert_eq!(client.get("/c-hooks/disconnects", &[]).text(), "0");
    let (sent, received, address) = (client.sent, client.received, client.local_addr());
    drop(client);
    // Read over a connection that stays open, so that the only one closed is the one above.
    let mut reader = KeepAlive::connect(served.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let stats = reader.get("/hooky/a/stats", &[]).json();
        let counted = reader.get("/c-hooks/disconnects", &[]).text();
        if stats["disconnects"] == 1 && counted == "1" {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "on_disconnect not told within 5 s: {stats}, C counted {counted}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let lifetime = opened.elapsed();
    let (client, server) = (address, served.addr);
    assert_told(
        &stats["last"],
        client,
        server,
        (sent, received),
        lifetime,
        "in process",
    );
}

#[test]
fn hooks_see_neither_healthz_nor_a_request_the_server_refuses() {
    let text = c_entry(&c_hooks(), "c-hooks", "") + &hooky_entry("a", "", "");
    let served = serve("hooks-healthz", &text);
    let deny = [("x-hook-deny", "a"), ("x-c-deny", "1")];
    let response = get(&served, "/healthz", &deny);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["status"], "ok");
    // A path that climbs above `/` is 400 before any route or hook.
    let response = get(&served, "/../hooky/a/echo", &deny);
    assert_eq!(response.status, 400, "{}", response.text());
    for response in [get(&served, "/healthz", &[]), response] {
        assert_eq!(
            (
                response.header("x-hook-trail"),
                response.header("x-c-hooked")
            ),
            (None, None),
            "{response:?}"
        );
    }
}

#[test]
fn a_plugin_of_hooks_only_runs_its_hooks_for_the_routes_of_others() {
    let text =
        c_entry(&fixture!("FIXTURE_HOOKS_ONLY"), "c-hooks-only", "") + &hooky_entry("a", "", "");
    let served = serve("hooks-only", &text);
    let response = get(&served, "/hooky/a/echo", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["x-c-seen"], "1");
    assert_eq!(response.header_values("x-c-hooked"), ["1"]);
    // Its answer: it is registered first, so no response hook sees it, its own neither.
    let response = get(&served, "/hooky/a/echo", &[("x-c-deny", "1")]);
    assert_eq!(
        (response.status, response.text()),
        (403, "denied by C".to_owned())
    );
    assert_eq!(
        (
            response.header("x-c-hooked"),
            response.header("x-hook-trail")
        ),
        (None, None)
    );
    let health = get(&served, "/healthz", &[]).json();
    assert_eq!(health["plugins"], json!(["c-hooks-only", "a"]), "{health}");
}

#[test]
fn factories_and_instances_list_their_hooks() {
    let all = HookSet {
        on_request: true,
        on_response: true,
        on_connect: true,
        on_disconnect: true,
    };
    for library in [
        c_hooks(),
        fixture!("FIXTURE_HOOKS_ONLY"),
        hooky().to_owned(),
    ] {
        let factory = Factory::load(&library).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(factory.hooks(), all, "{}", library.display());
        let instance = factory
            .create("x", &json!({ "tag": "x" }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(instance.hooks(), all, "{}", library.display());
    }
    // A plugin without hooks.
    let hello = Factory::load(&samples().hello).unwrap();
    assert_eq!(hello.hooks(), HookSet::default());
    assert!(!hello.hooks().any());
}

/// A router over `c-hooks` (the C fixture with routes), then `hooky` as `a`, `b` and `c`, all
/// started; the registry is returned too, since the instances live as long as it does.
fn dispatching() -> (plugin_host::Registry, Router) {
    let mut entries = vec![entry(&c_hooks(), "c-hooks", json!({}))];
    entries.extend(["a", "b", "c"].map(|tag| entry(hooky(), tag, json!({ "tag": tag }))));
    let registry = plugin_host::config::deploy(&entries, false).unwrap_or_else(|e| panic!("{e}"));
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap_or_else(|e| panic!("{e}"));
    (registry, router)
}

/// The values of the response headers called `name`, in order, as text.
fn values<'r>(response: &'r plugin_host::Response, name: &str) -> Vec<&'r str> {
    response
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn router_dispatch_runs_the_hook_chain() {
    let (_registry, router) = dispatching();
    let response = router
        .dispatch(&Request::new("GET", "/hooky/a/echo"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    // Without a connection, the C hook read an empty client address.
    assert_eq!(
        (
            &echo["x-hook-trail"],
            &echo["x-c-seen"],
            &echo["x-c-client"]
        ),
        (&json!("a,b,c"), &json!("1"), &json!("")),
        "{echo}"
    );
    assert_eq!(values(&response, "x-hook-trail"), ["c", "b", "a"]);
    assert_eq!(values(&response, "x-c-hooked"), ["1"]);
    // The connection given with the request is the one hooks see.
    let connection = Connection {
        client: "192.0.2.1:4000".to_owned(),
        local: "192.0.2.2:80".to_owned(),
    };
    let response = router
        .dispatch(&Request::new("GET", "/hooky/a/echo").connection(&connection))
        .unwrap_or_else(|e| panic!("{e}"));
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["x-c-client"], "192.0.2.1:4000", "{echo}");
    // An answer of `b`: seen by the response hooks of `c-hooks` and `a` only.
    let response = router
        .dispatch(&Request::new("GET", "/hooky/c/echo").header("x-hook-deny", b"b"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (response.status, response.body.as_slice()),
        (401, &b"denied by b"[..])
    );
    assert_eq!(values(&response, "x-hook-trail"), ["a"]);
    assert_eq!(values(&response, "x-c-hooked"), ["1"]);
}

#[test]
fn router_dispatch_reports_a_failing_or_panicking_hook_as_an_error_naming_the_plugin() {
    let (_registry, router) = dispatching();
    let error = router
        .dispatch(&Request::new("GET", "/hooky/a/echo").header("x-hook-fail", b"b"))
        .expect_err("the hook failed");
    assert!(
        matches!(error.kind(), ErrorKind::HookFailed { hook: "on_request", reason }
            if reason.as_str() == "deliberate on_request failure in b"),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("b"));
    let error = router
        .dispatch(&Request::new("GET", "/hooky/a/echo").header("x-hook-panic", b"b"))
        .expect_err("the hook panicked");
    assert!(
        matches!(error.kind(), ErrorKind::Panicked { call, message }
            if call == "its on_request hook"
                && message.as_str() == "deliberate on_request panic in b"),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("b"));
    assert_eq!(router.poisoned(), ["b"]);
    // From then on, `b`'s hooks refuse every request they would see.
    let error = router
        .dispatch(&Request::new("GET", "/hooky/a/echo"))
        .expect_err("b is out of service");
    assert!(
        matches!(error.kind(), ErrorKind::Poisoned { .. }),
        "{error:?}"
    );
    assert_eq!(error.plugin(), Some("b"));
}

#[test]
fn a_slow_on_connect_hook_runs_off_the_servers_workers_and_fails_closed_at_its_deadline() {
    // `counter`, registered first, has no on_connect hook: the one called is hooky's.
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"counter\"\n\n",
        samples().counter.display().to_string()
    ) + &hooky_entry("a", "handler_timeout = 0.3", "connect_sleep_ms = 2000");
    let served = serve("hooks-slow-connect", &text);
    // More connections at once than the server has workers (2), each sending a request.
    let began = Instant::now();
    let took: Vec<Duration> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let opened = Instant::now();
                    assert_closed_without_answer(served.addr);
                    opened.elapsed()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all = began.elapsed();
    // Each is closed at its hook's deadline, none waits for another's hook: on a worker, the
    // hooks of two connections would run at a time, for 2 s each.
    for each in &took {
        assert!(
            (Duration::from_millis(300)..Duration::from_millis(1200)).contains(each),
            "closed after {took:?}"
        );
    }
    assert!(
        all < Duration::from_millis(1500),
        "all closed after {all:?}"
    );
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    let late: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("its on_connect hook ran past its deadline"))
        .collect();
    assert_eq!(late.len(), 4, "{log}");
    for line in late {
        assert!(line.contains("plugin `a`"), "{line}");
    }
}

#[test]
fn a_hook_whose_header_changes_make_too_many_headers_is_500_and_serving_goes_on() {
    let served = serve(
        "hooks-many",
        &(hooky_entry("a", "", "") + &hooky_entry("b", "", "")),
    );
    let cases = [
        ("x-hook-many", "on_request"),
        ("x-hook-many-response", "on_response"),
    ];
    // First on the blocking pool, where new hooks run; then inline, where they run once they
    // have earned it.
    for _ in 0..2 {
        for (header, hook) in cases {
            let response = get(&served, "/hooky/a/echo", &[(header, "b")]);
            assert_failure(
                &response,
                500,
                "b",
                "failed",
                &format!("its {hook} hook failed"),
            );
            assert!(!response.text().contains("headers"), "{}", response.text());
        }
        for _ in 0..10 {
            let response = get(&served, "/hooky/a/echo", &[]);
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(response.json()["x-hook-trail"], "a,b");
        }
    }
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    for (_, hook) in cases {
        let reason = format!(
            "its {hook} hook failed: its header changes make more headers than a message may have"
        );
        line_with(&log, &["plugin `b`", &reason]);
    }
}

#[test]
fn a_connection_accepted_while_its_on_connect_plugin_is_out_of_service_answers_503_and_closes() {
    let served = serve("hooks-connect-poisoned", &abc());
    let response = get(&served, "/hooky/a/echo", &[("x-hook-panic", "b")]);
    assert_failure(
        &response,
        500,
        "b",
        "panicked",
        "its on_request hook panicked",
    );
    // `b`'s on_connect hook cannot decide: the connection is accepted, and closed by `b`.
    let mut client = KeepAlive::connect(served.addr);
    let response = client.get("/hooky/a/echo", &[]);
    assert_failure(
        &response,
        503,
        "b",
        "poisoned",
        "out of service after it panicked",
    );
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    client.assert_closed(Duration::from_secs(2));
    // A fresh connection is accepted all the same, and the health check says why.
    assert_b_poisoned_in_health(&served);
}

/// A router replaced under open keep-alive connections: one opened under other connection
/// deciders answers its next request with `connection: close` (its client reconnects, and is
/// asked about by the plugins that serve now); the new instance is never told of the end of a
/// connection it did not admit; a connection opened under the new router stays open.
#[test]
fn a_replaced_router_closes_the_connections_other_plugins_admitted_and_tells_only_their_own() {
    let deployed = |tag: &str| {
        let entry = entry(hooky(), &format!("hooky-{tag}"), json!({ "tag": tag }));
        let registry = plugin_host::config::deploy(&[entry], false).unwrap();
        registry.start_all().unwrap_or_else(|e| panic!("{e}"));
        registry
    };
    let (a, b) = (deployed("a"), deployed("b"));
    let mut service = None;
    let mut server = crate::util::TestServer::start_with(
        &[],
        |plugins| {
            service = Some(plugins.clone());
            plugins
        },
        plugin_host::server::ServeOptions::default(),
    );
    let service = service.unwrap();
    let old = service.replace_router(a.router().unwrap());
    assert!(old.drain(Duration::from_secs(5)));
    let mut before = KeepAlive::connect(server.addr);
    let answer = before.get("/hooky/a/echo", &[]);
    assert_eq!((answer.status, answer.header("connection")), (200, None));
    // The same instances in a new router: the connection stays.
    let same = service.replace_router(a.router().unwrap());
    assert!(same.drain(Duration::from_secs(5)));
    let answer = before.get("/hooky/a/echo", &[]);
    assert_eq!((answer.status, answer.header("connection")), (200, None));
    let retired = service.replace_router(b.router().unwrap());
    let answer = before.get("/hooky/b/echo", &[]);
    assert_eq!(answer.status, 200, "served by the new router");
    assert_eq!(answer.header("connection"), Some("close"));
    before.assert_closed(Duration::from_secs(5));
    assert!(retired.drain(Duration::from_secs(5)));
    let mut after = KeepAlive::connect(server.addr);
    for _ in 0..3 {
        let answer = after.get("/hooky/b/echo", &[]);
        assert_eq!((answer.status, answer.header("connection")), (200, None));
    }
    // `b` never admitted the closed connection: it is not told of it.
    std::thread::sleep(Duration::from_millis(200));
    let stats = after.get("/hooky/b/stats", &[]).json();
    assert_eq!(stats["disconnects"], 0, "{stats}");
    drop(after);
    drop(service);
    server.shutdown();
    a.stop_all().unwrap_or_else(|e| panic!("{e}"));
    b.stop_all().unwrap_or_else(|e| panic!("{e}"));
}

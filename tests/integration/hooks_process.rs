//! Hooks of plugins in child processes (protocol 1.1): `hooky` run isolated (its worker answers
//! the hook messages through the library's hook functions) and `hooks.py`, a program with the
//! same behaviours keyed on the same headers, beside `hooky` in the host's process: the order of
//! request and response hooks across the three kinds, a hook that answers, header and response
//! changes, failing, panicking and slow hooks, refused connections, what `on_disconnect` is
//! told, the queue limit, answers the host refuses (too many headers among them), a restarted
//! process that lists other hooks, and a program of protocol 1.0, which gets no hook message.

use crate::util::{
    HttpResponse, KeepAlive, assert_b_late_then_serving, assert_closed_without_answer,
    assert_error, assert_failure, assert_told, get, hooky, http_raw, line_with, process_options,
    program, sample_program, scratch, serve, serve_logging,
};
use plugin_host::config::{PluginEntry, Run};
use plugin_host::process::ProcessPlugin;
use plugin_host::{ErrorKind, HookSet, LoadOptions, Request, Router};
use serde_json::json;
use std::time::{Duration, Instant};

/// Where a plugin with hooky's hooks runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `hooky` in the host's process.
    InProcess,
    /// `hooky`, loaded by a worker process.
    Isolated,
    /// `hooks.py hooks`, a plugin program.
    Program,
}

/// The kinds that run in a child process.
const PROCESS_KINDS: [Kind; 2] = [Kind::Isolated, Kind::Program];

/// What an entry of `kind` runs, as the first lines of its `[[plugin]]` table.
fn source(kind: Kind) -> String {
    let hooky = hooky().display().to_string();
    match kind {
        Kind::InProcess => format!("path = {hooky:?}\n"),
        Kind::Isolated => format!("path = {hooky:?}\nisolation = \"process\"\n"),
        Kind::Program => program_source(&["hooks"]),
    }
}

/// The first lines of the `[[plugin]]` table of `hooks.py` run with `args` (its mode first).
fn program_source(args: &[&str]) -> String {
    let hooks = program("hooks.py").display().to_string();
    format!("exec = {hooks:?}\nargs = {args:?}\n")
}

/// A `[[plugin]]` entry running `source`, named and tagged `tag`, with the lines `extra` in the
/// entry and `config` in its `[plugin.config]`.
fn tagged(source: &str, tag: &str, extra: &str, config: &str) -> String {
    format!(
        "[[plugin]]\n{source}name = {tag:?}\n{extra}\n[plugin.config]\ntag = {tag:?}\n{config}\n\n"
    )
}

/// An entry of `kind` tagged `tag` (see [`tagged`]).
fn entry(kind: Kind, tag: &str, extra: &str, config: &str) -> String {
    tagged(&source(kind), tag, extra, config)
}

#[test]
fn hooks_of_in_process_isolated_and_program_plugins_run_in_registration_order() {
    use Kind::{InProcess, Isolated, Program};
    for kinds in [
        [InProcess, Isolated, Program],
        [Program, Isolated, InProcess],
    ] {
        let text: String = ["a", "b", "c"]
            .into_iter()
            .zip(kinds)
            .map(|(tag, kind)| entry(kind, tag, "", ""))
            .collect();
        let served = serve("hooks-process-order", &text);
        for tag in ["a", "b", "c"] {
            let response = get(&served, &format!("/hooky/{tag}/echo"), &[]);
            assert_eq!(response.status, 200, "{kinds:?}: {}", response.text());
            // Each on_request saw the change of the ones before it, and the route saw them all.
            assert_eq!(response.json()["x-hook-trail"], "a,b,c", "{kinds:?}");
            // The last registered saw the response first.
            assert_eq!(
                response.header_values("x-hook-trail"),
                ["c", "b", "a"],
                "{kinds:?}"
            );
        }
    }
}

#[test]
fn a_process_hook_that_answers_ends_the_chain_and_only_earlier_response_hooks_see_it() {
    let text = entry(Kind::InProcess, "a", "", "")
        + &entry(Kind::Isolated, "b", "", "")
        + &entry(Kind::Program, "c", "", "")
        + &entry(Kind::InProcess, "d", "", "");
    let served = serve("hooks-process-answer", &text);
    // The hooks after the one that answers would panic if they ran.
    let cases = [
        ("b", vec![("x-hook-panic", "c")], vec!["a"]),
        ("c", vec![("x-hook-panic", "d")], vec!["b", "a"]),
    ];
    for (answering, mut headers, passed) in cases {
        headers.push(("x-hook-deny", answering));
        let response = get(&served, "/hooky/d/echo", &headers);
        assert_eq!(
            (response.status, response.text()),
            (401, format!("denied by {answering}"))
        );
        assert_eq!(
            response.header("www-authenticate"),
            Some(format!("Test realm=\"{answering}\"").as_str())
        );
        assert_eq!(response.header_values("x-hook-trail"), passed);
    }
    let health = get(&served, "/healthz", &[]).json();
    assert_eq!(health["poisoned"], json!([]), "a later hook ran: {health}");
}

#[test]
fn process_hooks_change_what_the_route_and_the_client_see() {
    let text = entry(Kind::Isolated, "a", "", "") + &entry(Kind::Program, "b", "", "");
    let served = serve("hooks-process-changes", &text);
    // `b` (the program) replaces the body with the request's body, `|`, then the route's body;
    // `a` (isolated), which sees the response after it, sets the status.
    let response = http_raw(
        served.addr,
        "GET",
        "/hooky/a/echo",
        &[("x-hook-status", "a"), ("x-hook-body", "b")],
        b"sent",
        None,
    );
    assert_eq!(response.status, 299, "{}", response.text());
    let text = response.text();
    let echo = text
        .strip_prefix("sent|")
        .unwrap_or_else(|| panic!("not the replaced body: {text}"));
    // The route saw the request headers both hooks set.
    let echo: serde_json::Value = serde_json::from_str(echo).unwrap();
    assert_eq!(echo["x-hook-trail"], "a,b", "{echo}");
    // The server frames the body the hooks left.
    assert_eq!(
        response.header("content-length"),
        Some(text.len().to_string().as_str())
    );
    assert_eq!(response.header_values("x-hook-trail"), ["b", "a"]);
}

#[test]
fn a_failing_hook_of_every_kind_is_500_naming_the_plugin_and_its_reason_goes_to_the_log_only() {
    let cases = [
        (
            "x-hook-fail",
            "its on_request hook failed",
            "deliberate on_request failure in b",
        ),
        (
            "x-hook-fail-response",
            "its on_response hook failed",
            "deliberate on_response failure in b",
        ),
    ];
    // In this process too, so that every kind answers alike.
    for kind in [Kind::InProcess, Kind::Isolated, Kind::Program] {
        let text = entry(Kind::InProcess, "a", "", "") + &entry(kind, "b", "", "");
        let served = serve("hooks-process-fail", &text);
        for (header, says, reason) in cases {
            let response = get(&served, "/hooky/a/echo", &[(header, "b")]);
            assert_failure(&response, 500, "b", "failed", says);
            assert!(!response.text().contains(reason), "{}", response.text());
            // No hook sees the error answer.
            assert_eq!(response.header_values("x-hook-trail"), Vec::<&str>::new());
        }
        // A failure does not take the plugin out of service.
        let response = get(&served, "/hooky/b/echo", &[]);
        assert_eq!(response.status, 200, "{kind:?}: {}", response.text());
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        for (_, _, reason) in cases {
            assert!(log.contains(reason), "{kind:?}: no `{reason}` in:\n{log}");
        }
    }
}

#[test]
fn a_panicking_process_hook_is_500_then_its_plugin_is_out_of_service() {
    // The isolated library panics for real, in its worker; the program says `panicked`.
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
    for kind in PROCESS_KINDS {
        for (header, says, message) in cases {
            let text = entry(Kind::InProcess, "a", "", "") + &entry(kind, "b", "", "");
            let served = serve("hooks-process-panic", &text);
            let response = get(&served, "/hooky/a/echo", &[(header, "b")]);
            assert_failure(&response, 500, "b", "panicked", says);
            assert!(!response.text().contains(message), "{}", response.text());
            for target in ["/hooky/a/echo", "/hooky/b/echo", "/nowhere"] {
                let response = get(&served, target, &[]);
                let body = response.json();
                assert_eq!(
                    (response.status, &body["plugin"], &body["kind"]),
                    (503, &json!("b"), &json!("poisoned")),
                    "{kind:?} {target}: {body}"
                );
            }
            let (_, log) = served.terminate_within(Duration::from_secs(10));
            assert!(log.contains(message), "{kind:?}: no `{message}` in:\n{log}");
        }
    }
}

#[test]
fn a_process_hook_past_its_plugins_deadline_is_504_and_serving_goes_on() {
    for kind in PROCESS_KINDS {
        let text = entry(Kind::InProcess, "a", "", "")
            + &entry(kind, "b", "handler_timeout = 0.3", "")
            + &entry(Kind::InProcess, "c", "", "");
        let served = serve("hooks-process-slow", &text);
        // The slow hook still runs in the process: another one runs beside it.
        let headers = [("x-hook-slow", "b"), ("x-hook-sleep-ms", "1500")];
        assert_b_late_then_serving(&served, "/hooky/a/echo", &headers, &format!("{kind:?}"));
    }
}

#[test]
fn a_connection_a_process_hook_refuses_is_closed_before_any_answer() {
    for kind in PROCESS_KINDS {
        let text = entry(Kind::InProcess, "a", "", "")
            + &entry(kind, "b", "", "refuse_connections = true");
        // Refusals are logged at debug level.
        let served = serve_logging(
            "hooks-process-refuse",
            &text,
            "info,plugin_host::failure=debug",
        );
        assert_closed_without_answer(served.addr);
        assert_closed_without_answer(served.addr);
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        if let Kind::Program = kind {
            // The reason the program gave beside `refuse`.
            assert!(log.contains("refused by b"), "no reason in:\n{log}");
        }
    }
}

#[test]
fn on_disconnect_tells_a_process_what_each_connection_did() {
    for kind in PROCESS_KINDS {
        let served = serve("hooks-process-disconnect", &entry(kind, "b", "", ""));
        let opened = Instant::now();
        let mut client = KeepAlive::connect(served.addr);
        assert_eq!(client.get("/hooky/b/echo", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(client.get("/hooky/b/stats", &[]).json()["disconnects"], 0);
        let (sent, received, address) = (client.sent, client.received, client.local_addr());
        drop(client);
        // Read over a connection that stays open, so that the only one closed is the one above.
        let mut reader = KeepAlive::connect(served.addr);
        let deadline = Instant::now() + Duration::from_secs(5);
        let stats = loop {
            let stats = reader.get("/hooky/b/stats", &[]).json();
            if stats["disconnects"] == 1 {
                break stats;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?}: on_disconnect not told within 5 s: {stats}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let lifetime = opened.elapsed();
        let (client, server, context) = (address, served.addr, format!("{kind:?}"));
        assert_told(
            &stats["last"],
            client,
            server,
            (sent, received),
            lifetime,
            &context,
        );
    }
}

#[test]
fn a_program_without_hooks_in_its_welcome_serves_unchanged_and_gets_no_hook_message() {
    let text =
        entry(Kind::InProcess, "a", "", "") + &tagged(&program_source(&["plain"]), "p", "", "");
    let served = serve("hooks-process-plain", &text);
    for _ in 0..3 {
        let response = get(&served, "/hooky/p/echo", &[("x-hook-deny", "p")]);
        assert_eq!(response.status, 200, "{}", response.text());
        // The hooks of others apply to its routes.
        assert_eq!(response.json()["x-hook-trail"], "a");
        assert_eq!(response.header_values("x-hook-trail"), ["a"]);
    }
    // Once `a` was told of the closed connections, so would `p` have been, had it hooks.
    let mut reader = KeepAlive::connect(served.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while reader.get("/hooky/a/stats", &[]).json()["disconnects"] != 3 {
        assert!(
            Instant::now() < deadline,
            "on_disconnect not told within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = reader.get("/hooky/p/stats", &[]).json();
    assert_eq!(stats["hook_messages"], 0, "{stats}");
}

#[test]
fn process_instances_list_the_hooks_of_their_welcome() {
    let all = HookSet {
        on_request: true,
        on_response: true,
        on_connect: true,
        on_disconnect: true,
    };
    let config = json!({ "tag": "x" });
    let isolated =
        ProcessPlugin::isolated(hooky(), &LoadOptions::default(), process_options()).unwrap();
    let programs = [("hooks", all), ("plain", HookSet::default())].map(|(mode, hooks)| {
        let plugin = ProcessPlugin::program(
            program("hooks.py"),
            &[mode.to_owned()],
            &[],
            process_options(),
        );
        (plugin, hooks)
    });
    for (plugin, hooks) in [(isolated, all)].into_iter().chain(programs) {
        let instance = plugin
            .create(None, &config)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(instance.hooks(), hooks, "{}", plugin.file().display());
    }
}

#[test]
fn a_welcome_that_lists_a_hook_the_protocol_does_not_have_fails_the_handshake() {
    let file = program("hooks.py");
    let plugin = ProcessPlugin::program(&file, &["misnamed".to_owned()], &[], process_options());
    let error = plugin
        .create(Some("m"), &json!({ "tag": "m" }))
        .err()
        .expect("the handshake failed");
    assert_error(&error, &file, |kind| {
        matches!(kind, ErrorKind::Handshake { .. })
    });
    let message = error.to_string();
    assert!(
        message.contains(
            "its welcome lists the hook \"on_requests\", which protocol 1.1 does not have: the \
             hooks are on_request, on_response, on_connect, on_disconnect"
        ),
        "{message}"
    );
    assert_eq!(error.plugin(), Some("m"));
}

/// A router over the program `hooks.py hooks` as `b`, started; the registry is returned too,
/// since the instance lives as long as it does.
fn program_router() -> (plugin_host::Registry, Router) {
    let entry = PluginEntry {
        run: Run::Program {
            args: vec!["hooks".to_owned()],
            env: Vec::new(),
            options: process_options(),
        },
        name: Some("b".to_owned()),
        config: json!({ "tag": "b" }),
        ..PluginEntry::new(program("hooks.py"))
    };
    let registry = plugin_host::config::deploy(&[entry], false).unwrap_or_else(|e| panic!("{e}"));
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap_or_else(|e| panic!("{e}"));
    (registry, router)
}

#[test]
fn an_answer_of_a_program_hook_the_host_refuses_fails_the_hook_naming_what_it_refused() {
    let (_registry, router) = program_router();
    let cases = [
        (
            "x-hook-forge-edit",
            "on_request",
            "it asked to set the request header `host`, which a hook may not (an invalid name \
             or value, a header that frames the message, or the request's host)",
        ),
        (
            "x-hook-forge-header",
            "on_request",
            "it answered with the refused header `content-length`",
        ),
        (
            "x-hook-forge-status",
            "on_response",
            "it answered with HTTP status 42, outside 200 to 999",
        ),
    ];
    for (header, hook, says) in cases {
        let error = router
            .dispatch(&Request::new("GET", "/hooky/b/echo").header(header, b"b"))
            .err()
            .unwrap_or_else(|| panic!("{header}: the hook did not fail"));
        assert_error(&error, &program("hooks.py"), |kind| {
            matches!(kind, ErrorKind::HookFailed { hook: h, reason }
                if *h == hook && reason.as_str() == says)
        });
        assert_eq!(error.plugin(), Some("b"));
    }
    // None of them takes the plugin out of service.
    let response = router
        .dispatch(&Request::new("GET", "/hooky/b/echo"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, 200);
}

#[test]
fn a_program_hook_answering_busy_or_panicked_is_reported_as_a_call_would_be() {
    let (_registry, router) = program_router();
    let error = router
        .dispatch(&Request::new("GET", "/hooky/b/echo").header("x-hook-busy", b"b"))
        .expect_err("busy");
    assert!(
        matches!(error.kind(), ErrorKind::ChildBusy { reason } if reason.as_str() == "b is busy"),
        "{error:?}"
    );
    let error = router
        .dispatch(&Request::new("GET", "/hooky/b/echo").header("x-hook-panic", b"b"))
        .expect_err("panicked");
    assert!(
        matches!(error.kind(), ErrorKind::Panicked { call, message }
            if call == "its on_request hook"
                && message.as_str() == "deliberate on_request panic in b"),
        "{error:?}"
    );
    assert_eq!(router.poisoned(), ["b"]);
}

#[test]
fn hooks_count_against_the_queue_limit_and_on_disconnect_never_waits_for_it() {
    // `d` stops reading at its first on_request (on its own paths only); `a` counts the
    // connections that closed.
    let text = tagged(
        &program_source(&["deaf"]),
        "d",
        "hook_paths = [\"/deaf/{*rest}\"]\nqueue_limit_mb = 1\nhandler_timeout = 0.5",
        "",
    ) + &entry(Kind::InProcess, "a", "", "");
    // The on_disconnect messages dropped are logged at debug level.
    let served = serve_logging(
        "hooks-process-backlog",
        &text,
        "info,plugin_host::process=debug",
    );
    let body = vec![b'x'; 1 << 20];
    let post = |addr| http_raw(addr, "POST", "/deaf/x", &[], &body, None);
    let first = post(served.addr);
    assert_failure(
        &first,
        504,
        "d",
        "timeout",
        "its on_request hook did not answer within 500ms",
    );
    // Nothing is read any more: a megabyte or two queue up, and the hooks past them are refused
    // at once, without being sent.
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..6).map(|_| scope.spawn(|| post(served.addr))).collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let backlogged = answers
        .iter()
        .filter(|r| r.status == 503 && r.json()["kind"] == "backlogged")
        .count();
    assert!(
        backlogged > 0,
        "{:?}",
        answers.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    // The connections that close meanwhile are told to `d` first, in registration order: its
    // full queue drops them, and `a` is told of every one all the same.
    let began = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(&served, "/hooky/a/echo", &[]).status, 200);
    }
    let mut reader = KeepAlive::connect(served.addr);
    let closed = 1 + answers.len() + 20;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = reader.get("/hooky/a/stats", &[]).json();
        if stats["disconnects"] == closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{closed} connections closed, and after {:?}: {stats}",
            began.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    line_with(
        &log,
        &[
            "plugin=\"d\"",
            "an on_disconnect message was dropped",
            "over the limit of 1048576",
        ],
    );
}

#[test]
fn a_process_started_again_must_list_the_hooks_of_the_one_it_replaces() {
    // The first run lists on_request; it ends at its first call, and every later run lists no
    // hook: each is ended and counted as a crash, until the plugin is quarantined.
    let runs = scratch("hooks-shifty").join("runs").display().to_string();
    let source = program_source(&["shifty", &runs]);
    let served = serve(
        "hooks-process-shifty",
        &tagged(&source, "s", "max_crashes = 2", ""),
    );
    let response = get(&served, "/hooky/s/echo", &[]);
    assert_eq!(response.status, 502, "{}", response.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = get(&served, "/healthz", &[]).json();
        if health["processes"]["s"]["state"] == "quarantined" {
            break;
        }
        assert!(Instant::now() < deadline, "never quarantined: {health}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    let reason = "the new process lists other hooks (none) than the one it replaces \
                  (on_request); to serve other hooks, restart the host";
    assert!(log.contains(reason), "no `{reason}` in:\n{log}");
}

#[test]
fn the_sample_program_quote_adds_its_header_to_every_response_when_configured() {
    let quote = sample_program("quote.py").display().to_string();
    let text = format!(
        "[[plugin]]\nexec = {quote:?}\nname = \"quotes\"\n[plugin.config]\nserved_by = \"q1\"\n\n"
    ) + &entry(Kind::InProcess, "a", "", "");
    let served = serve("hooks-process-quote", &text);
    // Its own answers, another plugin's, and the host's 404.
    for (target, status) in [("/quote", 200), ("/hooky/a/echo", 200), ("/nowhere", 404)] {
        let response = get(&served, target, &[]);
        assert_eq!(response.status, status, "{target}: {}", response.text());
        assert_eq!(
            response.header_values("x-quote-served-by"),
            ["q1"],
            "{target}"
        );
    }
    // Without `served_by`, it lists no hook.
    let plugin = ProcessPlugin::program(sample_program("quote.py"), &[], &[], process_options());
    let instance = plugin.create(None, &json!({})).unwrap();
    assert_eq!(instance.hooks(), HookSet::default());
}

#[test]
fn the_sample_program_quote_refuses_a_served_by_that_is_not_text() {
    let file = sample_program("quote.py");
    let plugin = ProcessPlugin::program(&file, &[], &[], process_options());
    let error = plugin
        .create(Some("quotes"), &json!({ "served_by": 3 }))
        .err()
        .expect("refused");
    assert_error(&error, &file, |kind| {
        matches!(kind, ErrorKind::Handshake { reason }
            if reason.as_str()
                == "it refused to run: invalid configuration at `served_by`: expected text")
    });
}

#[test]
fn a_process_hook_whose_answer_makes_too_many_headers_is_500_and_serving_goes_on() {
    let changes = "its header changes make more headers than a message may have";
    for kind in PROCESS_KINDS {
        let text = entry(Kind::InProcess, "a", "", "") + &entry(kind, "b", "", "");
        let served = serve("hooks-process-many", &text);
        let mut cases = vec![
            ("x-hook-many", "on_request", changes),
            ("x-hook-many-response", "on_response", changes),
        ];
        if let Kind::Program = kind {
            cases.push((
                "x-hook-many-respond",
                "on_request",
                "it answered with 33000 headers, more than a message may have",
            ));
        }
        for &(header, hook, _) in &cases {
            let response = get(&served, "/hooky/a/echo", &[(header, "b")]);
            assert_failure(
                &response,
                500,
                "b",
                "failed",
                &format!("its {hook} hook failed"),
            );
            assert!(!response.text().contains("headers"), "{}", response.text());
            // The host, and the plugin, serve on.
            let response = get(&served, "/hooky/a/echo", &[]);
            assert_eq!(response.status, 200, "{kind:?}: {}", response.text());
            assert_eq!(response.json()["x-hook-trail"], "a,b", "{kind:?}");
        }
        let (_, log) = served.terminate_within(Duration::from_secs(10));
        for (_, hook, reason) in cases {
            line_with(
                &log,
                &["plugin `b`", &format!("its {hook} hook failed: {reason}")],
            );
        }
    }
}

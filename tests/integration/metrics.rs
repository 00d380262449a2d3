//! `GET /metrics` of the real `plugin-host serve`: the counts match the requests sent (answers,
//! 404s, handler errors, panics, deadline overruns), the per-plugin figures of a child that
//! crashed and was restarted, `--metrics off` and `--metrics ADDR:PORT`.

use crate::util::{Served, faulty, fixture, http, scratch, serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The metrics `addr` answers, after checking the status and the content type.
fn scrape(addr: SocketAddr) -> String {
    let response = http(addr, "GET", "/metrics", b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    response.text()
}

/// The value of the sample `series` (name and labels, as the text format writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

/// Asserts that each series of `expected` has its value.
fn assert_values(text: &str, expected: &[(&str, f64)]) {
    for (series, want) in expected {
        assert_eq!(value(text, series), Some(*want), "{series} in:\n{text}");
    }
}

/// The faulty fixture as `faulty`, and again as `sleepy` under `/sleepy` with a deadline of
/// 200 ms (the overrun has its own instance: a panic, whose message and backtrace take their
/// time to print on a busy machine, must not run past a deadline that short).
fn faulty_config() -> String {
    let path = faulty().display().to_string();
    format!(
        "[[plugin]]\npath = {path:?}\nname = \"faulty\"\n\n\
         [[plugin]]\npath = {path:?}\nname = \"sleepy\"\nhandler_timeout = 0.2\n\
         [plugin.config]\npath = \"/sleepy\"\n"
    )
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `serve --config` of `text` with more arguments.
fn serve_with(test: &str, text: &str, args: &[&str]) -> Served {
    let config = scratch(test).join("plugins.toml");
    std::fs::write(&config, text).unwrap();
    let mut all = vec!["--config".as_ref(), config.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    Served::start(&all, None)
}

#[test]
fn the_counts_match_the_requests_sent_answers_404s_errors_panics_and_overruns() {
    let served = serve("metrics-counts", &faulty_config());
    let addr = served.addr;
    let route = |path: &str| format!(r#"method="GET",plugin="faulty",route="{path}""#);
    let sleepy = r#"method="GET",plugin="sleepy",route="/sleepy/sleep""#;
    let unrouted = r#"method="",plugin="",route="""#;
    for _ in 0..5 {
        assert_eq!(http(addr, "GET", "/faulty/ok", b"").status, 200);
    }
    for path in ["/nope", "/faulty", "/faulty/ok/more"] {
        assert_eq!(http(addr, "GET", path, b"").status, 404);
    }
    for _ in 0..2 {
        assert_eq!(http(addr, "GET", "/faulty/error", b"").status, 500);
    }
    assert_eq!(http(addr, "GET", "/sleepy/sleep?ms=600", b"").status, 504);
    // Last: the panic poisons the instance.
    assert_eq!(http(addr, "GET", "/faulty/panic", b"").status, 500);
    let text = scrape(addr);
    assert_values(
        &text,
        &[
            (
                &format!(
                    r#"pluglet_requests_total{{class="2xx",{}}}"#,
                    route("/faulty/ok")
                ),
                5.0,
            ),
            (
                &format!(r#"pluglet_requests_total{{class="4xx",{unrouted}}}"#),
                3.0,
            ),
            (
                &format!(
                    r#"pluglet_requests_total{{class="5xx",{}}}"#,
                    route("/faulty/error")
                ),
                2.0,
            ),
            (
                &format!("pluglet_errors_total{{{}}}", route("/faulty/error")),
                2.0,
            ),
            (
                &format!("pluglet_panics_total{{{}}}", route("/faulty/error")),
                0.0,
            ),
            (
                &format!("pluglet_panics_total{{{}}}", route("/faulty/panic")),
                1.0,
            ),
            (
                &format!("pluglet_errors_total{{{}}}", route("/faulty/panic")),
                0.0,
            ),
            (&format!("pluglet_deadline_overruns_total{{{sleepy}}}"), 1.0),
            (
                &format!(r#"pluglet_requests_total{{class="5xx",{sleepy}}}"#),
                1.0,
            ),
            (
                &format!(
                    "pluglet_request_duration_seconds_count{{{}}}",
                    route("/faulty/ok")
                ),
                5.0,
            ),
            (
                &format!("pluglet_request_duration_seconds_count{{{sleepy}}}"),
                1.0,
            ),
            (
                &format!("pluglet_request_duration_seconds_count{{{unrouted}}}"),
                3.0,
            ),
            (r#"pluglet_plugin_poisoned{plugin="faulty"}"#, 1.0),
            (
                r#"pluglet_plugin_state{plugin="faulty",state="started"}"#,
                1.0,
            ),
            (
                r#"pluglet_plugin_calls_past_deadline_total{plugin="sleepy"}"#,
                1.0,
            ),
            (
                r#"pluglet_plugin_log_lines_dropped_total{plugin="faulty"}"#,
                0.0,
            ),
        ],
    );
    // The overrun waited for its deadline: past the 0.1 s bucket's bound, within 0.25 s's.
    assert_values(
        &text,
        &[
            (
                &format!(r#"pluglet_request_duration_seconds_bucket{{{sleepy},le="0.1"}}"#),
                0.0,
            ),
            (
                &format!(r#"pluglet_request_duration_seconds_bucket{{{sleepy},le="0.5"}}"#),
                1.0,
            ),
        ],
    );
    assert!(text.contains("# HELP pluglet_panics_total "), "{text}");
    // The host's failure mark never reaches the client.
    let failed = http(addr, "GET", "/faulty/error", b"");
    assert_eq!(failed.status, 503, "{}", failed.text());
    assert_eq!(failed.header("x-pluglet-failure"), None);
    // The scrape itself counts among the requests no route answered, after it was rendered.
    let again = scrape(addr);
    assert_values(
        &again,
        &[(
            &format!(r#"pluglet_requests_total{{class="2xx",{unrouted}}}"#),
            1.0,
        )],
    );
    // A plugin out of service (poisoned: 503) counts as an error of the route.
    assert_values(
        &again,
        &[(
            &format!("pluglet_errors_total{{{}}}", route("/faulty/error")),
            3.0,
        )],
    );
    let (status, _) = served.terminate_within(Duration::from_secs(10));
    assert!(status.code().is_some());
}

#[test]
fn metrics_off_leaves_the_path_to_the_plugins() {
    let served = serve_with("metrics-off", &faulty_config(), &["--metrics", "off"]);
    assert_eq!(http(served.addr, "GET", "/faulty/ok", b"").status, 200);
    let response = http(served.addr, "GET", "/metrics", b"");
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.json()["error"], "no route matches /metrics");
    served.terminate_within(Duration::from_secs(10));
}

#[test]
fn metrics_on_an_address_of_their_own_are_served_there_only() {
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let served = serve_with("metrics-apart", &faulty_config(), &["--metrics", &at]);
    let apart: SocketAddr = at.parse().unwrap();
    for _ in 0..3 {
        assert_eq!(http(served.addr, "GET", "/faulty/ok", b"").status, 200);
    }
    // The main listener leaves /metrics to the plugins: no route there.
    let main = http(served.addr, "GET", "/metrics", b"");
    assert_eq!(main.status, 404, "{}", main.text());
    let text = scrape(apart);
    let ok =
        r#"pluglet_requests_total{class="2xx",method="GET",plugin="faulty",route="/faulty/ok"}"#;
    assert_values(&text, &[(ok, 3.0)]);
    // Which counts the main listener's 404 for /metrics, and nothing of the scrapes.
    let unrouted = r#"pluglet_requests_total{class="4xx",method="",plugin="",route=""}"#;
    assert_values(&text, &[(unrouted, 1.0)]);
    assert_eq!(http(apart, "GET", "/faulty/ok", b"").status, 404);
    assert_eq!(http(apart, "POST", "/metrics", b"").status, 405);
    served.terminate_within(Duration::from_secs(10));
}

#[test]
fn an_isolated_plugin_that_crashed_and_was_restarted_shows_it() {
    let crash = fixture!("FIXTURE_CRASH");
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\n",
        crash.display().to_string(),
    );
    let served = serve("metrics-restart", &text);
    let addr = served.addr;
    let before = scrape(addr);
    assert_values(
        &before,
        &[
            (r#"pluglet_plugin_restarts_total{plugin="crashy"}"#, 0.0),
            (
                r#"pluglet_plugin_process_state{plugin="crashy",state="serving"}"#,
                1.0,
            ),
        ],
    );
    assert_eq!(http(addr, "GET", "/crash/segv", b"").status, 502);
    // Restarted after its backoff.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(addr);
        if value(&text, r#"pluglet_plugin_restarts_total{plugin="crashy"}"#) == Some(1.0)
            && value(
                &text,
                r#"pluglet_plugin_process_state{plugin="crashy",state="serving"}"#,
            ) == Some(1.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "never restarted:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let segv = r#"method="GET",plugin="crashy",route="/crash/segv""#;
    assert_values(
        &text,
        &[
            (r#"pluglet_plugin_quarantined{plugin="crashy"}"#, 0.0),
            (r#"pluglet_plugin_poisoned{plugin="crashy"}"#, 0.0),
            (
                &format!(r#"pluglet_requests_total{{class="5xx",{segv}}}"#),
                1.0,
            ),
            (&format!("pluglet_errors_total{{{segv}}}"), 1.0),
        ],
    );
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    served.terminate_within(Duration::from_secs(10));
}

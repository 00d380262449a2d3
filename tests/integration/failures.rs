//! What a client sees of a plugin's failure, the same for a library in process, the same
//! library isolated in a worker, and a program: the status, the plugin's name and the kind of
//! failure. The plugin's own reason (a handler's error text, a panic message, a program's
//! `error`) goes to the served host's log, never to the client.

use crate::util::{FAULTY_FAILURES, faulty, http, program, serve};
use std::time::Duration;

/// What the `serve` mode of `answers.py` answers `GET /answers/error` with.
const PROGRAM_REASON: &str = "the database is down";

/// Serves the configuration `text` and sends `GET target` for each `(target, kind, says,
/// reason)`: each must be 500 with the body `{"error": "plugin `PLUGIN`: SAYS", "plugin":
/// PLUGIN, "kind": KIND}`, without `reason`, which the host's log must have.
fn fails_with_the_reason_in_the_log_only(
    test: &str,
    text: &str,
    plugin: &str,
    cases: &[(&str, &str, &str, &str)],
) {
    let served = serve(test, text);
    for (target, kind, says, reason) in cases {
        let response = http(served.addr, "GET", target, b"");
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{e}: {}", response.text()));
        assert_eq!(
            (response.status, &body["plugin"], &body["kind"]),
            (500, &serde_json::json!(plugin), &serde_json::json!(kind)),
            "{body}"
        );
        let error = body["error"].as_str().unwrap();
        assert_eq!(error, format!("plugin `{plugin}`: {says}"), "{body}");
        assert!(!response.text().contains(reason), "{body}");
    }
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    for (target, _, _, reason) in cases {
        assert!(
            log.contains(reason),
            "no `{reason}` for {target} in:\n{log}"
        );
    }
}

fn faulty_entry(extra: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\nname = \"faulty\"\n{extra}\n",
        faulty().display().to_string()
    )
}

#[test]
fn an_in_process_handler_error_or_panic_is_500_and_its_reason_goes_to_the_log_only() {
    fails_with_the_reason_in_the_log_only(
        "failures-in-process",
        &faulty_entry(""),
        "faulty",
        &FAULTY_FAILURES,
    );
}

#[test]
fn an_isolated_handler_error_or_panic_is_500_and_its_reason_goes_to_the_log_only() {
    fails_with_the_reason_in_the_log_only(
        "failures-isolated",
        &faulty_entry("isolation = \"process\""),
        "faulty",
        &FAULTY_FAILURES,
    );
}

#[test]
fn a_program_answering_error_is_500_and_its_reason_goes_to_the_log_only() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"serve\"]\nname = \"answering\"\n",
        program("answers.py").display().to_string()
    );
    fails_with_the_reason_in_the_log_only(
        "failures-program",
        &text,
        "answering",
        &[(
            "/answers/error",
            "failed",
            "the handler for GET /answers/error failed",
            PROGRAM_REASON,
        )],
    );
}

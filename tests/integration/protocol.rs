//! What `host/src/process/PROTOCOL.md` says of calls and of the handshake, checked against the
//! real host and a program written from it (`tests/fixtures/programs/answers.py`). The page's
//! numbers are checked against the constants by a unit test beside it.

use crate::util::{Served, http, process_options, program, scratch, serve};
use plugin_host::process::{ChildState, ProcessOptions, ProcessPlugin};
use std::time::{Duration, Instant};

/// Serves `answers.py MODE`, under the instance name `name` when given.
fn serve_answers(mode: &str, name: Option<&str>) -> Served {
    let mut text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [{mode:?}]\n",
        program("answers.py").display().to_string()
    );
    if let Some(name) = name {
        text.push_str(&format!("name = {name:?}\n"));
    }
    serve(&format!("protocol-{mode}"), &text)
}

#[test]
fn head_reaches_a_program_as_get_and_its_body_is_dropped() {
    let served = serve_answers("serve", None);
    let response = http(served.addr, "GET", "/answers/method", b"");
    assert_eq!((response.status, response.text()), (200, "GET".to_owned()));
    // The program answers the method its call carries: "GET" again, whose length the client
    // gets without the body.
    let response = http(served.addr, "HEAD", "/answers/method", b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("3"));
    assert!(response.body.is_empty(), "{response:?}");
}

#[test]
fn route_indexes_the_routes_of_starts_result_which_replace_welcomes() {
    let served = serve_answers("relist", None);
    assert_eq!(http(served.addr, "GET", "/relist/a", b"").text(), "route 0");
    assert_eq!(http(served.addr, "GET", "/relist/b", b"").text(), "route 1");
    assert_eq!(http(served.addr, "GET", "/relist/old", b"").status, 404);
}

#[test]
fn a_log_message_before_welcome_is_tagged_with_the_instance_name() {
    let served = serve_answers("serve", Some("answering"));
    let (_, log) = served.terminate_within(Duration::from_secs(10));
    assert!(
        log.contains("warming up plugin=\"answering\" instance=\"answering\""),
        "{log}"
    );
}

#[test]
fn a_process_started_again_must_list_the_routes_of_the_one_it_replaces() {
    // The first run lists GET /shifty/first and exits right after `welcome`, before `start`;
    // every later run lists GET /shifty/later. Calls to /shifty/first would reach route 0 of
    // the new process, GET /shifty/later: each new process is refused instead, and after
    // `max_crashes` the plugin is quarantined.
    let runs = scratch("shifty").join("runs");
    let options = ProcessOptions {
        max_crashes: 3,
        ..process_options()
    };
    let plugin = ProcessPlugin::program(
        program("answers.py"),
        &["shifty".to_owned(), runs.display().to_string()],
        &[],
        options,
    );
    let instance = plugin.create(None, &serde_json::json!({})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, state) = instance.process().unwrap();
        if state == ChildState::Quarantined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {state:?} after {} runs: a new process serves other routes",
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let runs = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(runs, 3, "the first and two refused");
}

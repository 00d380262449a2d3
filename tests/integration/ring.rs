//! The shared memory of isolated calls (Linux; PROTOCOL.md, "Shared memory"): an isolated
//! library serves through it, a body too large for a slot goes through the socket, a quiet
//! plugin costs no CPU, a crash mid-call is a crash as before, and random bytes written into
//! the memory by a hostile program never crash nor hang the host: it ends that program and
//! starts it again. Real `plugin-host serve` processes throughout.

use crate::util::{Served, fixture, http, program, samples, serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The name the memory has in `/proc/PID/maps`.
const MEMORY: &str = "memfd:pluglet-ring";

/// Serves the C greeter run isolated.
fn serve_greeter(test: &str) -> Served {
    let text = format!(
        "[[plugin]]\npath = {:?}\nisolation = \"process\"\n",
        samples().greeter.display().to_string()
    );
    serve(test, &text)
}

/// The pid `/healthz` reports for the process of `plugin`, once it serves.
fn serving_pid(addr: SocketAddr, plugin: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = http(addr, "GET", "/healthz", b"").json();
        let process = &health["processes"][plugin];
        if process["state"] == "serving" {
            return process["pid"].as_u64().unwrap() as u32;
        }
        assert!(Instant::now() < deadline, "never serving: {health}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pid` and every process below it (the reported pid may be an outer process that contains
/// the worker).
fn family(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let tasks = format!("/proc/{}/task", all[i]);
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children"));
            all.extend(
                children
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|child| child.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// The process of `family(pid)` that has the shared memory mapped.
fn mapping(pid: u32) -> Option<u32> {
    family(pid).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/maps")).is_ok_and(|maps| maps.contains(MEMORY))
    })
}

/// CPU time (user and system) of the process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_isolated_library_serves_through_the_memory_and_a_large_body_through_the_socket() {
    let served = serve_greeter("ring-serves");
    let addr = served.addr;
    let pid = serving_pid(addr, "greeter");
    assert!(
        mapping(pid).is_some(),
        "no process of {:?} maps the shared memory",
        family(pid)
    );
    for _ in 0..50 {
        assert_eq!(http(addr, "GET", "/c/hello", b"").text(), "hello from C");
    }
    // A call and an answer far larger than a slot travel on the socket; small ones between
    // them in the ring.
    let large: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    for body in [&b"small"[..], &large, b"small again"] {
        let echoed = http(addr, "POST", "/c/echo", body);
        assert_eq!(echoed.status, 200);
        assert!(echoed.body == body, "{} bytes came back", echoed.body.len());
    }
    assert_eq!(
        serving_pid(addr, "greeter"),
        pid,
        "the worker was restarted"
    );
}

#[test]
fn a_quiet_isolated_plugin_burns_no_cpu() {
    let served = serve_greeter("ring-idle");
    let addr = served.addr;
    let worker = mapping(serving_pid(addr, "greeter")).expect("a worker with the memory");
    for _ in 0..200 {
        assert_eq!(http(addr, "GET", "/c/hello", b"").status, 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    let host = served.child.id();
    let before = (cpu_ticks(host), cpu_ticks(worker));
    std::thread::sleep(Duration::from_secs(1));
    let after = (cpu_ticks(host), cpu_ticks(worker));
    // A thread that kept spinning would burn a whole second (100 ticks); a liveness check may
    // fall in the second.
    let (host, worker) = (after.0 - before.0, after.1 - before.1);
    assert!(
        host <= 3 && worker <= 3,
        "over an idle second, the host used {host} ticks of CPU, the worker {worker}"
    );
}

#[test]
fn a_crash_mid_call_with_the_memory_fails_the_call_and_the_next_process_serves() {
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\n",
        fixture!("FIXTURE_CRASH").display().to_string()
    );
    let served = serve("ring-crash", &text);
    let addr = served.addr;
    let first = serving_pid(addr, "crashy");
    assert!(mapping(first).is_some());
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    let crashed = http(addr, "GET", "/crash/segv", b"");
    assert_eq!(crashed.status, 502, "{}", crashed.text());
    assert_eq!(crashed.json()["kind"], "process_ended");
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let pid = serving_pid(addr, "crashy");
        if pid != first {
            break pid;
        }
        assert!(Instant::now() < deadline, "never restarted");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(mapping(second).is_some(), "the new process has no memory");
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
}

#[test]
fn random_bytes_written_into_the_memory_never_crash_nor_hang_the_host() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nmax_crashes = 1000\n",
        program("ringfuzz.py").display().to_string()
    );
    let served = serve("ring-fuzz", &text);
    let addr = served.addr;
    serving_pid(addr, "fuzz");
    // Answered before the program begins to write into the memory.
    assert_eq!(http(addr, "GET", "/fuzz/hello", b"").text(), "hello");
    let until = Instant::now() + Duration::from_secs(4);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let answer = http(addr, "GET", "/fuzz/hello", b"");
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "a call took {:?}",
                        started.elapsed()
                    );
                    match answer.status {
                        200 => assert_eq!(answer.text(), "hello"),
                        502 => assert_eq!(answer.json()["kind"], "process_ended"),
                        503 => {}
                        other => panic!("{other}: {}", answer.text()),
                    }
                    statuses.push(answer.status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = callers
        .into_iter()
        .flat_map(|caller| caller.join().unwrap())
        .collect();
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    let (ok, ended) = (count(200), count(502));
    assert!(ok + ended > 0, "{} calls, all 503", statuses.len());
    // The host still answers, and has ended the program at least once, saying why.
    let health = http(addr, "GET", "/healthz", b"").status;
    assert!([200, 503].contains(&health), "{health}");
    let (_, log) = served.terminate_within(Duration::from_secs(15));
    let violations = log
        .lines()
        .filter(|line| line.contains("broke the protocol") && line.contains("shared memory"))
        .count();
    assert!(violations >= 1, "no violation was logged:\n{log}");
    assert!(
        log.contains("restarting it in"),
        "the program was never restarted:\n{log}"
    );
}

//! What a child process can make the host hold, and how the worker of an isolated library uses
//! its threads and signals: bytes queued towards a child that stops reading have a cap (calls
//! past it answer 503 at once, the host's memory stays bounded, other plugins are unaffected);
//! the worker runs calls on a bounded pool; any fatal signal the worker gets, even one sent with
//! `kill`, is a crash with a crash line, and the supervisor restarts it.
//!
//! Every figure is measured on a `plugin-host serve` process the test starts, through `/proc`.

use crate::util::{Served, faulty, fixture, http, program, rss, samples, serve};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The body each client posts.
const BODY: usize = 1 << 20;
/// How many clients post at once.
const CONNECTIONS: usize = 128;
/// The queue limit the test configures for the program that stops reading, in MiB.
const QUEUE_LIMIT_MB: usize = 8;

/// Serves the faulty library isolated, as `name`, with `extra` lines in its entry.
fn serve_faulty(test: &str, name: &str, extra: &str) -> Served {
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"{name}\"\nisolation = \"process\"\n{extra}",
        faulty().display().to_string(),
    );
    serve(test, &text)
}

fn health(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&http(addr, "GET", "/healthz", b"").body).unwrap()
}

/// The pid of `plugin`'s child once it serves with a pid other than `old`; fails after 20 s.
fn serving_pid(addr: SocketAddr, plugin: &str, old: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = health(addr);
        let process = &health["processes"][plugin];
        if process["state"] == "serving"
            && let Some(pid) = process["pid"].as_u64()
            && Some(pid) != old
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{plugin} never served with a new pid: {health}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How many lines of `text` hold every one of `needles`.
fn count_lines_with(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// How many threads process `pid` has (0 once it is gone).
fn threads(pid: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Samples `measure` every 20 ms on a thread of its own until dropped; `peak` is the largest
/// value seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start(measure: impl Fn() -> u64 + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(measure());
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(measure())
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// What one client got: the status, the body as JSON (`null` if it is not), and how long the
/// answer took after the body was sent.
struct Answer {
    status: u16,
    json: serde_json::Value,
    took: Duration,
}

/// Posts `body` to `target` over a fresh connection and reads the answer (at most 40 s).
fn post(addr: SocketAddr, target: &str, body: &[u8]) -> Result<Answer, String> {
    send(addr, "POST", target, body)
}

/// Sends a request with `body` to `target` over a fresh connection and reads the answer (at
/// most 40 s).
fn send(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Result<Answer, String> {
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let sent = Instant::now();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let took = sent.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Ok(Answer { status, json, took })
}

#[test]
fn a_child_that_stops_reading_costs_the_host_its_queue_limit_and_no_more() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nname = \"nonreader\"\nqueue_limit_mb = {QUEUE_LIMIT_MB}\n\n\
         [[plugin]]\npath = {:?}\n",
        program("nonreader.py").display().to_string(),
        samples().hello.display().to_string(),
    );
    let served = serve("backpressure", &text);
    let addr = served.addr;
    let host = served.child.id();
    let first = serving_pid(addr, "nonreader", None);
    for _ in 0..20 {
        assert_eq!(http(addr, "GET", "/hello", b"").status, 200);
    }
    let baseline = rss(host);
    let memory = Sampler::start(move || rss(host));
    let others_done = Arc::new(AtomicBool::new(false));
    let body = vec![b'x'; BODY];
    let barrier = std::sync::Barrier::new(CONNECTIONS);
    let (answers, (other_failures, slowest_other)) = std::thread::scope(|scope| {
        // Another plugin of the same host, asked all along.
        let done = others_done.clone();
        let others = scope.spawn(move || {
            let (mut failures, mut slowest) = (0, Duration::ZERO);
            while !done.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if http(addr, "GET", "/hello", b"").status != 200 {
                    failures += 1;
                }
                slowest = slowest.max(sent.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            (failures, slowest)
        });
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (body, barrier) = (&body, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    post(addr, "/nonreader", body)
                })
            })
            .collect();
        let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        others_done.store(true, Ordering::Relaxed);
        (answers, others.join().unwrap())
    });
    let during = memory.peak();
    // The episode ends with the child: the liveness check kills it, and a new one serves.
    let second = serving_pid(addr, "nonreader", Some(first));
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(host);
    let (_, stderr) = served.terminate_within(Duration::from_secs(15));

    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let summary = format!(
        "host RSS {:.1} MiB before, peak {:.1} MiB during, {:.1} MiB after (children {first}, \
         {second})",
        mib(baseline),
        mib(during),
        mib(after)
    );
    eprintln!("{summary}");
    let mut refused = 0;
    for answer in &answers {
        let answer = answer.as_ref().unwrap_or_else(|e| panic!("{e}\n{summary}"));
        match answer.status {
            503 => {
                refused += 1;
                assert_eq!(
                    (&answer.json["kind"], &answer.json["plugin"]),
                    (
                        &serde_json::json!("backlogged"),
                        &serde_json::json!("nonreader")
                    ),
                    "{}",
                    answer.json
                );
                assert!(
                    answer.took < Duration::from_secs(3),
                    "a refused call took {:?}",
                    answer.took
                );
            }
            // Calls queued before the cap was reached end with the child.
            502 => assert_eq!(answer.json["kind"], "process_ended", "{}", answer.json),
            other => panic!("status {other}: {}\n{summary}", answer.json),
        }
    }
    // At most the limit's worth of calls, plus the one that crossed it and what the child and
    // the socket's buffers took in, was accepted.
    assert!(
        refused >= CONNECTIONS - (QUEUE_LIMIT_MB + 8),
        "only {refused} of {CONNECTIONS} calls were refused\n{summary}"
    );
    assert_eq!(other_failures, 0, "the other plugin failed\n{summary}");
    assert!(
        slowest_other < Duration::from_secs(2),
        "the other plugin took {slowest_other:?}\n{summary}"
    );
    // Held at most: the queue (its limit and the frame that crossed it) and the bodies of the
    // calls in it, each body once while it is received (refused, it is dropped at once), and
    // 32 MiB for the allocator and the connections. Without the limit, every body is held
    // twice until the child dies (313 MiB above the baseline, measured).
    let (body, queue) = (BODY as u64, (QUEUE_LIMIT_MB << 20) as u64);
    let bound = 2 * (queue + body) + CONNECTIONS as u64 * body + (32 << 20);
    assert!(
        during.saturating_sub(baseline) < bound && after.saturating_sub(baseline) < bound,
        "{summary}: over the bound of {:.0} MiB above the baseline",
        mib(bound)
    );
    let why: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("queue_limit_mb") && l.contains("nonreader"))
        .collect();
    assert_eq!(why.len(), 1, "not one line saying why:\n{stderr}");
}

/// Process `pid` and its descendants: a child of the host may be a process that runs the
/// plugin itself, or the outer process of a PID namespace, with an init and the plugin's
/// process below it.
fn tree(pid: u64) -> Vec<u64> {
    let parents: Vec<(u64, u64)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let process: u64 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
            // After the command's name, which may hold spaces and parentheses: state, parent.
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((process, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(parents.iter().filter(|p| p.1 == parent).map(|p| p.0));
        next += 1;
    }
    found
}

/// The process that runs the plugin in the tree of the host's child `pid`: the one with the
/// most threads (the outer process and init of a namespace have one each).
fn worker_of(pid: u64) -> u64 {
    tree(pid)
        .into_iter()
        .max_by_key(|&process| threads(process))
        .unwrap()
}

#[test]
fn the_worker_runs_calls_on_a_bounded_pool_of_threads() {
    use plugin_host::limits::WORKER_THREADS;
    const CALLS: usize = 100;
    let served = serve_faulty("worker-pool", "faulty", "");
    let addr = served.addr;
    let child = serving_pid(addr, "faulty", None);
    assert_eq!(http(addr, "GET", "/faulty/ok", b"").status, 200);
    let idle: usize = tree(child).into_iter().map(threads).sum();
    // Every thread of the child's processes, the plugin's own included.
    let most = Sampler::start(move || tree(child).into_iter().map(threads).sum::<usize>() as u64);
    let begun = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..CALLS)
            .map(|_| scope.spawn(move || http(addr, "GET", "/faulty/sleep?ms=1500", b"").status))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let took = begun.elapsed();
    let peak = most.peak() as usize;
    drop(served);
    eprintln!("{peak} threads at most ({idle} idle) for {CALLS} calls, which took {took:?}");
    assert!(statuses.iter().all(|&s| s == 200), "statuses: {statuses:?}");
    assert!(
        peak <= WORKER_THREADS + 8,
        "{peak} threads for {CALLS} concurrent calls ({idle} idle), over {WORKER_THREADS} + 8"
    );
    // More calls than threads: they took turns.
    assert!(
        took >= Duration::from_millis(2 * 1500),
        "{CALLS} calls of 1.5 s took only {took:?} on {WORKER_THREADS} threads"
    );
}

#[test]
fn a_fatal_signal_sent_to_the_worker_is_a_crash_with_a_line_and_a_restart() {
    let crash = fixture!("FIXTURE_CRASH");
    let text = format!(
        "[[plugin]]\npath = {:?}\nname = \"crashy\"\nisolation = \"process\"\n\n\
         [[plugin]]\npath = {:?}\n",
        crash.display().to_string(),
        samples().hello.display().to_string(),
    );
    let served = serve("worker-kill-segv", &text);
    let addr = served.addr;
    let first = serving_pid(addr, "crashy", None);
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    let worker = worker_of(first);
    // SAFETY: `kill` touches no memory; `worker` is a live process of this test's host.
    assert_eq!(unsafe { libc::kill(worker as i32, libc::SIGSEGV) }, 0);
    // The standard library's handler used to let a sent SIGSEGV pass: no restart, and the next
    // real crash of the worker had no crash line.
    let second = serving_pid(addr, "crashy", Some(first));
    assert_eq!(http(addr, "GET", "/crash/ok", b"").text(), "fine");
    assert_eq!(http(addr, "GET", "/hello", b"").status, 200);
    // The new worker reports a real crash as before.
    assert_eq!(http(addr, "GET", "/crash/segv", b"").status, 502);
    serving_pid(addr, "crashy", Some(second));
    let (status, stderr) = served.terminate_within(Duration::from_secs(15));
    assert!(status.success(), "{status}\n{stderr}");
    let lines = |needles: &[&str]| count_lines_with(&stderr, needles);
    assert_eq!(
        lines(&[
            "plugin-host: fatal SIGSEGV sent by ",
            " to the worker of plugin instance ",
            "crashy",
            &crash.display().to_string(),
        ]),
        1,
        "{stderr}"
    );
    assert_eq!(
        lines(&[
            "plugin-host: fatal SIGSEGV in plugin instance ",
            "crashy",
            "during GET /crash/segv"
        ]),
        1,
        "{stderr}"
    );
    assert_eq!(
        lines(&["the plugin process ended (signal: 11 (SIGSEGV)", "crashy"]),
        2,
        "{stderr}"
    );
}

#[test]
fn a_sigsegv_sent_to_the_host_ends_it_by_that_signal() {
    use std::os::unix::process::ExitStatusExt;
    let text = format!(
        "[[plugin]]\npath = {:?}\n",
        samples().hello.display().to_string()
    );
    let served = serve("host-kill-segv", &text);
    assert_eq!(http(served.addr, "GET", "/hello", b"").status, 200);
    // The standard library's handler used to let the first one pass.
    // SAFETY: `kill` touches no memory; the pid is this test's own child.
    assert_eq!(
        unsafe { libc::kill(served.child.id() as i32, libc::SIGSEGV) },
        0
    );
    let (status, stderr) = served.wait();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}\n{stderr}");
    // Outside a worker, a signal sent from outside names no plugin: no crash line.
    assert!(!stderr.contains("plugin-host: fatal"), "{stderr}");
}

#[test]
fn a_worker_past_its_queue_answers_503_at_once_and_skips_calls_past_their_deadline() {
    use plugin_host::limits::{WORKER_QUEUE, WORKER_THREADS};
    // More clients than the worker runs and queues together, each sending a 128 KiB body, in a
    // loop: a call that waits past its deadline of 1.5 s gets 504, and its client sends the next.
    const CLIENTS: usize = WORKER_THREADS + WORKER_QUEUE + 80;
    const BODY: usize = 128 << 10;
    const LOAD: Duration = Duration::from_secs(8);
    let served = serve_faulty("worker-queue", "busy", "handler_timeout = 1.5\n");
    let addr = served.addr;
    let child = serving_pid(addr, "busy", None);
    assert_eq!(http(addr, "GET", "/faulty/ok", b"").status, 200);
    let worker = worker_of(child) as u32;
    let baseline = rss(worker);
    let memory = Sampler::start(move || rss(worker));
    let body = vec![b'x'; BODY];
    let begun = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let body = &body;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    while begun.elapsed() < LOAD {
                        let answer = send(addr, "GET", "/faulty/sleep?ms=1000", body)
                            .unwrap_or_else(|e| panic!("{e}"));
                        if answer.status == 503 {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        answers.push(answer);
                    }
                    answers
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    // Once the load is over, a new call runs within a few seconds: what waited past its
    // deadline is never run.
    let ended = Instant::now();
    let probe = loop {
        let answer = send(addr, "GET", "/faulty/sleep?ms=0", b"").unwrap();
        if answer.status == 200 || ended.elapsed() > Duration::from_secs(10) {
            break ended.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let peak = memory.peak();
    drop(served);

    let count = |status: u16| answers.iter().filter(|a| a.status == status).count();
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let slowest_busy = busy.iter().map(|a| a.took).max().unwrap_or_default();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let summary = format!(
        "{} calls: {} × 200, {} × 503 (slowest {slowest_busy:?}), {} × 504; worker RSS {:.1} MiB \
         before, peak {:.1} MiB; a new call answered {probe:?} after the load",
        answers.len(),
        count(200),
        busy.len(),
        count(504),
        mib(baseline),
        mib(peak),
    );
    eprintln!("{summary}");
    for answer in &answers {
        assert!(
            [200, 503, 504].contains(&answer.status),
            "status {}: {}\n{summary}",
            answer.status,
            answer.json
        );
    }
    assert!(!busy.is_empty(), "no call was refused\n{summary}");
    for answer in &busy {
        assert_eq!(
            (&answer.json["kind"], &answer.json["plugin"]),
            (&serde_json::json!("busy"), &serde_json::json!("busy")),
            "{}",
            answer.json
        );
    }
    assert!(
        slowest_busy < Duration::from_secs(1),
        "refused calls were not refused at once\n{summary}"
    );
    assert!(
        probe < Duration::from_secs(8),
        "the worker was still running calls its host had given up\n{summary}"
    );
    // The worker holds the bodies of the calls it runs and queues, and no more: without its
    // queue's cap, every call sent stays queued until a thread is free for it.
    let bound = ((WORKER_THREADS + WORKER_QUEUE) * 2 * BODY) as u64 + (64 << 20);
    assert!(
        peak.saturating_sub(baseline) < bound,
        "{summary}: over the bound of {:.0} MiB above the baseline",
        mib(bound)
    );
}

#[test]
fn a_worker_past_its_cpu_limit_dies_with_a_crash_line_and_is_restarted() {
    let served = serve_faulty("worker-cpu-limit", "spinner", "cpu_limit = 1\n");
    let addr = served.addr;
    let first = serving_pid(addr, "spinner", None);
    // The kernel sends SIGXCPU after a second of CPU time.
    let answer = http(addr, "GET", "/faulty/spin?ms=30000", b"");
    assert_eq!(answer.status, 502, "{}", answer.text());
    serving_pid(addr, "spinner", Some(first));
    assert_eq!(http(addr, "GET", "/faulty/ok", b"").status, 200);
    let (_, stderr) = served.terminate_within(Duration::from_secs(15));
    let lines = |needles: &[&str]| count_lines_with(&stderr, needles);
    assert_eq!(
        lines(&["plugin-host: fatal SIGXCPU ", "\"spinner\""]),
        1,
        "{stderr}"
    );
    assert_eq!(
        lines(&["the plugin process ended (signal: 24 (SIGXCPU)", "spinner"]),
        1,
        "{stderr}"
    );
}

#[test]
fn an_inline_call_that_turns_slow_does_not_stop_the_worker_reading() {
    // Longer than a liveness check's interval and deadline (5 s each): a worker that stops
    // reading for it fails the check, and is killed with every call in it.
    const SLOW: Duration = Duration::from_secs(11);
    let served = serve_faulty("worker-inline", "warm", "");
    let addr = served.addr;
    let first = serving_pid(addr, "warm", None);
    // Fast calls in a row: the worker runs the route's calls on the thread that reads.
    for _ in 0..20 {
        assert_eq!(http(addr, "GET", "/faulty/sleep?ms=0", b"").status, 200);
    }
    let target = format!("/faulty/sleep?ms={}", SLOW.as_millis());
    let begun = Instant::now();
    let (slow, slowest_other) = std::thread::scope(|scope| {
        let slow = scope.spawn(|| send(addr, "GET", &target, b""));
        std::thread::sleep(Duration::from_millis(300));
        // Other calls, answered while it runs.
        let mut slowest = Duration::ZERO;
        while begun.elapsed() < SLOW - Duration::from_millis(500) {
            let answer = send(addr, "GET", "/faulty/ok", b"").unwrap();
            assert_eq!(answer.status, 200, "{}", answer.json);
            slowest = slowest.max(answer.took);
            assert!(
                answer.took < Duration::from_secs(2),
                "a call took {:?} beside the slow one, {:?} after it began",
                answer.took,
                begun.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (slow.join().unwrap(), slowest)
    });
    let slow = slow.unwrap();
    assert_eq!(slow.status, 200, "{}", slow.json);
    // The same worker: no liveness check failed.
    assert_eq!(serving_pid(addr, "warm", None), first);
    let (_, stderr) = served.terminate_within(Duration::from_secs(15));
    eprintln!("other calls took {slowest_other:?} at most beside a slow inline call of {SLOW:?}");
    assert!(!stderr.contains("liveness check"), "{stderr}");
}

#[test]
fn a_child_killed_at_stop_has_its_exit_status_in_the_log() {
    let text = format!(
        "[[plugin]]\nexec = {:?}\nargs = [\"stubborn\"]\n",
        program("misbehave.py").display().to_string(),
    );
    let served = serve("stop-status", &text);
    serving_pid(served.addr, "stubborn", None);
    // It answers `stop`, then ignores SIGTERM: SIGKILL ends it, 5 s and 2 s later.
    let (_, stderr) = served.terminate_within(Duration::from_secs(20));
    let ended: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("stubborn") && l.contains("the plugin process ended"))
        .collect();
    assert_eq!(ended.len(), 1, "{stderr}");
    assert!(
        ended[0].contains("(signal: 9 (SIGKILL))"),
        "no exit status: {}",
        ended[0]
    );
}

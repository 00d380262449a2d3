//! The `plugin-host` binary: check, list, configuration errors, serve and graceful shutdown.

use crate::util::{
    Served, faulty, fixture, host, http, line_with, sample_program, samples, scratch, write_config,
};
use std::process::{Command, Output};

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("run plugin-host");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The ABI minor of this build, which the samples are built for.
const ABI_MINOR: u16 = plugin_api::abi::PLUGIN_ABI_MINOR;
#[test]
fn check_passes_good_files() {
    let s = samples();
    let (output, stdout, stderr) = run(host().arg("check").arg(&s.hello).arg(&s.greeter));
    assert!(output.status.success(), "{stdout}{stderr}");
    let hello = stdout
        .lines()
        .find(|l| l.starts_with(&format!("ok    {}: ELF ", s.hello.display())))
        .unwrap_or_else(|| panic!("no verdict for hello in\n{stdout}"));
    assert!(
        hello.ends_with(&format!(
            "exports plugin_factory, ABI mark 1.{ABI_MINOR}; plugin `hello` 0.1.0, ABI 1.{ABI_MINOR}, \
             3 route(s): GET /hello, GET /hello/{{name}}, GET /ping"
        )),
        "{hello}"
    );
    assert!(stdout.contains("plugin `greeter` 1.0.0"), "{stdout}");
}

#[test]
fn check_config_checks_every_entry_with_its_own_configuration() {
    let s = samples();
    let dir = scratch("check-config");
    let needs = fixture!("FIXTURE_NEEDS_CONFIG");
    let config = dir.join("plugins.toml");
    let text = format!(
        "[[plugin]]\npath = {counter:?}\nname = \"visits\"\n[plugin.config]\npath = \"/visits\"\n\n\
         [[plugin]]\npath = {counter:?}\nname = \"likes\"\n[plugin.config]\npath = \"/likes\"\n\n\
         [[plugin]]\npath = {needs:?}\n[plugin.config]\ngreeting = \"hi\"\n\n\
         [[plugin]]\npath = {counter:?}\nname = \"broken\"\n[plugin.config]\npath = \"/broken\"\n\
         step = \"two\"\n",
        counter = s.counter.display().to_string(),
        needs = needs.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let (output, stdout, stderr) = run(host().arg("check").arg("--config").arg(&config));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // Two instances of one file: two checks, each with its own routes.
    assert!(
        lines[0].starts_with(&format!("ok    {}: ", s.counter.display()))
            && lines[0].ends_with(&format!(
                "as `visits`, ABI 1.{ABI_MINOR}, 2 route(s): GET /visits, POST /visits"
            )),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(&format!(
            "as `likes`, ABI 1.{ABI_MINOR}, 2 route(s): GET /likes, POST /likes"
        )),
        "{stdout}"
    );
    // A plugin that needs its configuration passes with it.
    assert!(
        lines[2].starts_with(&format!("ok    {}: ", needs.display())),
        "{stdout}"
    );
    // A wrong value points at its line in the configuration file.
    assert!(
        lines[3].starts_with(&format!(
            "FAIL  {}: {}:23: plugin `broken`",
            s.counter.display(),
            config.display()
        )) && lines[3].contains("invalid configuration at `step`"),
        "{stdout}"
    );
    assert_eq!(lines[4], "1 of 4 failed");
}

#[test]
fn check_of_a_file_that_needs_a_configuration_says_how_to_pass_one() {
    let needs = fixture!("FIXTURE_NEEDS_CONFIG");
    let (output, stdout, _) = run(host().arg("check").arg(&needs));
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("create failed: invalid configuration: missing field `greeting`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("it was created with the configuration {}")
            && stdout.contains("`plugin-host check --config FILE`"),
        "{stdout}"
    );
    // Files and a configuration are one or the other.
    let (output, _, stderr) = run(host()
        .arg("check")
        .arg(&needs)
        .arg("--config")
        .arg("x.toml"));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn check_loads_a_bare_file_name_from_the_current_folder() {
    // `dlopen("libgreeter.so")` would search the library path; the host loads the file it
    // checked, in the current folder.
    let greeter = &samples().greeter;
    let (output, stdout, stderr) = run(host()
        .current_dir(greeter.parent().unwrap())
        .arg("check")
        .arg(greeter.file_name().unwrap()));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("plugin `greeter`"), "{stdout}");
}

#[test]
fn an_exec_path_is_relative_to_the_configuration_however_it_is_named() {
    // `--config p.toml` and `--config ./p.toml` name the same folder: `exec = "quote.py"` is
    // the program beside it, never a name looked up on PATH.
    let dir = scratch("exec-relative");
    std::fs::copy(sample_program("quote.py"), dir.join("quote.py")).unwrap();
    std::fs::write(dir.join("p.toml"), "[[plugin]]\nexec = \"quote.py\"\n").unwrap();
    for config in ["p.toml", "./p.toml"] {
        let (output, stdout, stderr) = run(host()
            .current_dir(&dir)
            .arg("check")
            .arg("--config")
            .arg(config));
        assert!(
            output.status.success(),
            "--config {config}: {stdout}{stderr}"
        );
        assert!(stdout.contains("quote"), "--config {config}: {stdout}");
    }
}

#[test]
fn check_reports_a_plugin_without_an_abi_mark() {
    let unmarked = fixture!("FIXTURE_UNMARKED");
    let (output, stdout, _) = run(host().arg("check").arg(&unmarked));
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("no ABI mark (checked after loading)"),
        "{stdout}"
    );
}

#[test]
fn check_applies_the_permission_rule_and_its_override() {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch("check-perms").join("libgreeter.so");
    std::fs::copy(&samples().greeter, &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
    let (output, stdout, _) = run(host().arg("check").arg(&path));
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("is writable by its group or by others (mode 646)"),
        "{stdout}"
    );
    let (output, stdout, stderr) = run(host()
        .args(["check", "--allow-insecure-permissions"])
        .arg(&path));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("loading anyway"),
        "{stderr}"
    );
}

#[test]
fn check_fails_a_bad_file_and_says_why() {
    let s = samples();
    let bad = fixture!("FIXTURE_BAD_MAGIC");
    let (output, stdout, _) = run(host().arg("check").arg(&s.hello).arg(&bad));
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line in {stdout}"));
    assert!(line.contains(&bad.display().to_string()), "{line}");
    assert!(line.contains("magic is 0xdeadbeef"), "{line}");
    assert!(stdout.contains("1 of 2 failed"), "{stdout}");
}

#[test]
fn check_fails_a_file_whose_routes_conflict_with_an_earlier_one() {
    let greeter = &samples().greeter;
    let conflicting = fixture!("FIXTURE_CONFLICT");
    let (output, stdout, _) = run(host().arg("check").arg(greeter).arg(&conflicting));
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    {}", greeter.display())),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .expect("a FAIL line");
    assert!(line.contains(&conflicting.display().to_string()), "{line}");
    assert!(
        line.contains("route GET /c/hello conflicts with GET /c/hello of plugin `greeter`"),
        "{line}"
    );
}

#[test]
fn list_prints_plugins_and_routes_from_a_config() {
    let config = sample_plugins::stage(&scratch("list")).unwrap();
    let (output, stdout, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(output.status.success(), "{stdout}{stderr}");
    for expected in [
        "visits",
        "likes",
        "greeter",
        "wordcount",
        "/visits",
        "/likes",
        "/cpp/files/{*path}",
    ] {
        assert!(stdout.contains(expected), "no {expected} in\n{stdout}");
    }
    let likes = stdout.lines().find(|l| l.starts_with("likes")).unwrap();
    assert!(
        likes.contains("counter") && likes.contains("0.1.0"),
        "{likes}"
    );
}

#[test]
fn list_starts_no_child_process_and_says_so() {
    let dir = scratch("list-children");
    // A program that leaves a mark when it is started.
    let program = dir.join("marker.sh");
    std::fs::write(&program, "#!/bin/sh\ntouch \"$0.ran\"\n").unwrap();
    let mut permissions = std::fs::metadata(&program).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&program, permissions).unwrap();
    let crash = fixture!("FIXTURE_CRASH");
    let config = dir.join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = {crash:?}\nisolation = \"process\"\n\n\
             [[plugin]]\npath = {hello:?}\n\n\
             [[plugin]]\nexec = \"marker.sh\"\nname = \"marked\"\n",
            crash = crash.display().to_string(),
            hello = samples().hello.display().to_string(),
        ),
    )
    .unwrap();
    let (output, stdout, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(output.status.success(), "{stdout}{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .take(3)
        .map(|line| line.split_whitespace().collect())
        .collect();
    let crash = crash.display().to_string();
    let program = program.display().to_string();
    assert_eq!(
        rows,
        [
            vec!["-", "-", "-", "not", "started", "isolated", &crash],
            vec![
                "hello",
                "hello",
                "0.1.0",
                "started",
                "in-process",
                &samples().hello.display().to_string()
            ],
            vec!["marked", "-", "-", "not", "started", "program", &program],
        ],
        "{stdout}"
    );
    assert!(stdout.contains("GET      /hello/{name}"), "{stdout}");
    assert!(!stdout.contains("/crash/"), "{stdout}");
    assert!(
        stdout.ends_with(
            "\n2 plugin(s) in child processes not started, their routes not listed: \
             `plugin-host check --config FILE` starts them and lists their routes\n"
        ),
        "{stdout}"
    );
    // Neither child ran: the program left no mark, and the library's `create` logged nothing.
    assert!(!dir.join("marker.sh.ran").exists(), "{stderr}");
    assert!(!stderr.contains("crash: created"), "{stderr}");
}

#[test]
fn the_log_has_colours_only_on_a_terminal_without_no_color() {
    let config = write_config(&scratch("colours"), &[(&samples().greeter, "greeter", "")]);
    // Into a pipe: text.
    let (output, stdout, stderr) = run(host()
        .env_remove("NO_COLOR")
        .arg("list")
        .arg("--config")
        .arg(&config));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("INFO plugin: starting"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
    // On a terminal (a pseudo-terminal of python3's, whose output is the terminal's): colours,
    // unless NO_COLOR is set to something.
    let on_terminal = |no_color: Option<&str>| {
        let mut command = Command::new("python3");
        command
            .args([
                "-c",
                "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))",
            ])
            .arg(sample_plugins::host_binary())
            .args(["list", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        match no_color {
            Some(value) => command.env("NO_COLOR", value),
            None => command.env_remove("NO_COLOR"),
        };
        let (output, terminal, stderr) = run(&mut command);
        assert!(output.status.success(), "{terminal}{stderr}");
        assert!(terminal.contains(" starting "), "{terminal:?}");
        terminal
    };
    assert!(on_terminal(None).contains("\x1b["));
    assert!(on_terminal(Some("")).contains("\x1b["));
    let plain = on_terminal(Some("1"));
    assert!(!plain.contains("\x1b["), "{plain:?}");
}

#[test]
fn a_config_error_names_the_line() {
    let dir = scratch("bad-config");
    let config = dir.join("plugins.toml");
    let hello = samples().hello.display().to_string();
    std::fs::write(
        &config,
        format!("[[plugin]]\npath = {hello:?}\npth = \"typo\"\n"),
    )
    .unwrap();
    let (output, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("{}:3:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `pth`"), "{stderr}");

    std::fs::write(
        &config,
        "[[plugin]]\nenabled = true\n\n[[plugin]]\npath = \"nope.so\"\n",
    )
    .unwrap();
    let (output, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(":1:")
            && stderr.contains("a plugin needs `path` (a library), `exec` (a program file) or"),
        "{stderr}"
    );

    std::fs::write(&config, "[[plugin]]\npath = \"nope.so\"\n").unwrap();
    let (_, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(
        stderr.contains(":2:") && stderr.contains("does not exist"),
        "{stderr}"
    );

    std::fs::write(
        &config,
        format!("[[plugin]]\npath = {hello:?}\nenabled = \"yes\"\n"),
    )
    .unwrap();
    let (_, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(
        stderr.contains(":3:") && stderr.contains("invalid type"),
        "{stderr}"
    );
}

#[test]
fn a_plugin_refusing_its_configuration_points_at_the_value_in_the_toml_file() {
    let dir = scratch("config-value");
    let config = dir.join("plugins.toml");
    let counter = samples().counter.display().to_string();
    let write = |table: &str| {
        let text =
            format!("# the counters\n\n[[plugin]]\npath = {counter:?}\nname = \"visits\"\n{table}");
        std::fs::write(&config, text).unwrap();
        run(host().arg("list").arg("--config").arg(&config))
    };
    // A value of the wrong type: its own line (8), not the generated JSON's "line 1 column 12".
    let (output, _, stderr) = write("[plugin.config]\npath = \"/visits\"\nstart = \"forty\"\n");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:8: plugin `visits`", config.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid configuration at `start`: invalid type: string \"forty\""),
        "{stderr}"
    );
    assert!(!stderr.contains("column"), "{stderr}");
    // An unknown key: its line too.
    let (_, _, stderr) = write("[plugin.config]\npath = \"/visits\"\n\nstrat = 4\n");
    assert!(stderr.contains(":9: plugin `visits`"), "{stderr}");
    assert!(stderr.contains("unknown field `strat`"), "{stderr}");
    // A file the loader refuses: the entry's line.
    std::fs::write(dir.join("empty.so"), "").unwrap();
    std::fs::write(&config, "\n[[plugin]]\npath = \"empty.so\"\n").unwrap();
    let (_, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(
        stderr.contains(&format!("{}:2: plugin file", config.display())),
        "{stderr}"
    );
}

#[test]
fn a_sha256_pin_is_enforced_by_serve() {
    let dir = scratch("pin");
    let hello = &samples().hello;
    let actual = plugin_host::sha256_hex(&std::fs::read(hello).unwrap());
    let wrong = "ab".repeat(32);
    let config = dir.join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = {:?}\nsha256 = {wrong:?}\n",
            hello.display().to_string()
        ),
    )
    .unwrap();
    let (output, _, stderr) = run(host()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&wrong) && stderr.contains(&actual),
        "{stderr}"
    );
    assert!(stderr.contains(&hello.display().to_string()), "{stderr}");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = {:?}\nsha256 = \"abc\"\n",
            hello.display().to_string()
        ),
    )
    .unwrap();
    let (_, _, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(
        stderr.contains(":3:") && stderr.contains("64 hexadecimal digits"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = {:?}\nsha256 = {actual:?}\n",
            hello.display().to_string()
        ),
    )
    .unwrap();
    let (output, stdout, stderr) = run(host().arg("list").arg("--config").arg(&config));
    assert!(output.status.success(), "{stdout}{stderr}");
}

#[test]
fn serve_exits_non_zero_when_a_plugin_fails_to_start() {
    let dir = scratch("serve-fails");
    let config = write_config(
        &dir,
        &[
            (&samples().hello, "hello", ""),
            (faulty(), "broken", "[plugin.config]\nfail_in = \"start\""),
        ],
    );
    let (output, _, stderr) = run(host()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("plugin `broken`"), "{stderr}");
    assert!(stderr.contains(&faulty().display().to_string()), "{stderr}");
    assert!(stderr.contains("deliberate failure in start"), "{stderr}");
}

#[test]
fn sigterm_drains_in_flight_requests_then_stops_plugins_in_reverse() {
    let dir = scratch("serve-drain");
    let config = write_config(
        &dir,
        &[(&samples().hello, "hello", ""), (faulty(), "sleepy", "")],
    );
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], None);
    let (addr, summary) = (served.addr, &served.summary);
    assert!(
        summary.contains("sleepy") && summary.contains("/faulty/sleep"),
        "{summary}"
    );
    assert_eq!(http(addr, "GET", "/healthz", b"").status, 200);
    let slow = std::thread::spawn(move || http(addr, "GET", "/faulty/sleep?ms=1000", b""));
    std::thread::sleep(std::time::Duration::from_millis(300));
    served.terminate();
    let response = slow.join().unwrap();
    assert_eq!(
        (response.status, response.text()),
        (200, "awake".to_owned())
    );
    let (status, stderr) = served.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let position = |needles: &[&str]| line_with(&stderr, needles);
    let slept = position(&["slept 1000 ms"]);
    let stop_sleepy = position(&[" stop ", "instance=\"sleepy\""]);
    let stop_hello = position(&["stopping", "instance=\"hello\""]);
    assert!(
        slept < stop_sleepy && stop_sleepy < stop_hello,
        "order:\n{stderr}"
    );
}

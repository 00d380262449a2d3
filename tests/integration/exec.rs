//! Plugin programs: what `exec` and `command` name, and what `check`, `serve` and a failed start
//! say about a program that cannot run.

use crate::util::{Served, host, http, process_options, sample_program, scratch};
use plugin_host::ErrorKind;
use plugin_host::process::{ProcessOptions, ProcessPlugin};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes the file `name` in `dir` with `text` and `mode`; returns its path.
fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Writes `config` to `dir/p.toml` and runs `plugin-host check --config p.toml` and
/// `plugin-host serve --config p.toml` in `dir`: both must fail, and name line `line` of
/// `p.toml` and each of `needles`.
#[track_caller]
fn refused(dir: &Path, config: &str, line: usize, needles: &[&str]) {
    std::fs::write(dir.join("p.toml"), config).unwrap();
    for command in [
        &["check", "--config", "p.toml"][..],
        &["serve", "--listen", "127.0.0.1:0", "--config", "p.toml"],
    ] {
        let output = host()
            .current_dir(dir)
            .args(command)
            .output()
            .expect("run plugin-host");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let context = format!("plugin-host {}, with\n{config}\nsaid:\n{said}", command[0]);
        assert_eq!(output.status.code(), Some(1), "{context}");
        assert!(said.contains(&format!("p.toml:{line}: ")), "{context}");
        for needle in needles {
            assert!(said.contains(needle), "no {needle:?} in {context}");
        }
    }
}

/// The physical path of `dir`, as a program started in it sees its working folder.
fn real(dir: &Path) -> String {
    dir.canonicalize().unwrap().display().to_string()
}

#[test]
fn a_missing_program_is_named_by_its_resolved_path_and_what_it_is_relative_to() {
    let dir = scratch("exec-missing");
    let expected = format!(
        "the program {}/kv.py does not exist (`exec = \"kv.py\"` is relative to the \
         configuration's folder)",
        real(&dir)
    );
    refused(&dir, "[[plugin]]\nexec = \"kv.py\"\n", 2, &[&expected]);
}

#[test]
fn a_program_without_the_execute_bit_is_told_to_chmod_it_and_give_it_a_shebang_line() {
    let dir = scratch("exec-mode");
    let kv = write(&dir, "kv.py", "print('no #! line')\n", 0o644);
    let expected = format!(
        "the program {kv} is not executable by this user (mode 644): make it executable \
         (`chmod +x {kv}`), and start it with a `#!` line naming its interpreter (such as \
         `#!/usr/bin/env python3`)",
        kv = kv.display()
    );
    refused(&dir, "\n[[plugin]]\nexec = \"kv.py\"\n", 3, &[&expected]);
    // With its `#!` line, only the execute bit is missing.
    std::fs::copy(sample_program("quote.py"), &kv).unwrap();
    std::fs::set_permissions(&kv, std::fs::Permissions::from_mode(0o644)).unwrap();
    let expected = format!(
        "(mode 644): make it executable (`chmod +x {}`)\n",
        kv.display()
    );
    refused(&dir, "[[plugin]]\nexec = \"kv.py\"\n", 2, &[&expected]);
}

#[test]
fn a_program_with_neither_a_shebang_line_nor_a_binary_format_is_told_to_add_a_shebang_line() {
    // glibc's execvp would run it with /bin/sh, whatever language it is in.
    let dir = scratch("exec-noexec");
    let kv = write(&dir, "kv.py", "print('no #! line')\n", 0o755);
    let expected = format!(
        "the program {} has no `#!` line and is not a binary this system runs: start it with \
         one naming its interpreter (such as `#!/usr/bin/env python3`, or `#!/bin/sh` for a \
         shell script)",
        kv.display()
    );
    refused(&dir, "[[plugin]]\nexec = \"kv.py\"\n", 2, &[&expected]);
}

#[test]
fn a_shebang_line_naming_a_missing_interpreter_names_it() {
    let dir = scratch("exec-interpreter");
    let kv = write(&dir, "kv.py", "#!/usr/bin/pythonX -u\nprint(1)\n", 0o755);
    let expected = format!(
        "the `#!` line of the program {} names the interpreter /usr/bin/pythonX, which does \
         not exist: install it, or name one that is there (such as `#!/usr/bin/env python3`)",
        kv.display()
    );
    refused(&dir, "[[plugin]]\nexec = \"kv.py\"\n", 2, &[&expected]);
}

#[test]
fn a_shebang_line_through_env_names_the_program_missing_from_path() {
    let dir = scratch("exec-env");
    let config = "[[plugin]]\nexec = \"kv.py\"\n";
    for (line, name) in [
        ("#!/usr/bin/env nosuchinterp", "nosuchinterp"),
        // `-S` splits the rest: its options and assignments are skipped.
        (
            "#!/usr/bin/env -S PYTHONUNBUFFERED=1 nosuchinterp -u",
            "nosuchinterp",
        ),
        ("#!/usr/bin/env -Snosuchinterp", "nosuchinterp"),
    ] {
        let kv = write(&dir, "kv.py", &format!("{line}\nprint(1)\n"), 0o755);
        let expected = format!(
            "the `#!` line of the program {} runs `{name}` through env, and there is no program \
             `{name}` in any folder of PATH (",
            kv.display()
        );
        refused(
            &dir,
            config,
            2,
            &[&expected, "): install it, or fix the line"],
        );
    }
    // Without `-S`, env gets the rest of the line as one word.
    write(
        &dir,
        "kv.py",
        "#!/usr/bin/env python3 -u\nprint(1)\n",
        0o755,
    );
    let expected = "there is no program `python3 -u` in any folder of PATH";
    let hint = "(env gets `python3 -u` as one word: to pass it arguments, write \
                `#!/usr/bin/env -S python3 -u`)";
    refused(&dir, config, 2, &[expected, hint]);
}

#[test]
fn a_shebang_line_with_windows_line_endings_is_told_to_convert_the_file() {
    // It passed for `#!/usr/bin/env python3`, and the start failed with env's exit status 127.
    let dir = scratch("exec-crlf");
    let kv = write(
        &dir,
        "kv.py",
        "#!/usr/bin/env python3\r\nprint(1)\r\n",
        0o755,
    );
    let expected = format!(
        "the `#!` line of the program {kv} ends with a carriage return (the file has Windows \
         line endings), which the system takes as part of the name it runs: convert the file \
         to Unix line endings (`sed -i 's/\\r$//' {kv}`, or `dos2unix {kv}`)",
        kv = kv.display()
    );
    refused(&dir, "[[plugin]]\nexec = \"kv.py\"\n", 2, &[&expected]);
}

#[test]
fn a_script_given_as_a_library_path_is_told_to_give_it_as_exec() {
    let dir = scratch("exec-script-path");
    let kv = write(&dir, "kv.py", "#!/usr/bin/env python3\nprint(1)\n", 0o755);
    let expected = format!(
        "plugin file {}: not a shared library: it is a script (it starts with `#!`): give a \
         plugin program as `exec` (or `command`, for a name on PATH) instead of `path`",
        kv.display()
    );
    refused(&dir, "[[plugin]]\npath = \"kv.py\"\n", 1, &[&expected]);
}

#[test]
fn a_folder_given_as_exec_is_refused() {
    let dir = scratch("exec-folder");
    std::fs::create_dir(dir.join("kv")).unwrap();
    let expected = format!(
        "the program {}/kv is a folder: give the path of the program file in it",
        real(&dir)
    );
    refused(&dir, "[[plugin]]\nexec = \"kv\"\n", 2, &[&expected]);
}

#[test]
fn a_command_not_on_path_is_refused_with_the_path_searched() {
    let dir = scratch("exec-command-missing");
    let expected = "there is no program `nosuch-plugin-program` in any folder of PATH (";
    let hint = "): install it, or give the path of the program with `exec`";
    let config = "[[plugin]]\ncommand = \"nosuch-plugin-program\"\n";
    refused(&dir, config, 2, &[expected, hint]);
    // The PATH the program gets: its `env`'s, when it sets one.
    let config = "[[plugin]]\ncommand = \"python3\"\nenv = { PATH = \"/nonexistent\" }\n";
    let expected = "there is no program `python3` in any folder of PATH (/nonexistent)";
    refused(&dir, config, 2, &[expected]);
}

#[test]
fn a_command_is_one_name_without_a_slash_and_the_only_key_saying_what_runs() {
    let dir = scratch("exec-command-keys");
    std::fs::copy(sample_program("quote.py"), dir.join("kv.py")).unwrap();
    let expected = "`command` is a program name, looked up on PATH: use `exec` for a path \
                    (relative to the configuration's folder)";
    refused(&dir, "[[plugin]]\ncommand = \"./kv.py\"\n", 2, &[expected]);
    let expected = "`command` is one program name: give its arguments in `args`";
    refused(
        &dir,
        "[[plugin]]\ncommand = \"python3 kv.py\"\n",
        2,
        &[expected],
    );
    let keys = "give one of `path` (a library), `exec` (a program file) or `command` (a \
                program on PATH)";
    // The second of the keys in the file is the line.
    let config = "[[plugin]]\ncommand = \"python3\"\nexec = \"kv.py\"\n";
    refused(
        &dir,
        config,
        3,
        &[&format!("{keys}, not both `command` and `exec`")],
    );
    let config = "[[plugin]]\npath = \"kv.py\"\n\ncommand = \"python3\"\n";
    refused(
        &dir,
        config,
        4,
        &[&format!("{keys}, not both `path` and `command`")],
    );
    let expected = "a plugin needs `path` (a library), `exec` (a program file) or `command` (a \
                    program on PATH)";
    refused(&dir, "[[plugin]]\nargs = [\"kv.py\"]\n", 1, &[expected]);
}

#[test]
fn a_command_looked_up_on_path_runs_in_the_configuration_folder() {
    // The host starts elsewhere: `args = ["kv.py"]` still names the file beside the
    // configuration, as `exec = "kv.py"` would.
    let dir = scratch("exec-command");
    std::fs::copy(sample_program("quote.py"), dir.join("kv.py")).unwrap();
    std::fs::write(
        dir.join("p.toml"),
        "[[plugin]]\ncommand = \"python3\"\nargs = [\"kv.py\"]\n[plugin.config]\nquotes = [\"hi\"]\n",
    )
    .unwrap();
    let config = dir.join("p.toml");
    let served = Served::start(&["--config".as_ref(), config.as_os_str()], Some("cd /"));
    let response = http(served.addr, "GET", "/quote", b"");
    assert_eq!((response.status, response.text()), (200, "hi".to_owned()));
}

#[test]
fn an_exec_path_serves_from_the_configuration_folder_named_without_a_folder() {
    let dir = scratch("exec-bare-config");
    std::fs::copy(sample_program("quote.py"), dir.join("kv.py")).unwrap();
    std::fs::write(
        dir.join("p.toml"),
        "[[plugin]]\nexec = \"kv.py\"\n[plugin.config]\nquotes = [\"hi\"]\n",
    )
    .unwrap();
    let cd = format!("cd '{}'", dir.display());
    let served = Served::start(&["--config".as_ref(), "p.toml".as_ref()], Some(&cd));
    let response = http(served.addr, "GET", "/quote", b"");
    assert_eq!((response.status, response.text()), (200, "hi".to_owned()));
}

#[test]
fn a_start_the_system_refuses_carries_the_same_hint_through_the_outer_process() {
    // The file can change between the configuration's check and the start: the start's error
    // says what the check would.
    let dir = scratch("exec-start");
    let mode = write(&dir, "mode.py", "print(1)\n", 0o644);
    let interpreter = write(&dir, "interpreter.py", "#!/usr/bin/pythonX\n", 0o755);
    for pid_namespace in [true, false] {
        let options = ProcessOptions {
            pid_namespace,
            ..process_options()
        };
        for (program, needles) in [
            (
                &mode,
                [
                    "Permission denied (os error 13): the program ",
                    "is not executable by this user (mode 644): make it executable (`chmod +x ",
                ],
            ),
            (
                &interpreter,
                [
                    "No such file or directory (os error 2): the `#!` line of the program ",
                    "names the interpreter /usr/bin/pythonX, which does not exist",
                ],
            ),
        ] {
            let plugin = ProcessPlugin::program(program, &[], &[], options.clone());
            let Err(error) = plugin.create(None, &json!({})) else {
                panic!("{} started", program.display());
            };
            let message = error.to_string();
            assert!(
                matches!(error.kind(), ErrorKind::Handshake { .. }),
                "{message}"
            );
            for needle in needles {
                assert!(message.contains(needle), "no {needle:?} in {message}");
            }
        }
    }
}

#[test]
fn a_program_whose_command_is_not_found_at_start_is_told_what_status_127_means() {
    // What `check` cannot see in the file: a command the script runs (here, as an
    // interpreter would be run by `#!/usr/bin/env` once the file changed).
    let dir = scratch("exec-127");
    write(
        &dir,
        "kv.sh",
        "#!/bin/sh\nexec nosuch-interpreter-xyz\n",
        0o755,
    );
    let (code, stdout) = crate::util::check_config(
        "exec-127-config",
        &format!(
            "[[plugin]]\nexec = {:?}\n",
            dir.join("kv.sh").display().to_string()
        ),
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("exited (exit status: 127); status 127 is a command not found"),
        "{stdout}"
    );
}

//! Starting a child process that speaks the protocol: a socket pair whose child end becomes its
//! file descriptor 3, its own process group, a parent-death signal, optional resource limits,
//! and its standard output and error piped, for the link to copy into the host's log. On Linux
//! the child the host holds is an outer process run by the worker executable, which contains
//! the program and everything it starts (see `contain.rs`); without a usable worker executable,
//! the program itself.

use super::contain;
pub(crate) use super::contain::Containment;
use super::wire::{CHILD_FD, FD_VARIABLE};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The program.
    pub(crate) program: PathBuf,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// Variables added to the host's environment.
    pub(crate) env: Vec<(String, String)>,
    /// The most memory the child may map (`RLIMIT_AS`), in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// The most CPU time the child may use (`RLIMIT_CPU`).
    pub(crate) cpu_limit: Option<Duration>,
    /// Whether to give it a PID namespace where the system allows it.
    pub(crate) pid_namespace: bool,
    /// The worker executable, which runs the outer process that contains the program; `None`
    /// when it is not known.
    pub(crate) worker: Option<PathBuf>,
    /// The folder it runs in; `None`: the host's.
    pub(crate) working_dir: Option<PathBuf>,
    /// For an isolated library, the sealed copy of the checked bytes that its workers load
    /// (handed over with `hello`): kept as long as a child may be started from this.
    pub(crate) content: Option<std::sync::Arc<std::fs::File>>,
}

/// A started child: the process and the host's end of its socket.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) socket: UnixStream,
    /// How what it starts is contained: see [`signal`].
    pub(crate) containment: Containment,
}

/// Starts `spec`, with its standard output and error piped (taken and copied by the caller).
/// An error says, after the system's reason, what about the program's file stops it and what to
/// do (see [`cannot_run`]).
///
/// Children are started from one long-lived thread: Linux sends the parent-death signal when
/// the *thread* that forked the child ends, not the process, so a child started from a pool
/// thread that retires would be killed with it.
pub(crate) fn start(spec: Spec) -> std::io::Result<Started> {
    type Request = (Spec, mpsc::SyncSender<std::io::Result<Started>>);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("plugin-spawner".into())
            .spawn(move || {
                for (spec, reply) in receive {
                    let _ = reply.send(spawn(&spec).map_err(|error| explained(&spec, error)));
                }
            })
            .expect("start the plugin spawner thread");
        std::sync::Mutex::new(send)
    });
    let (reply, started) = mpsc::sync_channel(1);
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((spec, reply))
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?;
    started
        .recv()
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?
}

fn spawn(spec: &Spec) -> std::io::Result<Started> {
    let (host_end, child_end) = UnixStream::pair()?;
    let child_fd = OwnedFd::from(child_end);
    #[cfg(target_os = "linux")]
    {
        let wanted = match spec.pid_namespace {
            true => contain::available(),
            false => contain::without_namespace(),
        };
        if let Some((child, containment)) = outer::spawn(spec, &child_fd, wanted)? {
            // Its stdout and stderr stay in `child`: the link copies them (see `output.rs`).
            return Ok(Started {
                child,
                socket: host_end,
                containment,
            });
        }
    }
    let child = command(spec, &child_fd).spawn()?;
    drop(child_fd);
    // Its stdout and stderr stay in `child`: the link copies them (see `output.rs`).
    Ok(Started {
        child,
        socket: host_end,
        containment: Containment::ProcessGroup,
    })
}

/// `error`, the failed start of `spec`, with what [`cannot_run`] finds in its program's file:
/// the file can have changed since the configuration was checked.
fn explained(spec: &Spec, error: std::io::Error) -> std::io::Error {
    match cannot_run(&spec.program, &spec.env, Some(&error)) {
        Some(why) => std::io::Error::new(error.kind(), format!("{error}: {why}")),
        None => error,
    }
}

/// The interpreter line suggested to a script that lacks one.
const SHEBANG_EXAMPLE: &str = "`#!/usr/bin/env python3`";

/// Why the program `program` cannot run, as far as its file tells, and what to do about it;
/// `None` when nothing in the file stops it. The one judge both of a configuration before
/// anything starts (`failed` is `None`) and of a start that failed with `failed`.
///
/// `program` is a path when it holds a `/`, taken as it is; otherwise a command name, looked up
/// on the PATH the program gets (`env`'s, or the host's), as `execvp` does at the start. It finds:
/// a missing file; a folder or other non-file; a file this user may not execute; a `#!` line
/// ending with a carriage return (Windows line endings), or whose interpreter is missing, or
/// whose `env` finds no such program on that PATH (its `-S`, options and `NAME=value` words
/// skipped); and a file with no `#!` line that is not a binary the kernel runs. That last one shows at the start only with a C library whose `execvp` fails
/// with `ENOEXEC` (musl); glibc's hands such a file to `/bin/sh`, whatever language it is in. So
/// without `failed` it is judged from the file: neither `#!` nor ELF, on a Linux whose
/// `binfmt_misc` adds no other formats.
pub(crate) fn cannot_run(
    program: &Path,
    env: &[(String, String)],
    failed: Option<&std::io::Error>,
) -> Option<String> {
    let search = search_path(env);
    let file = if program.as_os_str().as_bytes().contains(&b'/') {
        program.to_owned()
    } else {
        match find_program(program.as_os_str(), &search) {
            Some(file) => file,
            None => {
                return Some(format!(
                    "there is no program `{}` in any folder of PATH ({}): install it, or give \
                     the path of the program with `exec`",
                    program.display(),
                    search.to_string_lossy()
                ));
            }
        }
    };
    let shown = file.display();
    let metadata = match std::fs::metadata(&file) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("the program {shown} does not exist"));
        }
        Err(e) => return Some(format!("the program {shown} cannot be looked at: {e}")),
    };
    if metadata.is_dir() {
        return Some(format!(
            "the program {shown} is a folder: give the path of the program file in it"
        ));
    }
    if !metadata.is_file() {
        return Some(format!("the program {shown} is not a regular file"));
    }
    // What the kernel reads to choose how to run a file: its first 256 bytes (`None`: this
    // user may not read them, which a binary does not need).
    let head = std::fs::File::open(&file).ok().map(|opened| {
        let mut head = Vec::with_capacity(256);
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(opened, 256), &mut head);
        head
    });
    let starts = |magic: &[u8]| head.as_ref().is_some_and(|head| head.starts_with(magic));
    let (script, elf) = (starts(b"#!"), starts(b"\x7fELF"));
    if !executable(&file) {
        let shebang = match script || elf {
            true => String::new(),
            false => format!(
                ", and start it with a `#!` line naming its interpreter (such as {SHEBANG_EXAMPLE})"
            ),
        };
        return Some(format!(
            "the program {shown} is not executable by this user (mode {:o}): make it executable \
             (`chmod +x {shown}`){shebang}",
            metadata.permissions().mode() & 0o7777
        ));
    }
    let head = head?;
    if script {
        return bad_interpreter(&file, &head, &search);
    }
    let no_exec = match failed {
        Some(error) => error.raw_os_error() == Some(libc::ENOEXEC),
        None => !elf && only_elf_and_scripts_run(),
    };
    match (no_exec, elf) {
        (false, _) => None,
        (true, false) => Some(format!(
            "the program {shown} has no `#!` line and is not a binary this system runs: start it \
             with one naming its interpreter (such as {SHEBANG_EXAMPLE}, or `#!/bin/sh` for a \
             shell script)"
        )),
        (true, true) => Some(format!(
            "the program {shown} is a binary this system cannot run: build it for this machine"
        )),
    }
}

/// What is wrong with the `#!` line at the start of `head`, the first bytes of the script
/// `file`: a carriage return at its end, an interpreter that is missing or cannot run, or an
/// `env` that finds no such program on `search`.
fn bad_interpreter(file: &Path, head: &[u8], search: &OsStr) -> Option<String> {
    let line = head[2..].split(|&b| b == b'\n').next().unwrap_or_default();
    let shown = file.display();
    // The kernel splits the line at blanks only: a carriage return stays in the last word.
    if line.ends_with(b"\r") {
        return Some(format!(
            "the `#!` line of the program {shown} ends with a carriage return (the file has \
             Windows line endings), which the system takes as part of the name it runs: \
             convert the file to Unix line endings (`sed -i 's/\\r$//' {shown}`, or `dos2unix \
             {shown}`)"
        ));
    }
    let line = String::from_utf8_lossy(line);
    // As the kernel reads it: the interpreter up to a blank, then at most one argument.
    let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
    let (interpreter, argument) = line
        .split_once([' ', '\t'])
        .map_or((line, ""), |(i, a)| (i, a.trim_matches([' ', '\t'])));
    if interpreter.is_empty() {
        return Some(format!(
            "the `#!` line of the program {shown} names no interpreter: write one such as \
             {SHEBANG_EXAMPLE}"
        ));
    }
    let problem = match std::fs::metadata(interpreter) {
        Err(_) => Some("does not exist"),
        Ok(metadata) if !metadata.is_file() => Some("is not a program file"),
        Ok(_) if !executable(Path::new(interpreter)) => Some("is not executable"),
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        return Some(format!(
            "the `#!` line of the program {shown} names the interpreter {interpreter}, which \
             {problem}: install it, or name one that is there (such as {SHEBANG_EXAMPLE})"
        ));
    }
    if Path::new(interpreter).file_name() != Some(OsStr::new("env")) {
        return None;
    }
    // The kernel passes the rest of the line to env as one word: only `-S` splits it.
    let (words, split): (Vec<&str>, bool) = match argument
        .strip_prefix("-S")
        .or_else(|| argument.strip_prefix("--split-string="))
        .or_else(|| argument.strip_prefix("--split-string "))
    {
        Some(rest) => (rest.split_ascii_whitespace().collect(), true),
        None if argument.starts_with('-') => return None,
        None if argument.is_empty() => (Vec::new(), false),
        None => (vec![argument], false),
    };
    let mut words = words.into_iter();
    let name = loop {
        match words.next() {
            // An option of env with its value as the next word, or another option.
            Some("-u" | "--unset" | "-C" | "--chdir") => {
                words.next();
            }
            Some(word) if word.starts_with('-') || word.contains('=') => {}
            Some(word) => break word,
            None => {
                return Some(format!(
                    "the `#!` line of the program {shown} runs `env` with no program to run: \
                     name one, such as {SHEBANG_EXAMPLE}"
                ));
            }
        }
    };
    if find_program(OsStr::new(name), search).is_some() {
        return None;
    }
    let split_hint = match !split && name.contains([' ', '\t']) {
        true => format!(
            " (env gets `{name}` as one word: to pass it arguments, write `#!{interpreter} -S \
             {name}`)"
        ),
        false => String::new(),
    };
    Some(format!(
        "the `#!` line of the program {shown} runs `{name}` through env, and there is no program \
         `{name}` in any folder of PATH ({}): install it, or fix the line{split_hint}",
        search.to_string_lossy()
    ))
}

/// The PATH a program started with `env` added to the host's environment searches: `execvp`'s
/// default when there is none.
fn search_path(env: &[(String, String)]) -> OsString {
    match env.iter().rev().find(|(name, _)| name == "PATH") {
        Some((_, path)) => path.into(),
        None => std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into()),
    }
}

/// The file `execvp` runs for `name`: itself when it holds a `/`, otherwise the first
/// executable file called `name` in a folder of `search`.
fn find_program(name: &OsStr, search: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        let path = Path::new(name);
        return (path.is_file() && executable(path)).then(|| path.to_owned());
    }
    std::env::split_paths(search)
        .map(|folder| folder.join(name))
        .find(|path| path.is_file() && executable(path))
}

/// Whether this user may execute `path` (its mode, its mount's `noexec`, ACLs: as `execve`
/// judges, by `access`).
fn executable(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `access` reads the NUL-terminated string, which outlives the call.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// Whether the kernel runs nothing but ELF binaries and `#!` scripts: on Linux, when
/// `binfmt_misc` registers no other formats (Java, Wine, …); elsewhere, not known.
fn only_elf_and_scripts_run() -> bool {
    const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";
    if !cfg!(target_os = "linux") {
        return false;
    }
    let status = std::fs::read_to_string(format!("{BINFMT_MISC}/status"));
    if status.is_ok_and(|status| status.trim() == "disabled") {
        return true;
    }
    std::fs::read_dir(BINFMT_MISC).map_or(true, |entries| {
        entries
            .flatten()
            .all(|entry| matches!(entry.file_name().to_str(), Some("register" | "status")))
    })
}

/// A command running `executable` as `spec`'s child runs: with its environment and working
/// folder, the socket's variable, standard input from `/dev/null`, standard output and error
/// piped (the link copies them, see `output.rs`), and leading a process group of its own, so
/// that stopping it reaches what it started (and, for an outer process, the init and what stays
/// in the group without a namespace).
fn child_command(executable: &Path, spec: &Spec) -> Command {
    let mut command = Command::new(executable);
    command
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(FD_VARIABLE, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(folder) = &spec.working_dir {
        command.current_dir(folder);
    }
    command
}

/// The command that starts the program of `spec` itself, with `socket` as its descriptor 3,
/// leading its own process group.
fn command(spec: &Spec, socket: &OwnedFd) -> Command {
    let mut command = child_command(&spec.program, spec);
    command.args(&spec.args);
    let setup = ChildSetup {
        socket: socket.as_raw_fd(),
        status: None,
        parent: std::process::id(),
        memory_limit: spec.memory_limit,
        cpu_seconds: spec.cpu_limit.map(|d| d.as_secs().max(1)),
    };
    // SAFETY: `ChildSetup::run` only makes async-signal-safe system calls (dup2, fcntl, prctl,
    // getppid, setrlimit, _exit) on plain values prepared before the fork, as `pre_exec`
    // requires; it allocates nothing and takes no lock.
    unsafe { command.pre_exec(move || setup.run()) };
    command
}

/// The outer process: the worker executable in its init mode (see `contain.rs`).
#[cfg(target_os = "linux")]
mod outer {
    use super::{ChildSetup, Containment, Spec, contain, signal_group};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::Child;
    use std::time::Duration;

    /// How long the outer process has to say that the program runs (it takes milliseconds).
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

    /// How one attempt went.
    enum Outcome {
        Started(Child),
        /// `wanted` could not be made: try the next containment.
        Uncontained(std::io::Error),
        /// The worker executable cannot run an outer process: why.
        NotAnInit(String),
    }

    /// Starts `spec` under an outer process, with the best containment from `wanted` down that
    /// can be made; `None` when no worker executable is usable (logged once), or none of the
    /// containments could be made: then the caller starts the program itself.
    pub(super) fn spawn(
        spec: &Spec,
        socket: &OwnedFd,
        mut wanted: Containment,
    ) -> std::io::Result<Option<(Child, Containment)>> {
        if !wanted.has_outer() {
            return Ok(None);
        }
        let worker = match contain::init_executable(spec.worker.as_deref()) {
            Ok(worker) => worker,
            Err(reason) => {
                contain::warn_without_outer(&reason);
                return Ok(None);
            }
        };
        while wanted.has_outer() {
            match attempt(spec, socket, wanted, &worker)? {
                Outcome::Started(child) => return Ok(Some((child, wanted))),
                Outcome::Uncontained(error) => {
                    let next = wanted.fallback();
                    tracing::warn!(
                        program = %spec.program.display(),
                        "the plugin process could not get {} ({error}): it runs in {} instead",
                        wanted.describe(),
                        next.describe()
                    );
                    wanted = next;
                }
                Outcome::NotAnInit(reason) => {
                    contain::refuse(&worker, &reason);
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Starts the worker executable as the outer process of `spec`, contained by `wanted`,
    /// and waits until the program runs. An error is the program's, which cannot start.
    fn attempt(
        spec: &Spec,
        socket: &OwnedFd,
        wanted: Containment,
        worker: &Path,
    ) -> std::io::Result<Outcome> {
        let (status, status_end) = pipe()?;
        let plan = contain::Plan {
            containment: wanted,
            args: spec.args.clone(),
            memory_limit: spec.memory_limit,
            cpu_seconds: spec.cpu_limit.map(|d| d.as_secs().max(1)),
            socket: socket.as_raw_fd(),
            status: status_end.as_raw_fd(),
        };
        let plan = serde_json::to_string(&plan).map_err(std::io::Error::other)?;
        // The program inherits the outer process's environment and working folder.
        let mut command = super::child_command(worker, spec);
        command
            .env(contain::INIT_VARIABLE, plan)
            .env(contain::PROGRAM_VARIABLE, &spec.program);
        let worker_of_a_library = spec
            .env
            .iter()
            .any(|(name, _)| name == super::super::worker::LIBRARY_VARIABLE);
        if wanted == Containment::UserNamespace && worker_of_a_library {
            // Its owners of files read differently (see `crate::trust`).
            command.env(crate::trust::USER_NAMESPACE_VARIABLE, "1");
        }
        let setup = ChildSetup {
            socket: socket.as_raw_fd(),
            status: Some(status_end.as_raw_fd()),
            parent: std::process::id(),
            // The outer process sets the program's limits, not its own.
            memory_limit: None,
            cpu_seconds: None,
        };
        // SAFETY: as in `super::command`: `ChildSetup::run` is async-signal-safe.
        unsafe { command.pre_exec(move || setup.run()) };
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) || e.raw_os_error() == Some(libc::ENOEXEC) =>
            {
                return Ok(Outcome::NotAnInit(format!("it cannot be started: {e}")));
            }
            // Out of processes or memory: the program would fail the same way.
            Err(e) => return Err(e),
        };
        // The pipe ends when the outer process, the init and the program's `exec` have closed
        // their copies.
        drop(status_end);
        let outcome = match contain::await_start(&status, ANSWER_TIMEOUT) {
            contain::Start::Started => return Ok(Outcome::Started(child)),
            contain::Start::Failed(error) => Err(error),
            contain::Start::Uncontained(error) => Ok(Outcome::Uncontained(error)),
            contain::Start::NotAnInit(reason) => Ok(Outcome::NotAnInit(reason)),
        };
        signal_group(&child, libc::SIGKILL);
        let Some(ended) = super::wait_at_most(child, super::KILL_WAIT) else {
            return Err(std::io::Error::other(format!(
                "the worker executable {} did not end within {:?} of SIGKILL",
                worker.display(),
                super::KILL_WAIT
            )));
        };
        if let Ok(Outcome::NotAnInit(reason)) = &outcome
            && let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&ended)
        {
            // Killed before it answered (the OOM killer, or by us when it did not answer in
            // time on a loaded machine): a passing fault, not an executable that cannot run an
            // init. This start fails and is tried again; containment stays on for the others.
            return Err(std::io::Error::other(format!(
                "the worker executable {} ended by signal {signal} before it answered as an \
                 init ({reason})",
                worker.display()
            )));
        }
        outcome
    }

    /// A pipe, both ends closed on `exec` in this process: (read, write).
    fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut ends = [0; 2];
        // SAFETY: `pipe2` writes two descriptors into the local array.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made, and are owned by nothing else.
        Ok(unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) })
    }
}

/// What the child does between `fork` and `exec`, on values copied before the fork.
#[derive(Clone, Copy)]
struct ChildSetup {
    /// The socket: moved to descriptor 3 for the program itself, kept where it is for an
    /// outer process (which moves it in the program's process).
    socket: i32,
    /// The status pipe of an outer process, kept where it is.
    status: Option<i32>,
    parent: u32,
    memory_limit: Option<u64>,
    cpu_seconds: Option<u64>,
}

impl ChildSetup {
    /// Runs in the child after `fork`: async-signal-safe calls only.
    fn run(self) -> std::io::Result<()> {
        let check = |status: i32| {
            if status == -1 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY (every call below): async-signal-safe system calls on integers and on a local
        // `rlimit`; none touches memory shared with the parent.
        unsafe {
            if let Some(status) = self.status {
                // No descriptor moves, so none of `std`'s own can be overwritten: they stay
                // open across `exec` where they are, as the plan says.
                check(libc::fcntl(self.socket, libc::F_SETFD, 0))?;
                check(libc::fcntl(status, libc::F_SETFD, 0))?;
            } else if self.socket == CHILD_FD {
                // Already in place: only clear close-on-exec.
                check(libc::fcntl(CHILD_FD, libc::F_SETFD, 0))?;
            } else {
                // dup2 leaves the new descriptor without close-on-exec.
                check(libc::dup2(self.socket, CHILD_FD))?;
            }
            #[cfg(target_os = "linux")]
            {
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
                // The host may have died before the signal was asked for.
                if libc::getppid() as u32 != self.parent {
                    libc::_exit(1);
                }
            }
            if let Some(bytes) = self.memory_limit {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                check(libc::setrlimit(libc::RLIMIT_AS, &limit))?;
            }
            if let Some(seconds) = self.cpu_seconds {
                // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
                let limit = libc::rlimit {
                    rlim_cur: seconds,
                    rlim_max: seconds + 1,
                };
                check(libc::setrlimit(libc::RLIMIT_CPU, &limit))?;
            }
        }
        Ok(())
    }
}

/// How long a child may take to end after SIGKILL before it is left to [`reap_later`].
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);

/// Waits at most `limit` for `child` to exit and reaps it; otherwise (a process stuck in the
/// kernel, which even SIGKILL ends only once it returns) leaves it to [`reap_later`], so that
/// no caller, the spawner thread least of all, waits on it without end.
pub(crate) fn wait_at_most(mut child: Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while !has_exited(&child) {
        if std::time::Instant::now() >= deadline {
            reap_later(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait().ok()
}

/// Reaps `child` on a thread of its own whenever it exits, so that it does not stay a zombie;
/// the thread ends with it. Only for children that did not end within [`KILL_WAIT`] of SIGKILL.
pub(crate) fn reap_later(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("plugin-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to reap a plugin process stuck in the kernel: {e}");
    }
}

/// Whether `child` has exited, without reaping it: until it is reaped, its pid (its group's id)
/// cannot be reused, so its group can still be signalled safely.
pub(crate) fn has_exited(child: &Child) -> bool {
    let pid = libc::id_t::from(child.id());
    // SAFETY: `siginfo_t` is plain data; all zeroes is a valid value of it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `waitid` writes one `siginfo_t` to a local; WNOWAIT leaves the child unreaped and
    // WNOHANG makes it return at once. The child is ours, not yet reaped (we hold its `Child`).
    let status = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: `waitid` filled `info`; with WNOHANG, a zero pid means it has not exited.
    status == 0 && unsafe { info.si_pid() } != 0
}

/// Sends `signal` to `child`, contained by `containment`. Without an outer process, to its
/// process group. With one, any signal but SIGKILL to the outer process alone, which passes it
/// on to the program (to the group, the init would pass it on too, and the program would get it
/// twice); SIGKILL to the group with a namespace (the init's death ends it), and to a
/// subreaper as `end_signal()`, so that it kills everything below it first (then to the group
/// if it has not ended 2 s later). Never after `child` is reaped.
pub(crate) fn signal(child: &Child, containment: Containment, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    match containment {
        Containment::ProcessGroup => signal_group(child, signal),
        Containment::PidNamespace | Containment::UserNamespace if signal == libc::SIGKILL => {
            signal_group(child, signal);
        }
        #[cfg(target_os = "linux")]
        Containment::Subreaper if signal == libc::SIGKILL => {
            // SAFETY: `kill` touches no memory. The child has not been reaped while we hold
            // its `Child`, so its id cannot have been reused. SIGCONT, in case it was stopped.
            unsafe {
                libc::kill(pid, contain::end_signal());
                libc::kill(pid, libc::SIGCONT);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !has_exited(child) {
                if std::time::Instant::now() >= deadline {
                    signal_group(child, libc::SIGKILL);
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        _ => {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Sends `signal` to the process group of `child` (which leads its own group).
pub(crate) fn signal_group(child: &Child, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: `kill` touches no memory. The group is the child's own (it leads it since
    // `process_group(0)`), and the child has not been reaped while we hold its `Child`, so its
    // id cannot have been reused.
    unsafe {
        libc::kill(-pid, signal);
    }
}

#[cfg(test)]
mod tests {
    //! The program started itself, without an outer process: the unit tests have no worker
    //! executable (the outer process is tested in `tests/integration/contain_children.rs`).
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;

    fn shell(script: &str, worker: Option<&str>) -> std::io::Result<Started> {
        start(Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            pid_namespace: false,
            worker: worker.map(PathBuf::from),
            working_dir: None,
            content: None,
        })
    }

    /// Waits at most 10 s for `child` to exit.
    fn wait(child: &mut Child) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn without_a_worker_executable_the_program_is_the_child() {
        let mut started = shell("exit 7", None).unwrap();
        assert_eq!(started.containment, Containment::ProcessGroup);
        assert_eq!(wait(&mut started.child).code(), Some(7));
        let mut started = shell("kill -SEGV $$", None).unwrap();
        let status = wait(&mut started.child);
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}");
    }

    #[test]
    fn a_worker_executable_that_is_no_init_is_not_used() {
        // `true` exits without answering; `sh` reads its (empty) input and exits likewise.
        for worker in ["/bin/true", "/bin/sh"] {
            let mut started = shell("exit 7", Some(worker)).unwrap();
            assert_eq!(started.containment, Containment::ProcessGroup, "{worker}");
            assert_eq!(wait(&mut started.child).code(), Some(7), "{worker}");
        }
    }

    #[test]
    fn the_current_executable_runs_no_init_before_worker_main() {
        // This test binary never calls `worker_main`: started in init mode, it would run its
        // tests again.
        let current = std::env::current_exe().unwrap();
        let reason = contain::init_executable(Some(&current)).unwrap_err();
        assert!(reason.contains("worker_main"), "{reason}");
        assert!(contain::init_executable(Some("/usr/bin/plugin-host".as_ref())).is_ok());
        assert!(contain::init_executable(None).is_err());
    }

    #[test]
    fn a_start_the_system_refuses_says_what_about_the_file_stops_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("kv.py");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = start(Spec {
            program: program.clone(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            pid_namespace: false,
            worker: None,
            working_dir: None,
            content: None,
        })
        .err()
        .expect("not executable");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::PermissionDenied,
            "{error}"
        );
        let expected = format!(
            "Permission denied (os error 13): the program {path} is not executable by this user \
             (mode 600): make it executable (`chmod +x {path}`)",
            path = program.display()
        );
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn env_in_a_shebang_line_is_read_as_env_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("kv");
        let judge = |line: &str| {
            std::fs::write(&program, format!("{line}\n")).unwrap();
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
            cannot_run(&program, &[], None)
        };
        // Options, their values and assignments before the program are skipped.
        let missing = judge("#!/usr/bin/env -S -i -u HOME --chdir=/ A=1 nosuch-interp -x").unwrap();
        assert!(
            missing.contains("runs `nosuch-interp` through env"),
            "{missing}"
        );
        assert_eq!(judge("#!/usr/bin/env -S -u HOME sh -e"), None);
        assert_eq!(judge("#!/usr/bin/env sh"), None);
        assert_eq!(judge("#! /bin/sh -e"), None);
        // Without `-S`, an option ends the reading: env's own error tells the rest.
        assert_eq!(judge("#!/usr/bin/env -i nosuch-interp"), None);
        // A command is looked up on the PATH the program gets.
        assert_eq!(cannot_run(Path::new("sh"), &[], None), None);
        let path = [("PATH".to_owned(), dir.path().display().to_string())];
        let missing = cannot_run(Path::new("sh"), &path, None).unwrap();
        assert!(
            missing.starts_with("there is no program `sh` in any folder of PATH"),
            "{missing}"
        );
        assert_eq!(cannot_run(Path::new("kv"), &path, None), None);
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let error = start(Spec {
            program: "/nonexistent/program".into(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            pid_namespace: true,
            worker: None,
            working_dir: None,
            content: None,
        })
        .err()
        .expect("no such program");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}

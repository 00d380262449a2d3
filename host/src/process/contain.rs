//! What contains everything a child starts: a PID namespace of its own where the system allows
//! it, a subreaper otherwise, and its process group where neither can be had.
//!
//! # Why a namespace
//!
//! A process group is not a container: a descendant that calls `setsid()` (every daemon does)
//! leaves it, and survives both the SIGKILL of the group and the host's death. A PID namespace
//! is one: when its first process (its *init*, PID 1) ends, the kernel kills every other process
//! in it, wherever it moved, and waits for them before the init's exit completes.
//!
//! # Who makes it: the worker executable, in its init mode
//!
//! Nothing long-lived is a fork of the host. A fork that never `exec`s shares the host's pages
//! copy-on-write and keeps every page the host changes later: a child started while the host
//! held 900 MB would pin them for its whole life (and a fork of a multi-threaded process may
//! only make async-signal-safe calls). So the host starts the *worker executable*
//! ([`ProcessOptions::worker`](super::ProcessOptions::worker): `plugin-host`, or the current
//! executable, which calls [`worker_main`](super::worker_main) first thing) in its *init
//! mode*: [`INIT_VARIABLE`] holds the [`Plan`] (the containment to make, the program's
//! arguments, its resource limits), [`PROGRAM_VARIABLE`] the program, and [`init_main`] removes
//! both before anything else. Freshly `exec`'d, with its own small memory, it makes the
//! containment and starts the program (for an isolated library, the program is the worker
//! executable again, in its worker mode):
//!
//! ```text
//! host ── outer (the child the host holds) ── init (PID 1) ── program (PID 2) ── ...
//! ```
//!
//! - The **outer** process is the child the host holds: its pid is the plugin's pid, it leads
//!   the process group (SIGKILL of the group reaches the outer and the init), it calls
//!   `unshare(CLONE_NEWPID)` (as root, or with `CAP_SYS_ADMIN`) or `unshare(CLONE_NEWUSER |
//!   CLONE_NEWPID)` with a user namespace that maps only its own user and group ids to
//!   themselves (`setgroups` denied first, as the kernel requires of an unprivileged process:
//!   the program keeps its ids and gains no privilege), passes signals on to the init, and ends
//!   as the program ended: with its exit code, or killed by the same signal (so a crash still
//!   reads `signal: 11 (SIGSEGV)`; without a core dump). It cannot be the namespace's init
//!   itself: `unshare` puts only the caller's *future* children in the new namespace, and the
//!   kernel ignores the signals PID 1 sends itself, so it could never die of one.
//! - The **init** is a minimal one (like tini's, or bubblewrap's): it passes the signals it gets
//!   on to the program, reaps orphans, and exits as soon as the program has exited, which ends
//!   the namespace; before that it tells the outer process the program's exit status.
//! - The **program** is not PID 1: the kernel delivers to PID 1 only the signals it has a
//!   handler for (and SIGKILL from outside), so a program counting on SIGTERM's default action
//!   would ignore the host's stop sequence; and PID 1 must reap the namespace's orphans.
//!
//! The host learns how the start went on a pipe ([`Plan::status`]): the outer process writes
//! that it runs, then, if it comes to that, that the containment could not be made (the host
//! tries the next one) or that the program could not be started (its `errno`: the same error
//! as without an outer process); the program's `exec` closes the last copy. So the host's
//! `spawn` returns once the program runs, as `std`'s does. A worker executable that does not
//! answer (it does not call `worker_main`) is not used again. The program's resource limits are
//! set in its own process, after the fork: the outer process and the init have none.
//!
//! There is no mount namespace: the program sees the host's `/proc` (where its own pid is not
//! the one `getpid()` returns: that is 2), and the same files as the host.
//!
//! Every level asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`, which follows one
//! parent): the host's death kills the outer process, whose death kills the init, whose death
//! ends the namespace. The outer process and the init close every file they do not need (the
//! socket, the child's pipes) once the program runs, so that the program's end closes them.
//!
//! Signals: SIGKILL goes to the process group; any other signal goes to the outer process
//! alone, which passes it on (to the group, the init would pass it on again: the program would
//! get it twice). A signal the kernel raises in the outer process or the init themselves (a
//! fault) takes its default action.
//!
//! # Without a namespace: a subreaper
//!
//! (`pid_namespace = false`, or a system that refuses both kinds of namespace.) The outer
//! process makes itself a *subreaper* (`PR_SET_CHILD_SUBREAPER`, as tini and systemd do) and
//! starts the program itself: every orphan among the program's descendants (a daemon's double
//! fork, `setsid` included) is reparented to it rather than to the system's init, so they all
//! stay below it. It kills every process left below it (its children, with SIGKILL, reaped,
//! again until none is left: each one killed hands its own children to it) when the program
//! exits, and when it gets [`end_signal`]: the host sends that signal instead of SIGKILL (then
//! SIGKILL to the group if it has not ended 2 s later), and it is its parent-death signal, so
//! that the host's death ends it the same way; then it ends as killed by SIGKILL. Other signals
//! are passed on as above. What is guaranteed: every process still below the outer process when
//! the plugin ends, ends. What is not: what is below an outer process that someone other than
//! the host kills with SIGKILL, and processes started elsewhere on the program's request (a
//! service manager, `at`); the program also sees, and may signal, every process of the host's
//! user.
//!
//! # Without the worker executable
//!
//! When no worker executable is usable (the current executable has not called
//! [`worker_main`](super::worker_main), or it does not answer as an init), the program is
//! started directly, leading its own process group, with one clear warning: what stays in the
//! group is signalled with it and killed once it has exited, but a descendant that leaves the
//! group (`setsid`) may outlive its plugin and the host. So it is on systems other than Linux.
//!
//! Whether a namespace can be made is found once, by a trial (logged once). A child whose
//! namespace fails all the same (a limit on namespaces reached since) is started under a
//! subreaper, with a warning.

#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the descendants of a child are contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Containment {
    /// A PID namespace of its own, made by a host that may make one (root).
    PidNamespace,
    /// A PID namespace in a user namespace of its own, which maps only the host's ids.
    UserNamespace,
    /// Below an outer process that is a subreaper, and kills what is left below it at the end.
    Subreaper,
    /// Its process group only: a descendant that leaves the group escapes.
    ProcessGroup,
}

impl Containment {
    /// Whether the child the host holds is an outer process (run by the worker executable),
    /// which passes signals on to the program.
    pub(crate) fn has_outer(self) -> bool {
        self != Containment::ProcessGroup
    }

    /// What contains the child, for the log.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Containment::PidNamespace => "a PID namespace of its own",
            Containment::UserNamespace => {
                "a PID namespace of its own, in a user namespace that maps only the host's user \
                 and group ids"
            }
            Containment::Subreaper => "a subreaper that kills what is left below it at the end",
            Containment::ProcessGroup => "its process group",
        }
    }

    /// What to try when this containment could not be made.
    pub(crate) fn fallback(self) -> Containment {
        match self {
            Containment::PidNamespace | Containment::UserNamespace => Containment::Subreaper,
            Containment::Subreaper | Containment::ProcessGroup => Containment::ProcessGroup,
        }
    }
}

/// The best containment this system allows, found by a trial the first time it is asked (and
/// logged then).
pub(crate) fn available() -> Containment {
    static FOUND: OnceLock<Containment> = OnceLock::new();
    *FOUND.get_or_init(|| {
        #[cfg(target_os = "linux")]
        let found = linux::probe();
        #[cfg(not(target_os = "linux"))]
        let found = Err("no PID namespaces on this system".to_owned());
        match found {
            Ok(containment) => {
                tracing::info!(
                    "each plugin process runs in {}: everything it starts ends with it",
                    containment.describe()
                );
                containment
            }
            Err(refusals) => {
                let containment = without_namespace();
                tracing::warn!(
                    "plugin processes cannot get a PID namespace ({refusals}); each runs under \
                     {} instead (see the README). For a namespace, enable unprivileged user \
                     namespaces (sysctl kernel.unprivileged_userns_clone=1, or \
                     kernel.apparmor_restrict_unprivileged_userns=0 under AppArmor) or run the \
                     host as root; or set pid_namespace = false to accept this fallback without \
                     this warning",
                    containment.describe()
                );
                containment
            }
        }
    })
}

/// The containment of a child that has no namespace (`pid_namespace = false`).
pub(crate) fn without_namespace() -> Containment {
    if cfg!(target_os = "linux") {
        Containment::Subreaper
    } else {
        Containment::ProcessGroup
    }
}

/// The variable that holds the [`Plan`] of an init, as JSON.
pub(crate) const INIT_VARIABLE: &str = "PLUGLET_INIT";
/// The variable that holds the program an init starts.
pub(crate) const PROGRAM_VARIABLE: &str = "PLUGLET_INIT_PROGRAM";

/// What the outer process makes and starts (besides the program).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// The containment to make: not [`Containment::ProcessGroup`].
    pub(crate) containment: Containment,
    /// The program's arguments.
    pub(crate) args: Vec<String>,
    /// The program's `RLIMIT_AS`, in bytes.
    pub(crate) memory_limit: Option<u64>,
    /// The program's `RLIMIT_CPU`, in seconds.
    pub(crate) cpu_seconds: Option<u64>,
    /// The descriptor of the socket, which becomes the program's descriptor 3.
    pub(crate) socket: i32,
    /// The descriptor of the pipe that tells the host how the start went (see
    /// [`await_start`]).
    pub(crate) status: i32,
}

/// Set once [`init_main`] has returned in this process: its executable runs an init when asked.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// The worker executable that can run an init, or why there is none: `worker` as configured
/// (the current executable by default), unless it is the current executable and this process
/// never called [`worker_main`](super::worker_main), which would then not run an init but the
/// application again.
pub(crate) fn init_executable(worker: Option<&Path>) -> Result<PathBuf, String> {
    let Some(worker) = worker else {
        return Err("the path of the current executable is unknown".to_owned());
    };
    let refused = REFUSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, reason)) = refused.iter().find(|(path, _)| path == worker) {
        return Err(reason.clone());
    }
    drop(refused);
    let current = std::env::current_exe().ok();
    let same = |path: &Path| current.as_deref() == Some(path);
    if !ENTERED.load(Ordering::SeqCst)
        && (same(worker) || std::fs::canonicalize(worker).is_ok_and(|path| same(&path)))
    {
        return Err(format!(
            "the worker executable is the current one ({}), which has not called \
             plugin_host::process::worker_main()",
            worker.display()
        ));
    }
    Ok(worker.to_owned())
}

/// The worker executables that did not answer as an init, and why.
static REFUSED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// Notes that `worker` did not answer as an init (`reason`): it is not asked again, and
/// children are started without an outer process (logged once).
pub(crate) fn refuse(worker: &Path, reason: &str) {
    let reason = format!(
        "the worker executable {} did not answer as an init: {reason}",
        worker.display()
    );
    warn_without_outer(&reason);
    REFUSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((worker.to_owned(), reason));
}

/// Logs, once per reason, that children are started without an outer process.
pub(crate) fn warn_without_outer(reason: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.iter().any(|r| r == reason) {
        return;
    }
    said.push(reason.to_owned());
    tracing::warn!(
        "plugin processes are started without an outer process, contained by their process \
         group only ({reason}): a descendant that leaves the group (setsid) can outlive its \
         plugin and the host. Set ProcessOptions::worker to plugin-host, or call \
         plugin_host::process::worker_main() first thing in main (plugin-host serve does both)"
    );
}

/// Runs the init this process was started as, if a host started it as one (and then never
/// returns); otherwise notes that this executable can run one, and returns.
pub(crate) fn init_main() {
    let Some(plan) = std::env::var_os(INIT_VARIABLE) else {
        ENTERED.store(true, Ordering::SeqCst);
        return;
    };
    let program = std::env::var_os(PROGRAM_VARIABLE).unwrap_or_default();
    for variable in [INIT_VARIABLE, PROGRAM_VARIABLE] {
        // SAFETY: `worker_main` runs first thing in `main` (its documented contract), before
        // the process has other threads that could read the environment meanwhile.
        unsafe { std::env::remove_var(variable) };
    }
    let plan: Plan = match serde_json::from_str(&plan.to_string_lossy()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!(
                "plugin-init: unreadable plan ({e}): this process is started by a plugin host, \
                 not by hand"
            );
            std::process::exit(2);
        }
    };
    #[cfg(target_os = "linux")]
    linux::run(&plan, program);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (plan, program);
        eprintln!("plugin-init: containment is made on Linux only");
        std::process::exit(2);
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{Start, await_start, end_signal};

#[cfg(target_os = "linux")]
mod linux {
    use super::{Containment, Plan};
    use libc::c_int;
    use std::ffi::{CString, OsString};
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStringExt;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::time::{Duration, Instant};

    /// The signal that tells the outer process of a subreaper to kill everything below it and
    /// end as killed by SIGKILL: what the host sends instead of SIGKILL, and the outer
    /// process's parent-death signal. Not one it passes on.
    pub(crate) fn end_signal() -> c_int {
        libc::SIGRTMAX()
    }

    /// The records an init writes to the host on the status pipe, and the init to the outer
    /// process on theirs: two native-endian `i32`s, written at once.
    ///
    /// The outer process runs: it writes this first (the value is 0).
    const READY: i32 = 1;
    /// The program could not be started (the `errno` follows): its `exec`, or a `fork`.
    const FAILED: i32 = 2;
    /// The containment could not be made (the `errno` follows).
    const UNCONTAINED: i32 = 3;
    /// From the init to the outer process: the program ended (its wait status follows).
    const ENDED: i32 = 4;

    /// How a start went, as the status pipe tells.
    pub(crate) enum Start {
        /// The program runs (its `exec` closed the last copy of the pipe).
        Started,
        /// The program could not be started: the same error as a failed `exec`.
        Failed(io::Error),
        /// The containment could not be made.
        Uncontained(io::Error),
        /// The worker executable did not answer as an init: why.
        NotAnInit(String),
    }

    /// Reads the status pipe of a started init (the host's end; its own copy of the other end
    /// closed) until the program runs, at most `limit`.
    pub(crate) fn await_start(status: &OwnedFd, limit: Duration) -> Start {
        let deadline = Instant::now() + limit;
        let mut record = [0u8; 8];
        let mut read = 0;
        let mut ready = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: status.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = c_int::try_from(left.as_millis()).unwrap_or(c_int::MAX);
            // SAFETY: `poll` reads and writes one local `pollfd`.
            let polled = unsafe { libc::poll(&mut poll, 1, millis) };
            if polled == -1 && errno() == libc::EINTR {
                continue;
            }
            if polled == 0 {
                return match ready {
                    false => Start::NotAnInit(format!("no answer within {limit:?}")),
                    true => Start::Failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the program did not start within {limit:?}"),
                    )),
                };
            }
            // SAFETY: `read` writes at most the rest of the local record.
            let n = unsafe {
                libc::read(
                    status.as_raw_fd(),
                    record[read..].as_mut_ptr().cast(),
                    record.len() - read,
                )
            };
            match n {
                -1 if errno() == libc::EINTR => continue,
                -1 => return Start::NotAnInit(io::Error::last_os_error().to_string()),
                // Every copy closed: the program's `exec` closed the last one.
                0 if ready => return Start::Started,
                0 => return Start::NotAnInit("it ended without answering".to_owned()),
                n => read += n as usize,
            }
            if read < record.len() {
                continue;
            }
            read = 0;
            let (kind, value) = decode(&record);
            match (ready, kind) {
                (false, READY) => ready = true,
                (true, FAILED) => return Start::Failed(io::Error::from_raw_os_error(value)),
                (true, UNCONTAINED) => {
                    return Start::Uncontained(io::Error::from_raw_os_error(value));
                }
                _ => return Start::NotAnInit(format!("it answered record {kind}")),
            }
        }
    }

    /// The signals the outer process and the init pass on: every one that can be caught and
    /// ends or disturbs a process, except SIGCHLD (their own), SIGPIPE (ignored: they write to
    /// a pipe whose reader may be gone) and job control.
    const FORWARDED: [c_int; 23] = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGUSR1,
        libc::SIGSEGV,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSYS,
    ];

    /// Where the signal handler of the outer process (the init) or of the init (the program)
    /// passes signals on; 0 once that process has been reaped.
    static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

    /// Set by the handler of [`end_signal`].
    static ENDING: AtomicBool = AtomicBool::new(false);

    /// The descendant that runs the program, prepared before any fork: everything it does
    /// between `fork` and `exec` is async-signal-safe.
    struct Exec {
        program: CString,
        /// `argv`: pointers into `_strings`, then a null pointer.
        argv: Vec<*const libc::c_char>,
        _strings: Vec<CString>,
        limits: [(libc::__rlimit_resource_t, Option<(u64, u64)>); 2],
        socket: c_int,
        status: c_int,
        /// The signal mask the program starts with (the outer process's at its start).
        mask: libc::sigset_t,
    }

    impl Exec {
        /// Runs in the program's process, just forked: never returns.
        fn run(&self, parent: libc::pid_t) -> ! {
            // SAFETY (every call below): async-signal-safe system calls on integers, on
            // `self`'s values (prepared before the fork) and on locals.
            unsafe {
                for signal in
                    FORWARDED
                        .into_iter()
                        .chain([libc::SIGCHLD, libc::SIGPIPE, end_signal()])
                {
                    libc::signal(signal, libc::SIG_DFL);
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1
                    || libc::getppid() != parent
                {
                    libc::_exit(1);
                }
                let moved = if self.socket == wire_fd() {
                    libc::fcntl(wire_fd(), libc::F_SETFD, 0)
                } else {
                    let moved = libc::dup2(self.socket, wire_fd());
                    libc::close(self.socket);
                    moved
                };
                let limited = self.limits.iter().all(|&(resource, limit)| match limit {
                    Some((soft, hard)) => {
                        let limit = libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        };
                        libc::setrlimit(resource, &limit) == 0
                    }
                    None => true,
                });
                if moved != -1 && limited {
                    // What the host left without close-on-exec (a C plugin's files, say) does
                    // not reach the program: it gets its standard streams and its socket. A
                    // kernel before 5.11 refuses the flag, and the descriptors stay as before.
                    libc::syscall(
                        libc::SYS_close_range,
                        wire_fd() + 1,
                        c_int::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    );
                    libc::sigprocmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
                    libc::execvp(self.program.as_ptr(), self.argv.as_ptr());
                }
                // What failed last set `errno`.
                send(self.status, FAILED, errno());
                libc::_exit(127);
            }
        }
    }

    /// The program's descriptor 3.
    fn wire_fd() -> c_int {
        super::super::wire::CHILD_FD
    }

    /// Runs the outer process of `plan`: never returns.
    pub(super) fn run(plan: &Plan, program: OsString) -> ! {
        let mut status = plan.status;
        // SAFETY: `fcntl` on a descriptor number; a descriptor that is not open fails with
        // EBADF, which is checked. The program must not keep the status pipe past its `exec`.
        if unsafe { libc::fcntl(status, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            eprintln!("plugin-init: no status pipe: this process is started by a plugin host");
            std::process::exit(2);
        }
        if status == wire_fd() {
            // The program's descriptor 3 is the socket's place.
            // SAFETY: `fcntl` and `close` on descriptors of this process; the old number is
            // not used again.
            status = unsafe { libc::fcntl(status, libc::F_DUPFD_CLOEXEC, wire_fd() + 1) };
            // SAFETY: as above.
            unsafe { libc::close(wire_fd()) };
            if status == -1 {
                std::process::exit(2);
            }
        }
        send(status, READY, 0);
        let exec = match prepare(plan, program, status) {
            Ok(exec) => exec,
            Err(error) => {
                send(status, FAILED, error.raw_os_error().unwrap_or(libc::EINVAL));
                std::process::exit(1);
            }
        };
        // SAFETY: `getppid` has no preconditions.
        let host = unsafe { libc::getppid() };
        let subreaper = plan.containment == Containment::Subreaper;
        let made = match plan.containment {
            Containment::Subreaper => {
                // SAFETY: `prctl` with integer arguments.
                check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
            }
            Containment::PidNamespace => unshare(None),
            Containment::UserNamespace => unshare(Some(ids())),
            Containment::ProcessGroup => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        if let Err(error) = made {
            send(
                status,
                UNCONTAINED,
                error.raw_os_error().unwrap_or(libc::EINVAL),
            );
            std::process::exit(1);
        }
        // After `unshare`, which clears the parent-death signal when it changes the
        // credentials. The host may have died before: then its parent is another process.
        let death = if subreaper {
            end_signal()
        } else {
            libc::SIGKILL
        };
        // SAFETY: `prctl` and `getppid` with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death, 0, 0, 0) } == -1
            || unsafe { libc::getppid() } != host
        {
            std::process::exit(1);
        }
        // From here on, the signals it handles arrive only while it waits (see `wait_for`).
        handle_signals(subreaper);
        if subreaper {
            name(c"plugin-reaper");
            run_subreaper(&exec)
        } else {
            name(c"plugin-outer");
            run_outer(&exec)
        }
    }

    /// The program, its arguments and limits, ready for the `exec` in a forked process.
    fn prepare(plan: &Plan, program: OsString, status: c_int) -> io::Result<Exec> {
        let invalid = |_| io::Error::from_raw_os_error(libc::EINVAL);
        let program = CString::new(program.into_vec()).map_err(invalid)?;
        let mut strings = vec![program.clone()];
        for arg in &plan.args {
            strings.push(CString::new(arg.as_bytes()).map_err(invalid)?);
        }
        let mut argv: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: `sigset_t` is plain data; `sigprocmask` fills it with the current mask.
        let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: writes the local set.
        check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) })?;
        Ok(Exec {
            program,
            argv,
            _strings: strings,
            limits: [
                (
                    libc::RLIMIT_AS,
                    plan.memory_limit.map(|bytes| (bytes, bytes)),
                ),
                // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
                (
                    libc::RLIMIT_CPU,
                    plan.cpu_seconds.map(|seconds| (seconds, seconds + 1)),
                ),
            ],
            socket: plan.socket,
            status,
            mask,
        })
    }

    /// The outer process of a namespace: forks the init, passes signals on to it until it
    /// ends, and ends as the program did.
    fn run_outer(exec: &Exec) -> ! {
        let mut ends = [0; 2];
        // SAFETY: `pipe2` writes two descriptors into the local array.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
            send(exec.status, FAILED, errno());
            std::process::exit(1);
        }
        let [from_init, to_outer] = ends;
        // SAFETY: `fork` in a process that takes no lock the child needs: the init makes only
        // async-signal-safe calls on values prepared before.
        let init = unsafe { libc::fork() };
        if init == -1 {
            send(exec.status, FAILED, errno());
            std::process::exit(1);
        }
        if init == 0 {
            // SAFETY: the read end is the outer process's.
            unsafe { libc::close(from_init) };
            run_init(exec, to_outer);
        }
        // SAFETY: the write end is the init's.
        unsafe { libc::close(to_outer) };
        FORWARD_TO.store(init, Ordering::SeqCst);
        // The host's pipes, the socket and the status pipe: the program has its copies.
        close_all_but(Some(from_init));
        let init_status = wait_for(init).unwrap_or(libc::SIGKILL);
        let status = match receive(from_init) {
            Some((ENDED, status)) => status,
            // The init was killed (SIGKILL of the group): end the same way.
            _ => init_status,
        };
        end_as(status)
    }

    /// The init (PID 1 of the namespace): forks the program, reaps until it has ended, tells
    /// the outer process how it ended, and exits, which ends the namespace. Async-signal-safe.
    fn run_init(exec: &Exec, to_outer: c_int) -> ! {
        // SAFETY (every call below): async-signal-safe system calls on integers and locals.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c"plugin-init".as_ptr(), 0, 0, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                libc::_exit(1);
            }
            // The outer process may have died before the signal was asked for: then the pipe
            // has no reader left (its parent is outside the namespace: `getppid` says 0).
            let mut outer = libc::pollfd {
                fd: to_outer,
                events: libc::POLLOUT,
                revents: 0,
            };
            if libc::poll(&mut outer, 1, 0) == -1 || outer.revents & libc::POLLERR != 0 {
                libc::_exit(1);
            }
            let program = libc::fork();
            if program == -1 {
                send(exec.status, FAILED, errno());
                libc::_exit(1);
            }
            if program == 0 {
                libc::close(to_outer);
                // Its parent, the init, is PID 1.
                exec.run(1);
            }
            FORWARD_TO.store(program, Ordering::SeqCst);
            close_all_but(Some(to_outer));
            // `None` cannot happen: only a subreaper handles `end_signal()`.
            let status = wait_for(program).unwrap_or(libc::SIGKILL);
            send(to_outer, ENDED, status);
            libc::_exit(0)
        }
    }

    /// The outer process as a subreaper: forks the program, reaps everything reparented to it
    /// until the program has ended or [`end_signal`] arrives, kills what is left below it, and ends
    /// as the program did (or as killed by SIGKILL, after [`end_signal`]).
    fn run_subreaper(exec: &Exec) -> ! {
        // SAFETY: `getpid` has no preconditions.
        let me = unsafe { libc::getpid() };
        // SAFETY: as in `run_outer`: the program's process runs `Exec::run`, async-signal-safe.
        let program = unsafe { libc::fork() };
        if program == -1 {
            send(exec.status, FAILED, errno());
            std::process::exit(1);
        }
        if program == 0 {
            exec.run(me);
        }
        FORWARD_TO.store(program, Ordering::SeqCst);
        close_all_but(None);
        let status = wait_for(program).unwrap_or(libc::SIGKILL);
        kill_descendants();
        end_as(status)
    }

    /// Waits until child `child` has ended, reaping every other child that ends meanwhile;
    /// its wait status, or `None` once [`end_signal`] has arrived. The signals this process handles
    /// are blocked but here, where `sigsuspend` lets them in one at a time.
    fn wait_for(child: libc::pid_t) -> Option<c_int> {
        // SAFETY: `sigset_t` is plain data; the set is emptied below.
        let mut open: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `sigemptyset` writes the local set.
        unsafe { libc::sigemptyset(&mut open) };
        loop {
            if ENDING.load(Ordering::SeqCst) {
                return None;
            }
            loop {
                let mut status = 0;
                // SAFETY: `waitpid` writes one integer to a local.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid == child {
                    // No signal is passed to its pid once it is reaped.
                    FORWARD_TO.store(0, Ordering::SeqCst);
                    return Some(status);
                }
                if pid > 0 {
                    // An orphan.
                    continue;
                }
                if pid == -1 && errno() == libc::ECHILD {
                    // Cannot be: `child` is not reaped yet.
                    // SAFETY: ends this process.
                    unsafe { libc::_exit(1) };
                }
                break;
            }
            // SAFETY: `sigsuspend` reads the local set; it returns after a handler ran.
            unsafe { libc::sigsuspend(&open) };
        }
    }

    /// Kills every process below this one (a subreaper), and reaps them: its children, with
    /// SIGKILL, again until none is left, since each one killed hands its own children to it.
    fn kill_descendants() {
        let mut misses = 0;
        loop {
            // Reap what has ended; none left at all means nothing is left below.
            loop {
                let mut status = 0;
                // SAFETY: `waitpid` writes one integer to a local.
                match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
                    pid if pid > 0 => continue,
                    0 => break,
                    _ if errno() == libc::EINTR => continue,
                    _ => return,
                }
            }
            let children = children(misses > 0);
            for &pid in &children {
                // SAFETY: `kill` touches no memory; `pid` is a child of this process, not
                // reaped yet (only this process reaps it), so its id is not reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if children.is_empty() {
                // A child not listed (being reparented): look again shortly, through every
                // process.
                misses += 1;
                // SAFETY: `usleep` has no preconditions.
                unsafe { libc::usleep(1000) };
                continue;
            }
            misses = 0;
            let mut status = 0;
            // SAFETY: as above; waits for one of the children killed.
            unsafe { libc::waitpid(-1, &mut status, 0) };
        }
    }

    /// The children of this process: from `/proc/self/task/*/children`, or, without it (a
    /// kernel built without `CONFIG_PROC_CHILDREN`) or when `thorough`, every process whose
    /// parent it is.
    fn children(thorough: bool) -> Vec<libc::pid_t> {
        let mut found = Vec::new();
        if !thorough {
            let mut listed = false;
            for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
                let Ok(task) = task else { continue };
                if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                    listed = true;
                    found.extend(
                        text.split_whitespace()
                            .filter_map(|pid| pid.parse::<libc::pid_t>().ok()),
                    );
                }
            }
            if listed {
                return found;
            }
        }
        // SAFETY: `getpid` has no preconditions.
        let me = unsafe { libc::getpid() };
        for entry in std::fs::read_dir("/proc").into_iter().flatten() {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The parent is the second field after the command name, in parentheses.
            let parent = stat
                .rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<libc::pid_t>().ok());
            if parent == Some(me) {
                found.push(pid);
            }
        }
        found
    }

    /// Makes the PID namespace (in a user namespace that maps `ids` to themselves, if given):
    /// this process's next child is the first process of the new PID namespace.
    fn unshare(ids: Option<(u32, u32)>) -> io::Result<()> {
        let flags = match ids {
            Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
            None => libc::CLONE_NEWPID,
        };
        // SAFETY: `unshare` takes an integer and touches no memory of ours.
        check(unsafe { libc::unshare(flags) })?;
        if let Some((uid, gid)) = ids {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", format!("{uid} {uid} 1\n").as_bytes())?;
            write_file(c"/proc/self/gid_map", format!("{gid} {gid} 1\n").as_bytes())?;
        }
        Ok(())
    }

    /// This process's effective user and group ids.
    fn ids() -> (u32, u32) {
        // SAFETY: `geteuid` and `getegid` have no preconditions and cannot fail.
        unsafe { (libc::geteuid(), libc::getegid()) }
    }

    /// Names this process in `ps -o comm` and the like.
    fn name(name: &std::ffi::CStr) {
        // SAFETY: `prctl` reads a NUL-terminated name.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }

    /// Ends this process as wait status `status` says a process ended: with its exit code, or
    /// killed by its signal (without a core dump).
    fn end_as(status: c_int) -> ! {
        // SAFETY: async-signal-safe system calls on integers and locals.
        unsafe {
            if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                libc::signal(signal, libc::SIG_DFL);
                let set = signal_set(&[signal]);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), signal);
                libc::_exit(128 + signal);
            }
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            libc::_exit(1)
        }
    }

    /// Passes `signal` on to [`FORWARD_TO`]; a fault the kernel raised in this very process
    /// (SIGSEGV, SIGBUS, SIGILL, SIGFPE) takes its default action instead. Other signals the
    /// kernel sends (the SIGHUP of an orphaned process group, say) are passed on like any.
    extern "C" fn forward(signal: c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: `__errno_location` is this thread's errno, saved and restored around calls
        // that may change it; `info` is the kernel's, valid during an SA_SIGINFO handler;
        // `kill`, `getpid` and `signal` are async-signal-safe.
        unsafe {
            let saved = *libc::__errno_location();
            let fault = matches!(
                signal,
                libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
            );
            if fault && !info.is_null() && (*info).si_code > 0 {
                // A fault returns to the faulting instruction and faults again, unhandled.
                libc::signal(signal, libc::SIG_DFL);
                libc::kill(libc::getpid(), signal);
            } else {
                let target = FORWARD_TO.load(Ordering::SeqCst);
                if target > 0 {
                    libc::kill(target, signal);
                }
            }
            *libc::__errno_location() = saved;
        }
    }

    /// Notes that [`end_signal`] arrived.
    extern "C" fn end(_: c_int) {
        ENDING.store(true, Ordering::SeqCst);
    }

    /// Does nothing: lets `sigsuspend` return when a child ends.
    extern "C" fn child_ended(_: c_int) {}

    /// Blocks the signals this process handles (they arrive only in [`wait_for`]), installs
    /// [`forward`] for every signal of [`FORWARDED`], a handler for SIGCHLD and, for a
    /// subreaper, [`end`] for [`end_signal`]; ignores SIGPIPE.
    fn handle_signals(subreaper: bool) {
        let mut blocked = signal_set(&FORWARDED);
        // SAFETY: `sigaddset` and `sigprocmask` on local sets.
        unsafe {
            libc::sigaddset(&mut blocked, libc::SIGCHLD);
            libc::sigaddset(&mut blocked, end_signal());
            libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        }
        let install = |signal: c_int, handler: libc::sighandler_t, flags: c_int| {
            // SAFETY: `sigaction` is plain data; all zeroes is a valid value, then filled.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = handler;
            action.sa_flags = flags | libc::SA_RESTART;
            // SAFETY: `sigaction` reads the local `action`; the handlers are
            // async-signal-safe.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        };
        for signal in FORWARDED {
            install(
                signal,
                forward as *const () as libc::sighandler_t,
                libc::SA_SIGINFO,
            );
        }
        install(
            libc::SIGCHLD,
            child_ended as *const () as libc::sighandler_t,
            libc::SA_NOCLDSTOP,
        );
        if subreaper {
            install(end_signal(), end as *const () as libc::sighandler_t, 0);
        }
        // SAFETY: `signal` with a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }

    fn signal_set(signals: &[c_int]) -> libc::sigset_t {
        // SAFETY: `sigset_t` is plain data, initialised by `sigemptyset`.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            set
        }
    }

    /// Reaps child `pid`; its wait status.
    fn reap(pid: c_int) -> c_int {
        let mut status = 0;
        // SAFETY: `waitpid` writes one integer to a local.
        while unsafe { libc::waitpid(pid, &mut status, 0) } == -1 && errno() == libc::EINTR {}
        status
    }

    /// Closes every file descriptor but `keep`. Async-signal-safe.
    fn close_all_but(keep: Option<c_int>) {
        let close_range = |low: libc::c_uint, high: libc::c_uint| {
            if low > high {
                return;
            }
            // SAFETY: `close_range` closes descriptors of this process; nothing of ours is
            // used through them afterwards.
            let closed = unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) } == 0;
            if !closed {
                // Before Linux 5.9: one by one, up to the limit of open files.
                // SAFETY: `rlimit` is plain data, filled by `getrlimit`.
                let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
                // SAFETY: writes the local `limit`.
                let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
                let end = if known {
                    limit.rlim_cur.min(1 << 20)
                } else {
                    1 << 16
                };
                let high = u64::from(high).min(end.saturating_sub(1));
                for fd in u64::from(low)..=high {
                    // SAFETY: as above.
                    unsafe { libc::close(fd as c_int) };
                }
            }
        };
        match keep {
            Some(keep) => {
                let keep = keep as libc::c_uint;
                if keep > 0 {
                    close_range(0, keep - 1);
                }
                close_range(keep + 1, libc::c_uint::MAX);
            }
            None => close_range(0, libc::c_uint::MAX),
        }
    }

    /// Writes one record. Async-signal-safe.
    fn send(fd: c_int, kind: i32, value: i32) {
        let mut record = [0u8; 8];
        record[..4].copy_from_slice(&kind.to_ne_bytes());
        record[4..].copy_from_slice(&value.to_ne_bytes());
        // SAFETY: `write` reads the local record. Eight bytes are written at once (a pipe write
        // of at most PIPE_BUF bytes is atomic), or not at all if the reader is gone.
        while unsafe { libc::write(fd, record.as_ptr().cast(), record.len()) } == -1
            && errno() == libc::EINTR
        {}
    }

    fn decode(record: &[u8; 8]) -> (i32, i32) {
        let kind = i32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
        let value = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
        (kind, value)
    }

    /// Reads one record; `None` at the end of the pipe.
    fn receive(fd: c_int) -> Option<(i32, i32)> {
        let mut record = [0u8; 8];
        let mut read = 0;
        while read < record.len() {
            // SAFETY: `read` writes at most the rest of the local record.
            let n =
                unsafe { libc::read(fd, record[read..].as_mut_ptr().cast(), record.len() - read) };
            match n {
                0 => return None,
                -1 if errno() == libc::EINTR => {}
                -1 => return None,
                n => read += n as usize,
            }
        }
        Some(decode(&record))
    }

    /// Writes `bytes` to the file at `path` in one `write`, as the files of `/proc/self` that
    /// set up a user namespace require.
    fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: `open` reads a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        check(fd)?;
        // SAFETY: `write` reads `bytes`.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let result = if written == bytes.len() as isize {
            Ok(())
        } else if written == -1 {
            Err(io::Error::last_os_error())
        } else {
            Err(io::Error::from_raw_os_error(libc::EIO))
        };
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd) };
        result
    }

    fn check(status: c_int) -> io::Result<c_int> {
        if status == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(status)
        }
    }

    fn errno() -> c_int {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Finds the best containment of this system by trying each kind of namespace in a
    /// throwaway child; without one, why each was refused.
    pub(super) fn probe() -> Result<Containment, String> {
        let mut refusals = Vec::new();
        for containment in [Containment::PidNamespace, Containment::UserNamespace] {
            match trial(containment) {
                Ok(()) => return Ok(containment),
                Err(error) => refusals.push(format!("{}: {error}", containment.describe())),
            }
        }
        Err(refusals.join("; "))
    }

    /// Makes the namespaces of `containment` in a throwaway child (a fork of the host that
    /// exits at once), and a first process in them.
    fn trial(containment: Containment) -> io::Result<()> {
        let ids = match containment {
            Containment::UserNamespace => Some(ids()),
            _ => None,
        };
        // Prepared before the fork: the child allocates nothing.
        let maps = ids.map(|(uid, gid)| (format!("{uid} {uid} 1\n"), format!("{gid} {gid} 1\n")));
        // SAFETY: the forked child makes only async-signal-safe calls (unshare, open, write,
        // close, fork, waitpid, _exit) on values prepared before the fork, then exits.
        let pid = check(unsafe { libc::fork() })?;
        if pid == 0 {
            let flags = match maps {
                Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
                None => libc::CLONE_NEWPID,
            };
            // SAFETY: as above.
            let mut made = check(unsafe { libc::unshare(flags) }).map(drop);
            if let (Ok(()), Some((uid_map, gid_map))) = (&made, &maps) {
                made = write_file(c"/proc/self/setgroups", b"deny")
                    .and_then(|()| write_file(c"/proc/self/uid_map", uid_map.as_bytes()))
                    .and_then(|()| write_file(c"/proc/self/gid_map", gid_map.as_bytes()));
            }
            let code = match made {
                Err(error) => error.raw_os_error().unwrap_or(libc::EINVAL),
                // SAFETY: as above.
                Ok(()) => match unsafe { libc::fork() } {
                    // SAFETY: the first process of the namespace ends at once.
                    0 => unsafe { libc::_exit(0) },
                    -1 => errno(),
                    first => match reap(first) {
                        0 => 0,
                        _ => libc::EINVAL,
                    },
                },
            };
            // SAFETY: ends the throwaway child.
            unsafe { libc::_exit(code) };
        }
        match reap(pid) {
            0 => Ok(()),
            status if libc::WIFEXITED(status) => {
                Err(io::Error::from_raw_os_error(libc::WEXITSTATUS(status)))
            }
            status => Err(io::Error::other(format!(
                "the trial process ended with wait status {status}"
            ))),
        }
    }
}

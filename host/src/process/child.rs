//! Starting a child process that speaks the protocol: a socket pair whose child end becomes its
//! file descriptor 3, its own process group, a parent-death signal, optional resource limits,
//! and its standard output and error piped, for the link to copy into the host's log. On Linux
//! the child the host holds is an outer process run by the worker executable, which contains
//! the program and everything it starts (see `contain.rs`); without a usable worker executable,
//! the program itself.

use super::contain;
pub(crate) use super::contain::Containment;
use super::wire::{CHILD_FD, FD_VARIABLE};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
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
}

/// A started child: the process and the host's end of its socket.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) socket: UnixStream,
    /// How what it starts is contained: see [`signal`].
    pub(crate) containment: Containment,
}

/// Starts `spec`, with its standard output and error piped (taken and copied by the caller).
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
                    let _ = reply.send(spawn(&spec));
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

/// The command that starts the program of `spec` itself, with `socket` as its descriptor 3,
/// leading its own process group.
fn command(spec: &Spec, socket: &OwnedFd) -> Command {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(FD_VARIABLE, CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that stopping it reaches what it started.
        .process_group(0);
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
    use super::{CHILD_FD, ChildSetup, Containment, FD_VARIABLE, Spec, contain, signal_group};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
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
        let mut command = Command::new(worker);
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(FD_VARIABLE, CHILD_FD.to_string())
            .env(contain::INIT_VARIABLE, plan)
            .env(contain::PROGRAM_VARIABLE, &spec.program)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: SIGKILL of the group reaches the outer process and the
            // init, and what stays in the group without a namespace.
            .process_group(0);
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
    fn a_program_that_cannot_start_is_an_error() {
        let error = start(Spec {
            program: "/nonexistent/program".into(),
            args: Vec::new(),
            env: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            pid_namespace: true,
            worker: None,
        })
        .err()
        .expect("no such program");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}

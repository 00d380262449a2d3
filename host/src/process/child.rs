//! Starting a child process that speaks the protocol: a socket pair whose child end becomes its
//! file descriptor 3, its own process group, a PID namespace where the system allows it (see
//! `contain.rs`), a parent-death signal, optional resource limits, and its standard output and
//! error piped, for the link to copy into the host's log.

use super::contain;
pub(crate) use super::contain::Containment;
use super::wire::{CHILD_FD, FD_VARIABLE};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The program.
    pub(crate) program: std::path::PathBuf,
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
    let wanted = match spec.pid_namespace {
        true => contain::available(),
        false => Containment::ProcessGroup,
    };
    let (child, containment) = match command(spec, &child_fd, wanted).spawn() {
        Ok(child) => (child, wanted),
        // The trial made a namespace, this one failed: a limit on namespaces reached since, or
        // a program that cannot start at all (which fails the same way once more).
        Err(error) if wanted.namespace() => {
            let child = command(spec, &child_fd, Containment::ProcessGroup).spawn()?;
            tracing::warn!(
                program = %spec.program.display(),
                "the plugin process could not get a PID namespace ({error}): it runs in its \
                 process group only, which a descendant can leave and outlive it"
            );
            (child, Containment::ProcessGroup)
        }
        Err(error) => return Err(error),
    };
    drop(child_fd);
    // Its stdout and stderr stay in `child`: the link copies them (see `output.rs`).
    Ok(Started {
        child,
        socket: host_end,
        containment,
    })
}

/// The command that starts `spec` with `socket` as its descriptor 3, contained by
/// `containment`.
fn command(spec: &Spec, socket: &OwnedFd, containment: Containment) -> Command {
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
        parent: std::process::id(),
        memory_limit: spec.memory_limit,
        cpu_seconds: spec.cpu_limit.map(|d| d.as_secs().max(1)),
        #[cfg(target_os = "linux")]
        namespace: contain::Namespace::new(containment),
    };
    #[cfg(not(target_os = "linux"))]
    let _ = containment;
    // SAFETY: `ChildSetup::run` only makes async-signal-safe system calls (dup2, fcntl,
    // unshare, open, write, fork, prctl, getppid, setrlimit, waitid, _exit...) on plain values
    // prepared before the fork, as `pre_exec` requires; it allocates nothing and takes no lock.
    // The processes it forks for a namespace exit without returning (see `contain.rs`).
    unsafe { command.pre_exec(move || setup.run()) };
    command
}

/// What the child does between `fork` and `exec`, on values copied before the fork.
#[derive(Clone, Copy)]
struct ChildSetup {
    socket: i32,
    parent: u32,
    memory_limit: Option<u64>,
    cpu_seconds: Option<u64>,
    /// The namespaces to make, if any.
    #[cfg(target_os = "linux")]
    namespace: Option<contain::Namespace>,
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
            if self.socket == CHILD_FD {
                // Already in place: only clear close-on-exec.
                check(libc::fcntl(CHILD_FD, libc::F_SETFD, 0))?;
            } else {
                // dup2 leaves the new descriptor without close-on-exec.
                check(libc::dup2(self.socket, CHILD_FD))?;
            }
            #[cfg(target_os = "linux")]
            {
                if let Some(namespace) = &self.namespace {
                    namespace.unshare()?;
                }
                // After `unshare`, which may change this process's credentials.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
                // The host may have died before the signal was asked for.
                if libc::getppid() as u32 != self.parent {
                    libc::_exit(1);
                }
                if let Some(namespace) = self.namespace {
                    // Returns in the program's process only: the limits below are its own.
                    // `start`'s contract holds: this is `pre_exec`, after `unshare`.
                    namespace.start()?;
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

/// Sends `signal` to `child`, contained by `containment`. SIGKILL goes to its process group,
/// and so does every signal without a namespace; with one, any other signal goes to the child
/// alone, whose init passes it on to the program (to the group, the init would pass it on too,
/// and the program would get it twice). Never after `child` is reaped.
pub(crate) fn signal(child: &Child, containment: Containment, signal: i32) {
    if signal == libc::SIGKILL || !containment.namespace() {
        signal_group(child, signal);
        return;
    }
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: `kill` touches no memory. The child has not been reaped while we hold its
    // `Child`, so its id cannot have been reused.
    unsafe {
        libc::kill(pid, signal);
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
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;

    fn shell(script: &str, pid_namespace: bool) -> std::io::Result<Started> {
        start(Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            memory_limit: None,
            cpu_limit: None,
            pid_namespace,
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
    fn the_child_ends_as_the_program_ended() {
        for namespace in [true, false] {
            let mut started = shell("exit 7", namespace).unwrap();
            assert_eq!(wait(&mut started.child).code(), Some(7));
            let mut started = shell("kill -SEGV $$", namespace).unwrap();
            let status = wait(&mut started.child);
            assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}");
            assert!(!status.core_dumped(), "{status}");
        }
    }

    #[test]
    fn a_program_that_cannot_start_is_the_same_error_with_a_namespace() {
        for pid_namespace in [true, false] {
            let error = start(Spec {
                program: "/nonexistent/program".into(),
                args: Vec::new(),
                env: Vec::new(),
                memory_limit: None,
                cpu_limit: None,
                pid_namespace,
            })
            .err()
            .expect("no such program");
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
        }
    }

    #[test]
    fn sigterm_reaches_the_program_once_and_ends_it_as_sigterm() {
        // The program counts the SIGTERMs it gets on its stderr, and exits on the first
        // SIGUSR1: one SIGTERM passed on, not one per level.
        let script = "n=0; trap 'n=$((n+1)); echo term $n >&2' TERM; trap 'exit $n' USR1; \
                      echo ready >&2; while :; do sleep 0.05; done";
        let mut started = shell(script, true).unwrap();
        let mut stderr = std::io::BufReader::new(started.child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        signal(&started.child, started.containment, libc::SIGTERM);
        line.clear();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert_eq!(line, "term 1\n");
        // Time for a second copy to arrive, if one were sent.
        std::thread::sleep(Duration::from_millis(300));
        signal(&started.child, started.containment, libc::SIGUSR1);
        assert_eq!(wait(&mut started.child).code(), Some(1));
        // Without a handler, SIGTERM ends it, and the child reads as killed by SIGTERM.
        let mut started = shell("echo ready >&2; sleep 30", true).unwrap();
        let mut stderr = std::io::BufReader::new(started.child.stderr.take().unwrap());
        line.clear();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        signal(&started.child, started.containment, libc::SIGTERM);
        let status = wait(&mut started.child);
        // `sh` passes SIGTERM to nothing: it dies of it while `sleep` runs.
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    }
}

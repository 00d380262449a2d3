//! Starting a child process that speaks the protocol: a socket pair whose child end becomes its
//! file descriptor 3, its own process group, a parent-death signal, optional resource limits,
//! and its standard output and error copied line by line into the host's log.

use super::wire::{CHILD_FD, FD_VARIABLE};
use std::io::{BufRead, BufReader, Read};
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
}

/// A started child: the process and the host's end of its socket.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) socket: UnixStream,
}

/// Starts `spec` with `log_name` tagging its output lines in the log.
///
/// Children are started from one long-lived thread: Linux sends the parent-death signal when
/// the *thread* that forked the child ends, not the process, so a child started from a pool
/// thread that retires would be killed with it.
pub(crate) fn start(spec: Spec, log_name: String) -> std::io::Result<Started> {
    type Request = (Spec, String, mpsc::SyncSender<std::io::Result<Started>>);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("plugin-spawner".into())
            .spawn(move || {
                for (spec, log_name, reply) in receive {
                    let _ = reply.send(spawn(&spec, &log_name));
                }
            })
            .expect("start the plugin spawner thread");
        std::sync::Mutex::new(send)
    });
    let (reply, started) = mpsc::sync_channel(1);
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((spec, log_name, reply))
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?;
    started
        .recv()
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?
}

fn spawn(spec: &Spec, log_name: &str) -> std::io::Result<Started> {
    let (host_end, child_end) = UnixStream::pair()?;
    let child_fd = OwnedFd::from(child_end);
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
        socket: child_fd.as_raw_fd(),
        parent: std::process::id(),
        memory_limit: spec.memory_limit,
        cpu_seconds: spec.cpu_limit.map(|d| d.as_secs().max(1)),
    };
    // SAFETY: `ChildSetup::run` only makes async-signal-safe system calls (dup2, fcntl, prctl,
    // getppid, setrlimit, _exit) on plain integers copied before the fork, as `pre_exec`
    // requires; it allocates nothing and takes no lock.
    unsafe { command.pre_exec(move || setup.run()) };
    let mut child = command.spawn()?;
    drop(child_fd);
    for (stream, what) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            "stdout",
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            "stderr",
        ),
    ] {
        if let Some(stream) = stream {
            let name = log_name.to_owned();
            std::thread::Builder::new()
                .name(format!("plugin-{what}"))
                .spawn(move || copy_lines(stream, &name, what))?;
        }
    }
    Ok(Started {
        child,
        socket: host_end,
    })
}

/// The longest line of a child's output copied into the log; the rest of a longer one is cut.
const MAX_LINE: usize = 4096;

/// Copies the child's `stream` into the log, line by line, until it closes.
fn copy_lines(stream: Box<dyn Read + Send>, plugin: &str, what: &str) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most MAX_LINE + 1 bytes of a line are kept; the rest is skipped.
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_LINE {
            line.truncate(MAX_LINE);
            // Skip the rest of the long line.
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).is_err() {
                return;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(target: "plugin", plugin, stream = what, "{text}");
    }
}

/// What the child does between `fork` and `exec`, on values copied before the fork.
#[derive(Clone, Copy)]
struct ChildSetup {
    socket: i32,
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
            if self.socket == CHILD_FD {
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

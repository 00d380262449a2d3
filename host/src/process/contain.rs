//! What contains everything a child starts: a PID namespace of its own where the system allows
//! it, its process group otherwise.
//!
//! # Why a namespace
//!
//! A process group is not a container: a descendant that calls `setsid()` (every daemon does)
//! leaves it, and survives both the SIGKILL of the group and the host's death. A PID namespace
//! is one: when its first process (its *init*, PID 1) ends, the kernel kills every other process
//! in it, wherever it moved, and waits for them before the init's exit completes.
//!
//! # How
//!
//! `std::process::Command` has no clone flags, so the namespace is made in `pre_exec`, in the
//! forked child: `unshare(CLONE_NEWPID)` when the host may (root, or `CAP_SYS_ADMIN`), otherwise
//! `unshare(CLONE_NEWUSER | CLONE_NEWPID)` with a user namespace that maps only the host's own
//! user and group ids to themselves (`setgroups` denied first, as the kernel requires of an
//! unprivileged process): the program keeps its ids, and gains no privilege. `unshare` puts
//! only the caller's *future* children in the new PID namespace, so the child forks twice:
//!
//! ```text
//! host ── outer (the child the host holds) ── init (PID 1) ── program (PID 2) ── ...
//! ```
//!
//! - The **program** is not PID 1: the kernel delivers to PID 1 only the signals it has a
//!   handler for (and SIGKILL from outside), so a program counting on SIGTERM's default action
//!   would ignore the host's stop sequence; and PID 1 must reap the namespace's orphans.
//! - The **init** is a minimal one (like tini's, or bubblewrap's): it passes the signals it gets
//!   on to the program, reaps orphans, and exits as soon as the program has exited, which ends
//!   the namespace; before that it tells the outer process the program's exit status.
//! - The **outer** process is the child the host holds: its pid is the plugin's pid, it leads
//!   the process group (SIGKILL of the group reaches all three), it passes signals on to the
//!   init, and it ends as the program ended: with its exit code, or killed by the same signal
//!   (so a crash still reads `signal: 11 (SIGSEGV)`; it makes itself non-dumpable first, since
//!   its core would be an image of the host). It cannot be the namespace's init itself: the
//!   kernel ignores the signals PID 1 sends itself, so it could never die of one.
//!
//! Every level asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`, which follows one
//! parent): the host's death kills the outer process, whose death kills the init, whose death
//! ends the namespace. The init and the outer process never `exec`: they run the small loops
//! below in the forked copy of the host, with async-signal-safe system calls only, on values
//! prepared before the fork, and close every file they inherited (the host's sockets, the
//! child's pipes) once the program runs. Their memory is the host's at the fork, shared
//! copy-on-write; they write almost none of it, but keep the pages the host later changes.
//!
//! Signals: SIGKILL goes to the process group; any other signal goes to the outer process
//! alone, which passes it on (to the group, the init would pass it on again: the program would
//! get it twice). A signal the kernel raises in the outer process or the init themselves (a
//! fault) takes its default action.
//!
//! Whether a namespace can be made is found once, by a trial (logged once). A child whose
//! namespace fails all the same (a limit on namespaces reached since) is started without one,
//! with a warning.
//!
//! # Without a namespace
//!
//! (`pid_namespace = false`, systems that refuse both kinds, other systems than Linux.) The
//! child leads its own process group, as before: the host's signals reach the group, and the
//! group is killed once the child has exited. A descendant that leaves the group (`setsid`,
//! `setpgid`) is neither signalled nor killed, and may outlive its plugin and the host.

use std::sync::OnceLock;

/// How the descendants of a child are contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum Containment {
    /// A PID namespace of its own, made by a host that may make one (root).
    PidNamespace,
    /// A PID namespace in a user namespace of its own, which maps only the host's ids.
    UserNamespace,
    /// Its process group only: a descendant that leaves the group escapes.
    ProcessGroup,
}

impl Containment {
    /// Whether the child gets a PID namespace.
    pub(crate) fn namespace(self) -> bool {
        self != Containment::ProcessGroup
    }

    /// What contains the child, for the log.
    fn describe(self) -> &'static str {
        match self {
            Containment::PidNamespace => "a PID namespace of its own",
            Containment::UserNamespace => {
                "a PID namespace of its own, in a user namespace that maps only the host's user \
                 and group ids"
            }
            Containment::ProcessGroup => "its process group",
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
                tracing::warn!(
                    "plugin processes are contained by their process group only ({refusals}): \
                     a descendant that leaves the group (setsid) can outlive its plugin and \
                     the host"
                );
                Containment::ProcessGroup
            }
        }
    })
}

#[cfg(target_os = "linux")]
pub(crate) use linux::Namespace;

#[cfg(target_os = "linux")]
mod linux {
    use super::Containment;
    use libc::c_int;
    use std::io;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The namespaces to make in a child, with everything they need prepared before the fork.
    #[derive(Clone, Copy)]
    pub(crate) struct Namespace {
        /// The id maps of the user namespace, when there is one.
        user: Option<IdMaps>,
    }

    #[derive(Clone, Copy)]
    struct IdMaps {
        uid: MapLine,
        gid: MapLine,
    }

    /// A line of `uid_map` or `gid_map` that maps one id to itself: `ID ID 1`.
    #[derive(Clone, Copy)]
    struct MapLine {
        bytes: [u8; 32],
        len: usize,
    }

    impl MapLine {
        /// Before the fork: it allocates.
        fn identity(id: u32) -> Self {
            let text = format!("{id} {id} 1\n");
            let mut bytes = [0; 32];
            // At most 24 bytes: two ten-digit ids.
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Self {
                bytes,
                len: text.len(),
            }
        }

        fn as_bytes(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
    }

    impl Namespace {
        /// The namespaces of `containment`, if it has any. Before the fork.
        pub(crate) fn new(containment: Containment) -> Option<Self> {
            match containment {
                Containment::PidNamespace => Some(Self { user: None }),
                Containment::UserNamespace => {
                    // SAFETY: `geteuid` and `getegid` have no preconditions and cannot fail.
                    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
                    Some(Self {
                        user: Some(IdMaps {
                            uid: MapLine::identity(uid),
                            gid: MapLine::identity(gid),
                        }),
                    })
                }
                Containment::ProcessGroup => None,
            }
        }

        /// Makes the namespaces: this process's next child is the first process of the new
        /// PID namespace. Async-signal-safe.
        pub(crate) fn unshare(&self) -> io::Result<()> {
            let flags = match self.user {
                Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
                None => libc::CLONE_NEWPID,
            };
            // SAFETY: `unshare` takes an integer and touches no memory of ours.
            check(unsafe { libc::unshare(flags) })?;
            if let Some(maps) = &self.user {
                write_file(c"/proc/self/setgroups", b"deny")?;
                write_file(c"/proc/self/uid_map", maps.uid.as_bytes())?;
                write_file(c"/proc/self/gid_map", maps.gid.as_bytes())?;
            }
            Ok(())
        }

        /// Forks the namespace's init, which forks the program's process. Returns `Ok` in the
        /// program's process only, to go on to `exec`; returns an error in this process if the
        /// program's process could not be made. Otherwise this process becomes the outer
        /// process: it passes signals on until the init ends, then ends as the program did.
        ///
        /// # Safety
        ///
        /// Only in a child forked from the host, between `fork` and `exec` (in `pre_exec`),
        /// after [`unshare`](Self::unshare): the processes it makes, and this one, never
        /// return to the code that forked them but exit from here, and may only make
        /// async-signal-safe calls, as this function does.
        pub(crate) unsafe fn start(self) -> io::Result<()> {
            let mut ends = [0; 2];
            // SAFETY: `pipe2` writes two descriptors into the local array.
            check(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
            let [from_init, to_outer] = ends;
            // The signals to pass on wait until each process has its handlers.
            let forwarded = signal_set(&FORWARDED);
            // SAFETY: `sigset_t` is plain data; `sigprocmask` fills it.
            let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: `sigprocmask` reads and writes the two local sets.
            check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &forwarded, &mut before) })?;
            // SAFETY: `fork` in a single-threaded process (a forked child); both sides go on
            // with async-signal-safe calls only.
            let init = unsafe { libc::fork() };
            match init {
                -1 => {
                    let error = io::Error::last_os_error();
                    // SAFETY: descriptors and a signal set of ours.
                    unsafe {
                        libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
                        libc::close(from_init);
                        libc::close(to_outer);
                    }
                    Err(error)
                }
                0 => {
                    // SAFETY: the read end belongs to the outer process; `prctl` reads a
                    // NUL-terminated name (its name in `ps -o comm` and the like).
                    unsafe {
                        libc::close(from_init);
                        libc::prctl(libc::PR_SET_NAME, c"plugin-init".as_ptr(), 0, 0, 0);
                    }
                    // SAFETY: the init process, forked from a `pre_exec` child, as `start`
                    // requires.
                    unsafe { run_init(to_outer, &before) }
                }
                init => {
                    // SAFETY: the write end belongs to the init; `prctl` as above.
                    unsafe {
                        libc::close(to_outer);
                        libc::prctl(libc::PR_SET_NAME, c"plugin-outer".as_ptr(), 0, 0, 0);
                    }
                    // SAFETY: the outer process, still in `pre_exec`.
                    unsafe { run_outer(init, from_init, &before) }
                }
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
    /// passes signals on; 0 once that process has ended, before it is reaped.
    static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

    /// The records the init writes to the outer process: two native-endian `i32`s.
    const STARTED: i32 = 1;
    /// The program's process could not be made: the `errno` follows.
    const FAILED: i32 = 2;
    /// The program ended: its wait status follows.
    const ENDED: i32 = 3;

    /// The init: starts the program's process, then reaps until the program has ended. Returns
    /// in the program's process only.
    ///
    /// # Safety
    ///
    /// As [`Namespace::start`]: in the init just forked.
    unsafe fn run_init(to_outer: c_int, before: &libc::sigset_t) -> io::Result<()> {
        // SAFETY (every call below): async-signal-safe system calls on integers, locals and
        // `before`.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                libc::_exit(1);
            }
            // The outer process may have died before the signal was asked for: then the pipe
            // has no reader left.
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
                send(to_outer, FAILED, errno());
                libc::_exit(1);
            }
            if program == 0 {
                libc::close(to_outer);
                check(libc::sigprocmask(
                    libc::SIG_SETMASK,
                    before,
                    std::ptr::null_mut(),
                ))?;
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
                // If the init is gone already, the kernel is ending the namespace.
                if libc::getppid() != 1 {
                    libc::_exit(1);
                }
                return Ok(());
            }
            FORWARD_TO.store(program, Ordering::SeqCst);
            handle_signals();
            send(to_outer, STARTED, program);
            close_all_but(to_outer);
            libc::sigprocmask(libc::SIG_SETMASK, before, std::ptr::null_mut());
            loop {
                // Which child ended, without reaping it yet.
                let mut info: libc::siginfo_t = std::mem::zeroed();
                if libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) == -1 {
                    if errno() == libc::EINTR {
                        continue;
                    }
                    // No child left: the program cannot be gone unseen.
                    libc::_exit(1);
                }
                let pid = info.si_pid();
                if pid == program {
                    // No signal is passed to its pid once it is reaped.
                    FORWARD_TO.store(0, Ordering::SeqCst);
                    let status = reap(program);
                    send(to_outer, ENDED, status);
                    // The namespace ends with this exit.
                    libc::_exit(0);
                }
                // An orphan of the namespace.
                reap(pid);
            }
        }
    }

    /// The outer process: waits for the init to say the program's process runs, then passes
    /// signals on until the init ends, and ends as the program did. Returns only an error.
    ///
    /// # Safety
    ///
    /// As [`Namespace::start`]: in the process that forked the init.
    unsafe fn run_outer(init: c_int, from_init: c_int, before: &libc::sigset_t) -> io::Result<()> {
        // SAFETY (every call below): async-signal-safe system calls on integers, locals and
        // `before`.
        unsafe {
            match receive(from_init) {
                Some((STARTED, _)) => {}
                failed => {
                    let error = match failed {
                        Some((FAILED, errno)) => errno,
                        _ => libc::ECHILD,
                    };
                    reap(init);
                    libc::close(from_init);
                    libc::sigprocmask(libc::SIG_SETMASK, before, std::ptr::null_mut());
                    // Reported to the host as a failed `exec` would be.
                    return Err(io::Error::from_raw_os_error(error));
                }
            }
            FORWARD_TO.store(init, Ordering::SeqCst);
            handle_signals();
            // The host's files, the child's pipes and the socket (the program has its own
            // copies), and the pipe `std` reports a failed `exec` on (closed: `spawn` returns
            // once the program's `exec` closes the last copy).
            close_all_but(from_init);
            libc::sigprocmask(libc::SIG_SETMASK, before, std::ptr::null_mut());
            loop {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let id = init as libc::id_t;
                if libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) == 0 {
                    break;
                }
                if errno() != libc::EINTR {
                    libc::_exit(1);
                }
            }
            FORWARD_TO.store(0, Ordering::SeqCst);
            let init_status = reap(init);
            let status = match receive(from_init) {
                Some((ENDED, status)) => status,
                // The init was killed (SIGKILL of the group): end the same way.
                _ => init_status,
            };
            end_as(status)
        }
    }

    /// Ends this process as wait status `status` says a process ended: with its exit code, or
    /// killed by its signal (without a core dump, which would be the host's image).
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

    /// Passes `signal` on to [`FORWARD_TO`]; a signal the kernel raised in this very process
    /// (a fault, a limit) takes its default action instead.
    extern "C" fn forward(signal: c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: `__errno_location` is this thread's errno, saved and restored around calls
        // that may change it; `info` is the kernel's, valid during an SA_SIGINFO handler;
        // `kill`, `getpid` and `signal` are async-signal-safe.
        unsafe {
            let saved = *libc::__errno_location();
            if !info.is_null() && (*info).si_code > 0 {
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

    /// Installs [`forward`] for every signal of [`FORWARDED`], and ignores SIGPIPE.
    fn handle_signals() {
        // SAFETY: `sigaction` is plain data; all zeroes is a valid value, then filled.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = forward as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `sigaction` reads the local `action`; the handler is async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            for signal in FORWARDED {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
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

    /// Closes every file descriptor but `keep`.
    fn close_all_but(keep: c_int) {
        let keep = keep as libc::c_uint;
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
        if keep > 0 {
            close_range(0, keep - 1);
        }
        close_range(keep + 1, libc::c_uint::MAX);
    }

    /// Writes one record to the outer process.
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

    /// Reads one record from the init; `None` at the end of the pipe.
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
        let kind = i32::from_ne_bytes([record[0], record[1], record[2], record[3]]);
        let value = i32::from_ne_bytes([record[4], record[5], record[6], record[7]]);
        Some((kind, value))
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

    /// Makes the namespaces of `containment` in a throwaway child, and a first process in them.
    fn trial(containment: Containment) -> io::Result<()> {
        let Some(namespace) = Namespace::new(containment) else {
            return Ok(());
        };
        // SAFETY: the forked child makes only async-signal-safe calls (unshare, open, write,
        // close, fork, waitpid, _exit) on values prepared before the fork, then exits.
        let pid = check(unsafe { libc::fork() })?;
        if pid == 0 {
            let code = match namespace.unshare() {
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

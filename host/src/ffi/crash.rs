//! Crash reports: when plugin code kills the process with a fatal signal, one line on standard
//! error names the plugin instance, its file and the call that was running. It is shaped as a
//! line of the host's log at ERROR, tagged with the plugin's and the instance's names.
//!
//! Every call into a plugin runs inside [`during`], which points a thread-local at a
//! description of the call formatted beforehand. The signal handler writes that description
//! with `write(2)` (it allocates and locks nothing; all it formats is the time, on its stack),
//! chains to the handler installed before it, and makes sure the process then dies by the very
//! signal it received.
//!
//! A worker process serves one plugin: [`describe_worker`] names it for the whole process, so
//! that a fatal signal on a thread outside any call, or sent with `kill`, is a crash line too.
//! Its crash lines are bare ([`bare_crash_lines`]): its host copies them into its own log, and
//! adds the time, the level and the names itself.

use super::Descriptor;
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

thread_local! {
    /// The description of the plugin call running on this thread, if any. A `const`
    /// thread-local of a type without destructor: reading it is a plain load, which a signal
    /// handler may do.
    static CURRENT: Cell<*const CallDescription> = const { Cell::new(std::ptr::null()) };
}

/// The code a call goes to, as a crash line names it: a plugin instance and its file, or a
/// plugin library being loaded.
pub(super) struct Callee {
    /// What the line says of it (` in plugin instance "x" (FILE)`).
    text: String,
    /// The tags of the line (` plugin="p" instance="x"`), as the log's lines write them.
    tags: String,
}

impl Callee {
    /// The instance called `name` of the plugin `descriptor` describes.
    pub(super) fn instance(name: &str, descriptor: &Descriptor) -> Self {
        let origin = match &descriptor.file {
            Some(file) => printable(&file.display().to_string()),
            None => format!("built-in plugin {}", printable(&descriptor.name)),
        };
        Self {
            text: format!(" in plugin instance {name:?} ({origin})"),
            tags: format!(" plugin={:?} instance={name:?}", descriptor.name),
        }
    }

    /// The plugin library at `file`, before it has a descriptor (and names).
    pub(super) fn library(file: &Path) -> Self {
        Self {
            text: format!(
                " in plugin library {}",
                printable(&file.display().to_string())
            ),
            tags: String::new(),
        }
    }

    /// The description of `call` (`start`, or a route such as `GET /items/{id}`) to this code.
    pub(super) fn call(&self, call: &str) -> CallDescription {
        let text = format!("{} during {}", self.text, printable(call));
        let tags_at = text.len();
        CallDescription {
            line: (text + &self.tags).into_bytes().into_boxed_slice(),
            tags_at,
        }
    }
}

/// What a crash line begins with, before the signal's name. A host that copies a worker's
/// standard error into its log knows a crash line by it, and logs it at ERROR.
pub(crate) const CRASH_PREFIX: &[u8] = b"plugin-host: fatal ";

/// The end of a crash line, after the signal's name: the code called and the call, then the
/// tags.
pub(super) struct CallDescription {
    line: Box<[u8]>,
    /// Where the tags begin in `line`.
    tags_at: usize,
}

/// Whether crash lines are bare: set in a worker, whose host logs them (see
/// [`bare_crash_lines`]).
static BARE: AtomicBool = AtomicBool::new(false);

/// Makes this process's crash lines bare, `plugin-host: fatal SIGSEGV in ...` with neither
/// time, level nor tags: for a worker, whose host copies its standard error into its own log,
/// where the line gets the time, the level (ERROR, by its [`CRASH_PREFIX`]) and the names.
pub(crate) fn bare_crash_lines() {
    BARE.store(true, Ordering::Relaxed);
}

/// In a worker process, the plugin it serves (` the worker of plugin instance "x" (file)`), for
/// the crash line of a signal that no call on its thread explains. Set once, never freed.
static WORKER: AtomicPtr<CallDescription> = AtomicPtr::new(std::ptr::null_mut());

/// Names the plugin this process serves as a worker: from now on, a fatal signal outside any
/// plugin call, or sent by another process, writes a crash line naming it (see
/// [`install_crash_report`]). Call it once the instance is named, before its first call.
pub(crate) fn describe_worker(instance: &str, file: &Path) {
    let text = format!(
        " the worker of plugin instance {:?} ({})",
        printable(instance),
        printable(&file.display().to_string())
    );
    let tags_at = text.len();
    let description = Box::into_raw(Box::new(CallDescription {
        line: text.into_bytes().into_boxed_slice(),
        tags_at,
    }));
    // Leaked on purpose: a signal handler may read it at any moment, until the process ends.
    // Only the first description counts.
    let null = std::ptr::null_mut();
    if WORKER
        .compare_exchange(null, description, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // SAFETY: `description` comes from `Box::into_raw` just above and was never shared.
        drop(unsafe { Box::from_raw(description) });
    }
}

/// Runs `f`, a call into plugin code described by `call`: a fatal signal that the call raises
/// on this thread writes a crash line naming it. The description of an enclosing call is
/// restored afterwards, so that calls may nest.
pub(super) fn during<R>(call: &CallDescription, f: impl FnOnce() -> R) -> R {
    /// Restores the enclosing call's description, even if `f` unwinds.
    struct Restore(*const CallDescription);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    // `call` stays borrowed, so in place and alive, until this function returns, after
    // `_restore` has unset it.
    let _restore = Restore(CURRENT.with(|current| current.replace(call)));
    f()
}

/// `text` with its control characters (a newline in a file name) escaped, so that a crash
/// report stays on one line.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Installs the crash report, once per process (later calls do nothing).
///
/// From then on, when SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGXCPU (past `cpu_limit`),
/// SIGXFSZ, SIGSYS or SIGTRAP (the signals whose default action dumps core) is raised on a
/// thread while it runs plugin code (`plugin_factory`, a library's initialisers, `create`,
/// `start`, `routes`, a route's handler, `stop` or `destroy`), one line goes to standard error
/// first, shaped as a line of the log at ERROR (as `tracing-subscriber`'s `fmt` writes it,
/// without colours), such as:
///
/// ```text
/// 2026-11-25T06:09:32.123456Z ERROR plugin: plugin-host: fatal SIGSEGV in plugin instance "shop" (/srv/libshop.so) during GET /cart/{id} plugin="shop" instance="shop"
/// ```
///
/// The line is written straight to standard error, not through the log, whose writer may never
/// run again: with a single `write(2)` of text formatted before the call and the time, which
/// the handler reads with `clock_gettime` and writes in digits on its stack (it allocates,
/// locks and calls no formatter). The signal is then passed to the handler that was installed
/// before (Rust's standard library reports stack overflows from there), and the process dies by
/// that same signal, so that the exit status and core dump show the true cause.
///
/// A fatal signal sent by another process (`kill -SEGV`) ends the process by that signal too,
/// although no fault brings it back once a handler returns (the standard library's handler
/// would let a first SIGSEGV or SIGBUS pass, and the next real crash go unreported). In a worker
/// process, which serves one plugin (`describe_worker`), every fatal signal writes a line:
/// one outside any call, or sent by another process, names the worker's plugin instead of a
/// call. A worker's lines are bare, for its host to log (at ERROR, with the names):
///
/// ```text
/// plugin-host: fatal SIGSEGV sent by process 4242 to the worker of plugin instance "shop" (/srv/libshop.so)
/// ```
///
/// Elsewhere, a fatal signal outside plugin code, or sent by another process, writes nothing.
///
/// Call it at the top of `main`, before any plugin is loaded: a runtime that a plugin library
/// brings along (Go's) installs its own handlers when loaded and forwards the signals it does
/// not own to the handler it found, which must be this one. On platforms without signals it
/// does nothing.
pub fn install_crash_report() {
    #[cfg(unix)]
    signals::install();
}

#[cfg(unix)]
mod signals {
    //! The signal handler: only async-signal-safe calls (`write`, `sigaction`, `raise`,
    //! `getpid`, `clock_gettime`), reads of memory prepared before, and the time formatted on
    //! the stack.

    use super::{BARE, CRASH_PREFIX as PREFIX, CURRENT, Ordering, WORKER};
    use libc::{c_int, c_void, siginfo_t};
    use std::io::ErrorKind;
    use std::sync::{Once, OnceLock};

    /// The signals reported, with the names a crash line gives them: those whose default
    /// action ends the process with a core dump, which plugin code can bring on itself.
    const SIGNALS: [(c_int, &[u8]); 9] = [
        (libc::SIGSEGV, b"SIGSEGV"),
        (libc::SIGBUS, b"SIGBUS"),
        (libc::SIGILL, b"SIGILL"),
        (libc::SIGFPE, b"SIGFPE"),
        (libc::SIGABRT, b"SIGABRT"),
        // Past the CPU time limit (`cpu_limit`, RLIMIT_CPU) and the file size limit.
        (libc::SIGXCPU, b"SIGXCPU"),
        (libc::SIGXFSZ, b"SIGXFSZ"),
        // A system call a seccomp filter forbids; a breakpoint instruction left in the code.
        (libc::SIGSYS, b"SIGSYS"),
        (libc::SIGTRAP, b"SIGTRAP"),
    ];

    /// Whether `signal`, raised by the kernel for an instruction (not sent), comes back when the
    /// handler returns, because the instruction runs again. A breakpoint (SIGTRAP) and a
    /// forbidden system call (SIGSYS) are stepped over; SIGXCPU and SIGXFSZ come from no
    /// instruction.
    fn is_fault(signal: c_int) -> bool {
        matches!(
            signal,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
        )
    }

    /// The actions the signals had before ours, in the order of `SIGNALS`: where ours chains
    /// to. Set before ours is installed.
    static PREVIOUS: OnceLock<[libc::sigaction; SIGNALS.len()]> = OnceLock::new();

    /// An action of all zeroes: `SIG_DFL`, with an empty mask and no flags.
    fn default_action() -> libc::sigaction {
        // SAFETY: `sigaction` is a C struct of integers, a bit set and (on some platforms) an
        // optional function pointer; all zeroes is a valid value of each.
        unsafe { std::mem::zeroed() }
    }

    pub(super) fn install() {
        static INSTALLED: Once = Once::new();
        INSTALLED.call_once(|| {
            PREVIOUS.get_or_init(|| {
                SIGNALS.map(|(signal, _)| {
                    let mut previous = default_action();
                    // SAFETY: a NULL new action only reads the current one into `previous`, a
                    // valid, writable `sigaction`.
                    unsafe { libc::sigaction(signal, std::ptr::null(), &mut previous) };
                    previous
                })
            });
            let mut action = default_action();
            action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
            // The alternate stack (Rust gives every thread one) lets a stack overflow be
            // reported; the signal stays blocked while the handler runs (no SA_NODEFER).
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            for (signal, _) in SIGNALS {
                // SAFETY: `action` is a valid action whose handler has the SA_SIGINFO
                // signature and does only async-signal-safe work; the previous action was
                // saved above, for it to chain to.
                unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
            }
        });
    }

    /// The handler of the fatal signals.
    extern "C" fn on_fatal_signal(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
        let Some(index) = SIGNALS.iter().position(|&(s, _)| s == signal) else {
            return;
        };
        // SAFETY: the kernel, or a handler forwarding the signal (Go's), passes the signal's
        // information; `si_pid` is read only for codes that set it (sent, not a fault).
        let (code, sender) = unsafe {
            match info.as_ref() {
                Some(info) if info.si_code <= 0 => (info.si_code, info.si_pid()),
                Some(info) => (info.si_code, 0),
                None => (0, 0),
            }
        };
        // A signal sent (by `kill`, `raise`, `abort`, `sigqueue`) has a code of 0 or less; one
        // the kernel raises has a positive one. A fault among those comes back when the handler
        // returns: the instruction runs again. The others (the limits' SIGXCPU and SIGXFSZ,
        // seccomp's SIGSYS, a breakpoint's SIGTRAP) do not, and are raised again to kill.
        let sent = code <= 0;
        let fault = !sent && is_fault(signal);
        // SAFETY: `getpid` is async-signal-safe and cannot fail.
        let from_outside = sent && sender != unsafe { libc::getpid() };
        let previous = PREVIOUS
            .get()
            .map_or_else(default_action, |previous| previous[index]);
        // Sent from outside and ignored before ours: it stays ignored.
        if from_outside && previous.sa_sigaction == libc::SIG_IGN {
            return;
        }
        let name = SIGNALS[index].1;
        let reported = if from_outside {
            report_sent(name, sender)
        } else {
            report(name)
        };
        if reported {
            step_aside(signal);
        }
        match previous.sa_sigaction {
            // Ignored as before: a signal this process sent itself outside plugin code is
            // dropped (a fault cannot be ignored).
            libc::SIG_IGN if !reported && !fault => {}
            libc::SIG_DFL | libc::SIG_IGN => die(signal, fault),
            handler => {
                if previous.sa_flags & libc::SA_RESETHAND != 0 {
                    reset(signal);
                }
                // SAFETY: the previous handler was installed for this signal with these
                // flags, so it expects to be called this way, here, with these arguments.
                unsafe { chain(handler, previous.sa_flags, signal, info, context) };
                // It returned: a crash in plugin code is fatal whatever it decided, and so is a
                // fault's signal, or SIGABRT, that was sent (the standard library's handler
                // returns, expecting a fault to come back, which a sent signal never does). The
                // others outside plugin code are the previous handler's to decide (a process
                // may handle SIGXCPU to wind down).
                if reported || (sent && (is_fault(signal) || signal == libc::SIGABRT)) {
                    die(signal, fault);
                }
            }
        }
    }

    /// Writes the crash line of the plugin call running on this thread or, in a worker, of
    /// the worker's plugin, and forgets them so that a signal that follows (Rust's `abort`
    /// after reporting a stack overflow) writes nothing more. Returns whether it wrote.
    fn report(name: &[u8]) -> bool {
        let call = CURRENT
            .try_with(|current| current.replace(std::ptr::null()))
            .unwrap_or(std::ptr::null());
        // SAFETY: a description is borrowed by `during` for as long as it is current, and the
        // call it describes was interrupted on this thread, inside `during`.
        if let Some(call) = unsafe { call.as_ref() } {
            WORKER.store(std::ptr::null_mut(), Ordering::Release);
            if BARE.load(Ordering::Relaxed) {
                write_line(&[PREFIX, name, &call.line[..call.tags_at], b"\n"]);
            } else {
                let level = b" ERROR plugin: ";
                write_line(&[&now(), level, PREFIX, name, &call.line, b"\n"]);
            }
            return true;
        }
        let worker = WORKER.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a worker's description is leaked, never freed (`describe_worker`).
        let Some(worker) = (unsafe { worker.as_ref() }) else {
            return false;
        };
        write_line(&[PREFIX, name, b" in", &worker.line, b", outside any call\n"]);
        true
    }

    /// Writes the crash line of a signal that process `sender` sent to a worker, naming the
    /// worker's plugin. Returns whether it wrote: not outside a worker.
    fn report_sent(name: &[u8], sender: libc::pid_t) -> bool {
        let worker = WORKER.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: a worker's description is leaked, never freed (`describe_worker`).
        let Some(worker) = (unsafe { worker.as_ref() }) else {
            return false;
        };
        let mut digits = [0u8; 20];
        // A sender outside this process's PID namespace shows as 0.
        let sender: &[u8] = match sender {
            0 => b"another process",
            pid => decimal(i64::from(pid), &mut digits),
        };
        let by: &[u8] = if sender[0].is_ascii_digit() {
            b" sent by process "
        } else {
            b" sent by "
        };
        write_line(&[PREFIX, name, by, sender, b" to", &worker.line, b"\n"]);
        true
    }

    /// The time now, in UTC, as the log's lines begin with it (`2026-11-25T06:09:32.123456Z`,
    /// the shape of `tracing-subscriber`'s `SystemTime`, which a test compares): read with
    /// `clock_gettime`, written with integer arithmetic on the stack, for a signal handler.
    fn now() -> [u8; 27] {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` is async-signal-safe (POSIX.1-2008) and writes only `time`,
        // a valid, writable `timespec`; CLOCK_REALTIME always exists, and on a failure `time`
        // stays the epoch.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut time) };
        // A clock before 1970 shows the epoch.
        let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
        let micros = u64::try_from(time.tv_nsec / 1000).unwrap_or(0);
        timestamp(seconds, micros)
    }

    /// `seconds` since the epoch and `micros` more, as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (for the
    /// years 1970 to 9999). No `core::fmt`: fixed-width digits, written by hand.
    fn timestamp(seconds: u64, micros: u64) -> [u8; 27] {
        let (year, month, day) = crate::pluginlog::civil_date(seconds / 86_400);
        let time = seconds % 86_400;
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, month),
            (8, 2, day),
            (11, 2, time / 3600),
            (14, 2, time % 3600 / 60),
            (17, 2, time % 60),
            (20, 6, micros),
        ] {
            let mut left = value;
            for digit in text[at..at + width].iter_mut().rev() {
                *digit = b'0' + (left % 10) as u8;
                left /= 10;
            }
        }
        text
    }

    /// `value` in decimal, written at the end of `buffer`.
    fn decimal(value: i64, buffer: &mut [u8; 20]) -> &[u8] {
        let negative = value < 0;
        let mut left = value.unsigned_abs();
        let mut start = buffer.len();
        loop {
            start -= 1;
            buffer[start] = b'0' + (left % 10) as u8;
            left /= 10;
            if left == 0 {
                break;
            }
        }
        if negative {
            start -= 1;
            buffer[start] = b'-';
        }
        &buffer[start..]
    }

    /// Writes the concatenation of `parts`: with one `write(2)` when it fits a buffer on this
    /// (alternate, small) stack, else part by part, which another thread's output could come
    /// between.
    fn write_line(parts: &[&[u8]]) {
        let mut line = [0u8; 1024];
        let length: usize = parts.iter().map(|part| part.len()).sum();
        if length <= line.len() {
            let mut at = 0;
            for part in parts {
                line[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            write_all(&line[..length]);
        } else {
            for part in parts {
                write_all(part);
            }
        }
    }

    /// Once a crash is reported the process is dying: the other signals get their previous
    /// actions back, so that a signal raised on the way (Rust's `abort` after it reports a stack
    /// overflow) goes where it went before, without running this handler again, nested, on an
    /// alternate stack the first run already uses (which may not hold both).
    fn step_aside(signal: c_int) {
        let Some(previous) = PREVIOUS.get() else {
            return;
        };
        for (&(other, _), action) in SIGNALS.iter().zip(previous) {
            if other != signal {
                // SAFETY: `sigaction` is async-signal-safe and only reads `action`, an action
                // the signal had before ours.
                unsafe { libc::sigaction(other, action, std::ptr::null_mut()) };
            }
        }
    }

    /// Writes `bytes` to standard error, retrying after interruptions; errors are ignored.
    fn write_all(mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: `write` is async-signal-safe and reads `bytes.len()` bytes at `bytes`.
            let written =
                unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
            match usize::try_from(written) {
                Ok(0) => return,
                Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
                Err(_) if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Restores the default action of `signal` (death, with a core dump for these signals).
    fn reset(signal: c_int) {
        let action = default_action();
        // SAFETY: `sigaction` is async-signal-safe and only reads `action`, a valid action.
        unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    }

    /// Makes sure `signal` kills the process: with the default action restored, a fault comes
    /// back by itself once this handler returns; a sent signal is unblocked and sent again, and
    /// kills at once. Should the process still live (the first process of a PID namespace
    /// ignores its own signals at their default action), it exits with the shell's status for
    /// that signal, 128 plus its number.
    fn die(signal: c_int, fault: bool) {
        reset(signal);
        if !fault {
            // SAFETY: `sigemptyset`, `sigaddset`, `sigprocmask`, `raise` and `_exit` are
            // async-signal-safe; `set` is a local, valid signal set.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(signal);
                libc::_exit(128 + signal);
            }
        }
    }

    /// Calls the handler `handler`, installed with `flags`.
    ///
    /// # Safety
    /// `handler` must be a signal handler installed for `signal` with `flags`, and the
    /// arguments those the current handler received.
    unsafe fn chain(
        handler: libc::sighandler_t,
        flags: c_int,
        signal: c_int,
        info: *mut siginfo_t,
        context: *mut c_void,
    ) {
        if flags & libc::SA_SIGINFO != 0 {
            type Handler = unsafe extern "C" fn(c_int, *mut siginfo_t, *mut c_void);
            // SAFETY: installed with SA_SIGINFO, the handler has this signature (caller).
            let handler = unsafe { std::mem::transmute::<libc::sighandler_t, Handler>(handler) };
            // SAFETY: called as the kernel would call it (caller).
            unsafe { handler(signal, info, context) }
        } else {
            type Handler = unsafe extern "C" fn(c_int);
            // SAFETY: installed without SA_SIGINFO, the handler has this signature (caller).
            let handler = unsafe { std::mem::transmute::<libc::sighandler_t, Handler>(handler) };
            // SAFETY: called as the kernel would call it (caller).
            unsafe { handler(signal) }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{now, timestamp};

        #[test]
        fn dates_and_times_are_written_as_the_log_writes_them() {
            assert_eq!(&timestamp(0, 0), b"1970-01-01T00:00:00.000000Z");
            let leap_day = 11_016 * 86_400 + 3600 + 2 * 60 + 3;
            assert_eq!(&timestamp(leap_day, 5), b"2000-02-29T01:02:03.000005Z");
            let new_year = 20_819 * 86_400 - 1;
            assert_eq!(
                &timestamp(new_year, 999_999),
                b"2026-12-31T23:59:59.999999Z"
            );
        }

        /// The crash line's time has the shape of the log's (`tracing-subscriber`'s
        /// `SystemTime`, which `plugin-host` uses), and tells the same time: written between
        /// two of ours, it sorts between them.
        #[test]
        fn the_time_is_the_logs() {
            use tracing_subscriber::fmt::format::Writer;
            use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
            let before = now();
            let mut logs = String::new();
            SystemTime.format_time(&mut Writer::new(&mut logs)).unwrap();
            let after = now();
            let logs = logs.as_bytes();
            assert_eq!(logs.len(), before.len(), "{logs:?}");
            for (ours, theirs) in before.iter().zip(logs) {
                assert_eq!(
                    ours.is_ascii_digit(),
                    theirs.is_ascii_digit(),
                    "{:?} and {:?}",
                    String::from_utf8_lossy(&before),
                    String::from_utf8_lossy(logs)
                );
                if !ours.is_ascii_digit() {
                    assert_eq!(ours, theirs);
                }
            }
            assert!(
                before.as_slice() <= logs && logs <= after.as_slice(),
                "{:?} <= {:?} <= {:?}",
                String::from_utf8_lossy(&before),
                String::from_utf8_lossy(logs),
                String::from_utf8_lossy(&after)
            );
        }
    }
}

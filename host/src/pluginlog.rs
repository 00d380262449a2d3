//! What plugins log, made safe for the host's log. Every message a plugin writes — through the
//! ABI's log callback, as a `log` frame of a child process, or as a line of a child's standard
//! output or error — goes through this module:
//!
//! - it is cut at [`LOG_LINE_MAX`] bytes (marked ` [cut]`), and its control characters are
//!   escaped ([`escape`]), so that one plugin message is exactly one host line and can never
//!   pass for a line of the host's own;
//! - it passes its instance's rate limit, a token bucket ([`LogLimit`], shared by all of the
//!   instance's sources), checked with no lock; what the limit drops is counted, and reported
//!   as one `WARN` line per plugin every [`LOG_REPORT_INTERVAL`] while lines are dropped, by one
//!   thread for all plugins (started at the first drop), and once more when the instance is
//!   dropped with lines still unreported;
//! - it is tagged with its plugin's and its instance's names: a child's lines with the names
//!   its [`LogLimiter`] holds, which the child's handshake sets as soon as the child says them.
//!   A child's output lines travel on pipes, apart from the socket that says its name, and may be
//!   read before the name that came first: until the child is named, or its handshake ends
//!   either way, they are held back (at most [`HELD_LINES`] at a time), then logged in order.

use crate::limits::{LOG_BURST, LOG_LINE_MAX, LOG_RATE, LOG_REPORT_INTERVAL};
use parking_lot::{Condvar, Mutex};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Whether the log lines written to standard error may carry ANSI colours: only when standard
/// error is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>). A log that goes
/// to a file or a pipe holds text, not escape sequences. `plugin-host`, its examples and its
/// workers set up their logs with it.
pub fn stderr_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The rate limit of one plugin instance's log: all it logs (its log callback or `log` frames,
/// and its child's output lines) shares one token bucket of `burst` lines, refilled at `rate`
/// lines per second. Lines past it are dropped, counted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// The lines per second the instance may log on average (default [`LOG_RATE`], 100; 0
    /// counts as 1).
    pub rate: u32,
    /// The lines the instance may log at once, the bucket's size (default [`LOG_BURST`], 1000;
    /// 0 counts as 1): a full bucket lets `burst` lines through in a row, then lines pass at
    /// `rate` as it refills.
    pub burst: u32,
}

impl LogLimit {
    /// No limit: every line is logged (what a worker process uses, since its host limits the
    /// lines it forwards).
    pub const UNLIMITED: LogLimit = LogLimit {
        rate: u32::MAX,
        burst: u32::MAX,
    };
}

impl Default for LogLimit {
    fn default() -> Self {
        Self {
            rate: LOG_RATE,
            burst: LOG_BURST,
        }
    }
}

/// The most output lines of a child held back until it is named (see [`LogLimiter::child`]):
/// more than a plugin writes while it starts, as a rule; past them, the lines held go out with
/// the names there are, and the holding starts over. It holds at most this many times
/// [`LOG_LINE_MAX`] bytes per child.
pub(crate) const HELD_LINES: usize = 64;

/// The log of one plugin instance: the names that tag its lines, its rate limit, and the count
/// of the lines it dropped.
///
/// The bucket is kept as its "theoretical arrival time" (the generic cell rate algorithm, the
/// token bucket's equivalent in one number): each admitted line moves it one emission interval
/// (`1/rate`) later, and a line is admitted while it lies at most `burst - 1` intervals ahead
/// of now. One compare-and-swap per admitted line, one load per dropped one.
pub(crate) struct LogLimiter {
    /// The names that tag the instance's lines (reports name the instance), and the output
    /// lines held back until they are known.
    naming: Mutex<Naming>,
    /// Whether its output lines come from a worker of this host, whose crash lines are errors.
    worker: bool,
    /// The limit, for the reports.
    rate: AtomicU32,
    burst: AtomicU32,
    /// Nanoseconds per line (`1/rate`); 0 for no limit.
    interval: AtomicU64,
    /// How far ahead of now the bucket may run: `(burst - 1) * interval`, in nanoseconds.
    tolerance: AtomicU64,
    /// The theoretical arrival time of the next line, in nanoseconds since [`epoch`].
    arrival: AtomicU64,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
    /// Lines dropped in all (the metrics read it; `dropped` is reset by each report).
    dropped_total: AtomicU64,
    /// Whether a report is scheduled (so a flood schedules one, not one per line).
    reporting: AtomicBool,
    /// When the lines counted in `dropped` began to be counted, since [`epoch`].
    counting_since: AtomicU64,
}

/// The names of an instance's lines, and what waits for them.
struct Naming {
    names: Arc<Names>,
    /// The output lines read before the child was named; `None` once it is named, or its
    /// handshake ended (the names are then final, or the best there will be).
    held: Option<Vec<Held>>,
}

/// An output line held back until its child is named: the arguments of [`output`].
struct Held {
    stream: &'static str,
    line: Vec<u8>,
    cut: bool,
}

/// The names that tag a plugin instance's lines: `plugin="..." instance="..."`.
#[derive(Debug)]
pub(crate) struct Names {
    /// The plugin's own name (the descriptor's, or a program's `welcome`).
    pub(crate) plugin: String,
    /// The instance's name: the configuration's, or else the plugin's.
    pub(crate) instance: String,
}

/// Nanoseconds since the first call: the limiters' clock.
fn epoch() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

impl LogLimiter {
    /// The limiter of an in-process instance: its lines are tagged, and its reports named,
    /// `name` (both plugin and instance) until [`rename`](Self::rename) says otherwise.
    pub(crate) fn new(name: &str, limit: LogLimit) -> Arc<Self> {
        Self::with(name, limit, None)
    }

    /// The limiter of an instance whose plugin runs in a child process (a `worker` of this host
    /// running a library, or a program), named `name` for now: its [`output`] lines are held
    /// back until [`rename`](Self::rename) names it, or [`settle`](Self::settle) says no name
    /// is coming; a worker's crash lines are logged at ERROR.
    pub(crate) fn child(name: &str, limit: LogLimit, worker: bool) -> Arc<Self> {
        Self::with(name, limit, Some(worker))
    }

    /// A limiter named `name`; `child`: whether the instance runs in a child, and if so,
    /// whether it is a worker.
    fn with(name: &str, limit: LogLimit, child: Option<bool>) -> Arc<Self> {
        let limiter = Self {
            naming: Mutex::new(Naming {
                names: Arc::new(Names {
                    plugin: name.to_owned(),
                    instance: name.to_owned(),
                }),
                held: child.map(|_| Vec::new()),
            }),
            worker: child == Some(true),
            rate: AtomicU32::new(0),
            burst: AtomicU32::new(0),
            interval: AtomicU64::new(0),
            tolerance: AtomicU64::new(0),
            arrival: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            reporting: AtomicBool::new(false),
            counting_since: AtomicU64::new(0),
        };
        limiter.set_limit(limit);
        Arc::new(limiter)
    }

    /// Changes the limit from now on. The lines the bucket holds back (logged ahead of the old
    /// rate) count as as many lines under the new limit, at most a whole bucket: lines logged
    /// by `create` under the default limit cannot mute an instance whose own limit is stricter
    /// for longer than its own bucket takes to refill.
    pub(crate) fn set_limit(&self, limit: LogLimit) {
        let (rate, burst) = (limit.rate.max(1), limit.burst.max(1));
        let interval = 1_000_000_000 / u64::from(rate);
        self.rate.store(rate, Ordering::Relaxed);
        self.burst.store(burst, Ordering::Relaxed);
        let old = self.interval.swap(interval, Ordering::Relaxed);
        self.tolerance
            .store(interval * u64::from(burst - 1), Ordering::Relaxed);
        let now = epoch();
        let _ = self
            .arrival
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |arrival| {
                let held = match old {
                    0 => 0,
                    old => arrival.saturating_sub(now).div_ceil(old),
                };
                Some(now + held.min(u64::from(burst)) * interval)
            });
    }

    /// The limit.
    pub(crate) fn limit(&self) -> LogLimit {
        LogLimit {
            rate: self.rate.load(Ordering::Relaxed),
            burst: self.burst.load(Ordering::Relaxed),
        }
    }

    /// Tags the instance's lines with `plugin` and `instance`, and names `instance` in
    /// reports, from now on; logs the output lines held back, with these names.
    pub(crate) fn rename(self: &Arc<Self>, plugin: &str, instance: &str) {
        let mut naming = self.naming.lock();
        naming.names = Arc::new(Names {
            plugin: plugin.to_owned(),
            instance: instance.to_owned(),
        });
        self.release(&mut naming);
    }

    /// Logs the output lines held back with the names there are, and holds none from now on:
    /// the child's handshake ended, whether it said the plugin's name or not.
    pub(crate) fn settle(self: &Arc<Self>) {
        self.release(&mut self.naming.lock());
    }

    /// Logs the held lines and stops holding. Under the lock, so that a line read meanwhile
    /// waits, and the output stays in order.
    fn release(self: &Arc<Self>, naming: &mut Naming) {
        for held in naming.held.take().into_iter().flatten() {
            self.log_output(&naming.names, held.stream, &held.line, held.cut);
        }
    }

    /// Logs an output line of the instance's child now, tagged with `names`.
    fn log_output(self: &Arc<Self>, names: &Names, stream: &'static str, line: &[u8], cut: bool) {
        let crashed =
            self.worker && stream == "stderr" && line.starts_with(crate::ffi::CRASH_PREFIX);
        let level = match crashed {
            true => tracing::Level::ERROR,
            false => tracing::Level::INFO,
        };
        if !enabled(level) || !self.admit() {
            return;
        }
        let text = escape(line, cut);
        let (plugin, instance) = (names.plugin.as_str(), names.instance.as_str());
        match crashed {
            true => tracing::error!(target: "plugin", plugin, instance, stream, "{text}"),
            false => tracing::info!(target: "plugin", plugin, instance, stream, "{text}"),
        }
    }

    /// The names that tag the instance's lines now.
    pub(crate) fn names(&self) -> Arc<Names> {
        Arc::clone(&self.naming.lock().names)
    }

    /// Whether one more line may be logged now; a line refused is counted, and reported later.
    pub(crate) fn admit(self: &Arc<Self>) -> bool {
        let interval = self.interval.load(Ordering::Relaxed);
        if interval == 0 {
            return true;
        }
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let now = epoch();
        let mut arrival = self.arrival.load(Ordering::Relaxed);
        loop {
            let next = arrival.max(now);
            if next - now > tolerance {
                self.count_drop(now);
                return false;
            }
            match self.arrival.compare_exchange_weak(
                arrival,
                next + interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => arrival = current,
            }
        }
    }

    fn count_drop(self: &Arc<Self>, now: u64) {
        // SeqCst, here and in `report`: a drop counts itself then reads `reporting`; a report
        // clears `reporting` then reads the count. Weaker orderings let both reads see the old
        // values (a store buffer), leaving the drop unreported and no report scheduled; with all
        // four in one total order, at least one side sees the other's write.
        self.dropped.fetch_add(1, Ordering::SeqCst);
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
        if !self.reporting.load(Ordering::SeqCst) && !self.reporting.swap(true, Ordering::AcqRel) {
            self.counting_since.store(now, Ordering::Relaxed);
            schedule_report(Arc::downgrade(self));
        }
    }

    /// Reports the lines dropped since the last report, if any; whether a report stays
    /// scheduled (lines were dropped, or are being dropped again).
    fn report(&self) -> bool {
        if self.report_dropped() {
            return true;
        }
        // SeqCst: see `count_drop`. A line dropped meanwhile that saw `reporting` still set, and
        // scheduled nothing, is seen here.
        self.reporting.store(false, Ordering::SeqCst);
        self.dropped.load(Ordering::SeqCst) > 0 && !self.reporting.swap(true, Ordering::AcqRel)
    }

    /// Reports the lines dropped and not reported yet, now: for an instance that ends while
    /// something else (its library's log context) still holds its limiter.
    pub(crate) fn report_now(&self) {
        self.report_dropped();
    }

    /// The lines dropped since the limiter was made, reported or not.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// The lines dropped and not reported yet.
    #[cfg(test)]
    pub(crate) fn unreported(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes the report line of what was dropped, unless nothing was; whether it wrote it.
    fn report_dropped(&self) -> bool {
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        if dropped == 0 {
            return false;
        }
        let now = epoch();
        let since = self.counting_since.swap(now, Ordering::Relaxed);
        let seconds = Duration::from_nanos(now.saturating_sub(since))
            .as_secs_f64()
            .round()
            .max(1.0);
        let name = escape(self.names().instance.as_bytes(), false);
        tracing::warn!(
            "plugin \"{name}\": {dropped} log lines dropped in the last {seconds} s (rate limit \
             {}/s, burst {})",
            self.rate.load(Ordering::Relaxed),
            self.burst.load(Ordering::Relaxed)
        );
        true
    }
}

impl Drop for LogLimiter {
    fn drop(&mut self) {
        self.report_dropped();
    }
}

/// The reports due, and the thread that writes them.
struct Reports {
    /// When each scheduled report is due, and whose it is.
    due: Mutex<Vec<(Instant, Weak<LogLimiter>)>>,
    wake: Condvar,
}

static REPORTS: Reports = Reports {
    due: Mutex::new(Vec::new()),
    wake: Condvar::new(),
};

/// Schedules the report of `limiter` one interval from now; starts the reporting thread first
/// if it does not run yet.
fn schedule_report(limiter: Weak<LogLimiter>) {
    static THREAD: OnceLock<bool> = OnceLock::new();
    let running = THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("plugin-log-report".into())
            .spawn(report_loop)
            .map_err(|e| {
                tracing::error!(
                    "cannot start the thread that reports dropped plugin log lines ({e}): they \
                     are reported when their plugin ends"
                );
            })
            .is_ok()
    });
    if *running {
        REPORTS
            .due
            .lock()
            .push((Instant::now() + LOG_REPORT_INTERVAL, limiter));
        REPORTS.wake.notify_one();
    }
}

/// Writes each report when it is due, and schedules the next while lines are being dropped.
fn report_loop() {
    let mut due = REPORTS.due.lock();
    loop {
        let now = Instant::now();
        match due.iter().map(|(at, _)| *at).min() {
            None => {
                REPORTS.wake.wait(&mut due);
            }
            Some(next) if next > now => {
                REPORTS.wake.wait_until(&mut due, next);
            }
            Some(_) => {
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *due)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                *due = waiting;
                let again: Vec<_> = parking_lot::MutexGuard::unlocked(&mut due, || {
                    ready
                        .into_iter()
                        .filter(|(_, limiter)| limiter.upgrade().is_some_and(|l| l.report()))
                        .map(|(at, limiter)| (at + LOG_REPORT_INTERVAL, limiter))
                        .collect()
                });
                due.extend(again);
            }
        }
    }
}

/// Escapes `bytes` for the host's log, cut to at most [`LOG_LINE_MAX`] bytes (counting the
/// ` [cut]` mark, which is added when the text had to be cut here or `cut` says it was cut
/// before): invalid UTF-8 becomes U+FFFD; `\n`, `\r` and `\t` are written as such; other C0
/// controls and DEL as `\x1b`; C1 controls, the line and paragraph separators (U+2028, U+2029)
/// and the bidirectional controls, which can reorder what a terminal shows, as `\u{2028}`.
/// A backslash is kept as it is: escaping is for safety (one line, nothing hidden), not for
/// decoding.
pub(crate) fn escape(bytes: &[u8], cut: bool) -> String {
    const MARK: &str = " [cut]";
    let room = LOG_LINE_MAX - MARK.len();
    let mut text = String::with_capacity(bytes.len().min(LOG_LINE_MAX));
    let mut cut = cut;
    'chunks: for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        // The common case: nothing to escape.
        if !valid.chars().any(needs_escape) && text.len() + valid.len() <= room {
            text.push_str(valid);
        } else {
            for c in valid.chars() {
                if !push_escaped(&mut text, c, room) {
                    cut = true;
                    break 'chunks;
                }
            }
        }
        if !chunk.invalid().is_empty() && !push_escaped(&mut text, '\u{FFFD}', room) {
            cut = true;
            break;
        }
    }
    if cut {
        text.push_str(MARK);
    }
    text
}

/// Whether `text` is written as it is: nothing in it needs escaping.
pub(crate) fn is_one_line(text: &str) -> bool {
    !text.chars().any(needs_escape)
}

/// Whether `c` is written escaped.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}'
                | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c`, escaped if need be, unless that would make `text` longer than `room`; whether
/// it did.
fn push_escaped(text: &mut String, c: char, room: usize) -> bool {
    let mut utf8 = [0; 4];
    // Allocates only for the rare characters written escaped by number.
    let mut escaped = String::new();
    let piece: &str = match c {
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        c if c.is_ascii_control() => {
            let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            &escaped
        }
        c if needs_escape(c) => {
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            &escaped
        }
        c => c.encode_utf8(&mut utf8),
    };
    if text.len() + piece.len() > room {
        return false;
    }
    text.push_str(piece);
    true
}

/// The tracing level of a `PLUGIN_LOG_*` level (any other value is trace).
fn level_of(level: u32) -> tracing::Level {
    use plugin_api::abi::{PLUGIN_LOG_DEBUG, PLUGIN_LOG_ERROR, PLUGIN_LOG_INFO, PLUGIN_LOG_WARN};
    match level {
        PLUGIN_LOG_ERROR => tracing::Level::ERROR,
        PLUGIN_LOG_WARN => tracing::Level::WARN,
        PLUGIN_LOG_INFO => tracing::Level::INFO,
        PLUGIN_LOG_DEBUG => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

/// Whether the host's log takes plugin lines at `level` (a line it would hide costs no token).
fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::ERROR => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        tracing::Level::WARN => tracing::enabled!(target: "plugin", tracing::Level::WARN),
        tracing::Level::INFO => tracing::enabled!(target: "plugin", tracing::Level::INFO),
        tracing::Level::DEBUG => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
        tracing::Level::TRACE => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
    }
}

/// Logs a plugin's message `bytes` at its `PLUGIN_LOG_*` level (any other value is trace),
/// under the target `plugin`, tagged with the plugin's and the instance's names: for in-process
/// plugins (through `PluginHost::log`) and plugins in child processes (their `log` messages)
/// alike. Escaped, cut, and within `limiter`'s rate, or dropped and counted.
pub(crate) fn message(
    limiter: &Arc<LogLimiter>,
    level: u32,
    plugin: &str,
    instance: &str,
    bytes: &[u8],
) {
    let level = level_of(level);
    if !enabled(level) || !limiter.admit() {
        return;
    }
    let text = escape(bytes, false);
    match level {
        tracing::Level::ERROR => tracing::error!(target: "plugin", plugin, instance, "{text}"),
        tracing::Level::WARN => tracing::warn!(target: "plugin", plugin, instance, "{text}"),
        tracing::Level::INFO => tracing::info!(target: "plugin", plugin, instance, "{text}"),
        tracing::Level::DEBUG => tracing::debug!(target: "plugin", plugin, instance, "{text}"),
        tracing::Level::TRACE => tracing::trace!(target: "plugin", plugin, instance, "{text}"),
    }
}

/// Logs one line of a child's standard output or error (`stream`) under the target `plugin`,
/// tagged with the names `limiter` holds; `cut` when the rest of the line was discarded.
/// Escaped, and within `limiter`'s rate, or dropped and counted. Until the child is named (see
/// [`LogLimiter::child`]), the line is held back, and logged once it is, with its names.
///
/// A line is logged at INFO, except a worker's crash line: one on a worker's standard error
/// that begins as [`crate::ffi::CRASH_PREFIX`] says, its report of the fatal signal that kills
/// it, logged at ERROR as the crash of an in-process plugin is. Only workers, which this host
/// runs, are trusted with it: the same line from a program is an ordinary line, at INFO (a
/// program logs an error with a `log` message at level error).
pub(crate) fn output(limiter: &Arc<LogLimiter>, stream: &'static str, line: &[u8], cut: bool) {
    let mut naming = limiter.naming.lock();
    match &mut naming.held {
        Some(held) if held.len() < HELD_LINES => {
            held.push(Held {
                stream,
                line: line.to_vec(),
                cut,
            });
        }
        Some(_) => {
            // Too many: they go with the names there are, and holding starts over.
            let held = naming.held.replace(Vec::new());
            for held in held.into_iter().flatten() {
                limiter.log_output(&naming.names, held.stream, &held.line, held.cut);
            }
            limiter.log_output(&naming.names, stream, line, cut);
        }
        None => {
            let names = Arc::clone(&naming.names);
            drop(naming);
            limiter.log_output(&names, stream, line, cut);
        }
    }
}

/// The proleptic Gregorian date (year, month, day) of day `days` since 1970-01-01, for the
/// timestamps of log lines: Howard Hinnant's `civil_from_days`, for days after the epoch. Plain
/// integer arithmetic, so that a signal handler may call it (the crash report writes its line's
/// time with it); `plugin-host`'s log writer uses it too.
#[doc(hidden)]
pub fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        use super::civil_date;
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_782), (2026, 11, 25));
        assert_eq!(civil_date(20_818), (2026, 12, 31));
        assert_eq!(civil_date(20_819), (2027, 1, 1));
    }

    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else_changes() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"plain text, with \\ and \"quotes\"",
                "plain text, with \\ and \"quotes\"",
            ),
            (b"a\nb\rc\td", "a\\nb\\rc\\td"),
            (
                b"\x1b[31mred\x1b[0m \x00 \x7f",
                "\\x1b[31mred\\x1b[0m \\x00 \\x7f",
            ),
            (
                "next\u{85}line\u{2028}sep\u{2029}".as_bytes(),
                "next\\u{85}line\\u{2028}sep\\u{2029}",
            ),
            (
                "bidi \u{202e}evil\u{2066}".as_bytes(),
                "bidi \\u{202e}evil\\u{2066}",
            ),
            ("été ✓".as_bytes(), "été ✓"),
            (b"bad \xff\xfe utf-8", "bad \u{FFFD}\u{FFFD} utf-8"),
            (b"", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input, false), *expected, "{input:?}");
        }
        assert_eq!(escape(b"x", true), "x [cut]");
    }

    #[test]
    fn long_messages_are_cut_within_the_line_limit() {
        for input in [
            vec![b'a'; 100_000],
            vec![b'\n'; 100_000],
            "é".repeat(50_000).into_bytes(),
        ] {
            let text = escape(&input, false);
            assert!(text.len() <= LOG_LINE_MAX, "{}", text.len());
            assert!(text.len() > LOG_LINE_MAX - 16, "{}", text.len());
            assert!(text.ends_with(" [cut]"));
            assert!(!text.contains('\n'));
        }
        let exact = vec![b'a'; LOG_LINE_MAX - 6];
        assert_eq!(escape(&exact, false).len(), LOG_LINE_MAX - 6);
    }

    #[test]
    fn the_bucket_admits_its_burst_then_its_rate() {
        let limiter = LogLimiter::new(
            "t",
            LogLimit {
                rate: 1000,
                burst: 50,
            },
        );
        // The upper bounds come from the time the loops took, measured around them: a thread
        // preempted on a loaded machine gets a larger refill, never a failure. At 1000 lines/s,
        // one line per started millisecond.
        let refill = |since: Instant| since.elapsed().as_millis() as usize + 1;
        let begun = Instant::now();
        let admitted = (0..10_000).filter(|_| limiter.admit()).count();
        let most = 50 + refill(begun);
        assert!(
            (50..=most).contains(&admitted),
            "{admitted}, at most {most}"
        );
        assert_eq!(
            limiter.dropped.load(Ordering::Relaxed),
            10_000 - admitted as u64
        );
        // Empty now: after 30 ms, some 30 lines refilled.
        std::thread::sleep(Duration::from_millis(30));
        let refilled = (0..100).filter(|_| limiter.admit()).count();
        let most = 50 + refill(begun) - admitted;
        assert!(
            (20..=most).contains(&refilled),
            "{refilled}, at most {most}"
        );
    }

    #[test]
    fn a_new_limit_counts_the_lines_held_back_at_most_a_whole_bucket() {
        // `create` logged 1000 lines under the default limit: ten seconds of its rate ahead.
        let limiter = LogLimiter::new("t", LogLimit::default());
        assert_eq!((0..1000).filter(|_| limiter.admit()).count(), 1000);
        // A stricter limit: its bucket starts empty, not ten seconds behind.
        let strict = LogLimit {
            rate: 1000,
            burst: 5,
        };
        let set = Instant::now();
        limiter.set_limit(strict);
        std::thread::sleep(Duration::from_millis(20));
        let admitted = (0..100).filter(|_| limiter.admit()).count();
        // From an empty bucket: one line per started millisecond, measured.
        let most = set.elapsed().as_millis() as usize + 1;
        assert!((1..=most).contains(&admitted), "{admitted}, at most {most}");
        // Three lines logged at one a second: three of the five are gone under the new limit.
        let limiter = LogLimiter::new("t", LogLimit { rate: 1, burst: 10 });
        assert_eq!((0..3).filter(|_| limiter.admit()).count(), 3);
        limiter.set_limit(LogLimit { rate: 1, burst: 5 });
        assert_eq!((0..5).filter(|_| limiter.admit()).count(), 2);
    }

    #[test]
    fn no_limit_admits_everything() {
        let limiter = LogLimiter::new("t", LogLimit::UNLIMITED);
        assert!((0..100_000).all(|_| limiter.admit()));
        limiter.set_limit(LogLimit { rate: 1, burst: 1 });
        assert!(limiter.admit());
        assert!(!limiter.admit());
        assert_eq!(limiter.limit(), LogLimit { rate: 1, burst: 1 });
    }

    /// The lines `f` logs, as `LEVEL target: message fields`, without the time.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().clone()).unwrap();
        text.lines()
            .map(|line| line.trim_start().to_owned())
            .collect()
    }

    #[test]
    fn a_childs_output_is_held_back_until_it_is_named() {
        let log = LogLimiter::child("libx.so", LogLimit::default(), true);
        let early = logged(|| {
            output(&log, "stderr", b"created", false);
            output(&log, "stdout", b"cut", true);
        });
        assert!(early.is_empty(), "{early:?}");
        let lines = logged(|| {
            log.rename("x", "inst");
            output(&log, "stderr", b"after", false);
            // A restart's handshake settles a log that was named long ago: nothing changes.
            log.settle();
            output(&log, "stdout", b"later", false);
        });
        let tags = r#"plugin="x" instance="inst""#;
        assert_eq!(
            lines,
            [
                format!(r#"INFO plugin: created {tags} stream="stderr""#),
                format!(r#"INFO plugin: cut [cut] {tags} stream="stdout""#),
                format!(r#"INFO plugin: after {tags} stream="stderr""#),
                format!(r#"INFO plugin: later {tags} stream="stdout""#),
            ]
        );
    }

    #[test]
    fn a_child_never_named_has_its_lines_logged_when_its_handshake_ends() {
        let log = LogLimiter::child("prog.py", LogLimit::default(), false);
        let early = logged(|| output(&log, "stderr", b"no module named x", false));
        assert!(early.is_empty(), "{early:?}");
        assert_eq!(
            logged(|| log.settle()),
            [
                r#"INFO plugin: no module named x plugin="prog.py" instance="prog.py" stream="stderr""#
            ]
        );
    }

    #[test]
    fn an_in_process_instance_holds_nothing_back() {
        let log = LogLimiter::new("x", LogLimit::default());
        assert_eq!(
            logged(|| output(&log, "stderr", b"now", false)),
            [r#"INFO plugin: now plugin="x" instance="x" stream="stderr""#]
        );
    }

    #[test]
    fn past_the_lines_held_they_go_out_with_the_names_there_are() {
        let lines = logged(|| {
            let log = LogLimiter::child("libx.so", LogLimit::UNLIMITED, true);
            for n in 0..=HELD_LINES {
                output(&log, "stdout", n.to_string().as_bytes(), false);
            }
            // Held again, until named.
            output(&log, "stdout", b"next", false);
            log.rename("x", "x");
        });
        let (early, named) = lines.split_at(HELD_LINES + 1);
        for (n, line) in early.iter().enumerate() {
            assert_eq!(
                *line,
                format!(r#"INFO plugin: {n} plugin="libx.so" instance="libx.so" stream="stdout""#)
            );
        }
        assert_eq!(
            named,
            [r#"INFO plugin: next plugin="x" instance="x" stream="stdout""#]
        );
    }

    #[test]
    fn only_a_workers_crash_line_is_an_error() {
        let crash = b"plugin-host: fatal SIGSEGV in plugin instance \"x\" (libx.so) during start";
        let level = |worker: bool, stream: &'static str| {
            let lines = logged(|| {
                let log = LogLimiter::child("x", LogLimit::default(), worker);
                log.settle();
                output(&log, stream, crash, false);
            });
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines[0].split_once(' ').unwrap().0.to_owned()
        };
        assert_eq!(level(true, "stderr"), "ERROR");
        // A program's line, or a worker's standard output: ordinary lines.
        assert_eq!(level(false, "stderr"), "INFO");
        assert_eq!(level(true, "stdout"), "INFO");
    }

    #[test]
    fn a_report_stays_scheduled_while_lines_are_dropped() {
        let limiter = LogLimiter::new("t", LogLimit { rate: 1, burst: 1 });
        assert!(limiter.admit());
        assert!(!limiter.admit());
        assert!(limiter.reporting.load(Ordering::Relaxed));
        // Lines were dropped: reported, and the next report stays due.
        assert!(limiter.report());
        assert_eq!(limiter.dropped.load(Ordering::Relaxed), 0);
        // Nothing dropped since: no report, and none scheduled.
        assert!(!limiter.report());
        assert!(!limiter.reporting.load(Ordering::Relaxed));
    }
}

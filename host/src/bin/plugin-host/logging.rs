//! Logs that can never stop the server: formatted lines go to stderr through a bounded buffer
//! and a dedicated writer thread, so a request never waits for, or fails with, a log write.
//!
//! - The [`MakeWriter`] hands each formatted event to an in-memory queue of at most
//!   [`BUFFER_BYTES`], whole or not at all, and returns at once. When the queue is full the
//!   event is dropped and counted.
//! - The writer thread lets lines gather for up to [`BATCH_DELAY`], then takes everything queued
//!   at once and writes it with as few `write` calls as the sink accepts. A line it fails to
//!   write (EPIPE once the reader has gone, or any other error, including `EAGAIN` from a
//!   non-blocking stderr) is dropped and counted too.
//! - After the first successful write that follows drops, and at shutdown, the thread writes
//!   `plugin-host: N log lines were dropped (the log sink was full or failing)` as a `WARN` line.
//! - Dropping the [`LogGuard`] writes what is queued and that final report, but waits at most
//!   [`FLUSH_DEADLINE`]: a sink blocked forever (a pipe nobody reads) cannot hang shutdown.
//!
//! The queue is one byte buffer behind a mutex rather than a channel of lines: the bound is in
//! bytes (what a slow sink actually costs), an event is copied with no allocation, and the
//! writer thread takes a whole batch by swapping two buffers. `tracing-appender`'s
//! `non_blocking` is not used because it silently ignores write errors and never reports what it
//! dropped.

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer as FmtWriter;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The most bytes of formatted lines waiting for the writer thread: about 7,000 access lines,
/// which absorbs a burst of a fraction of a second at full speed while the sink is slow, and is
/// a small, fixed amount of memory (twice that at most, with the batch being written) when the
/// sink is stuck. A bound in lines would let long lines (a plugin's multi-kilobyte message)
/// take many times that.
pub const BUFFER_BYTES: usize = 1 << 20;

/// How long the writer thread lets lines gather before writing them, unless [`BATCH_BYTES`]
/// are queued sooner: under load, one `write` (and one wake-up of the thread) carries many lines
/// instead of one each; idle, a line reaches the sink this much late at most.
const BATCH_DELAY: Duration = Duration::from_millis(5);

/// The queued bytes that have the writer thread write at once, well before the queue is full.
const BATCH_BYTES: usize = BUFFER_BYTES / 4;

/// How long dropping the [`LogGuard`] waits for the queued lines and the final report.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Logs go to stderr, through the writer thread; `filter` (or RUST_LOG, or `info`) chooses
/// what. Keep the returned guard until the end of `main`: dropping it flushes the logs.
pub fn init(filter: Option<&str>) -> io::Result<LogGuard> {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let guard = LogGuard::start(io::stderr())?;
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(guard.sink.clone())
        .with_ansi(plugin_host::stderr_colours())
        .log_internal_errors(false)
        .with_filter(filter_fn(|metadata| !is_access_line(metadata)));
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(AccessLog {
            sink: guard.sink.clone(),
        })
        .init();
    Ok(guard)
}

/// The target of the server's access log lines.
const ACCESS: &str = "plugin_host::access";

/// Whether an event is an access log line: `INFO` on the access target, with a status.
fn is_access_line(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == ACCESS
        && *metadata.level() == tracing::Level::INFO
        && metadata.fields().field("status").is_some()
}

/// Writes the access log lines, one per request, formatted by hand: the same line as the
/// generic formatter's (`TIME  INFO plugin_host::access: method=GET path=/x status=200
/// duration_us=41 plugin=name`), without its per-field `Debug` formatting, quoting and styling,
/// which cost as much as the rest of a request's work in the host. Other events keep the
/// generic formatter. Values are written as they are: a method is an HTTP token, a path is the
/// URI's (visible ASCII), and a plugin name has no control characters.
struct AccessLog {
    sink: LogSink,
}

/// The fields of an access log line.
#[derive(Default)]
struct AccessFields {
    line: String,
}

impl tracing::field::Visit for AccessFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.line, " {}={value}", field.name());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        let _ = write!(self.line, " {}={value}", field.name());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.line, " {}={value:?}", field.name());
    }
}

/// Appends the current UTC time as the generic formatter writes it
/// (`2026-11-25T06:09:32.123456Z`). The date and time of day are formatted once per second per
/// thread; each line formats only its microseconds.
fn timestamp(line: &mut String) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != seconds {
            prefix.clear();
            let (year, month, day) = plugin_host::civil_date(seconds / 86_400);
            let time = seconds % 86_400;
            let _ = write!(
                prefix,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                time / 3600,
                time % 3600 / 60,
                time % 60
            );
            *cached = seconds;
        }
        line.push_str(prefix);
    });
    let _ = write!(line, "{:06}Z", now.subsec_micros());
}

impl<S: tracing::Subscriber> Layer<S> for AccessLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !is_access_line(event.metadata()) {
            return;
        }
        let mut fields = AccessFields {
            line: String::with_capacity(160),
        };
        timestamp(&mut fields.line);
        fields.line.push_str("  INFO ");
        fields.line.push_str(ACCESS);
        fields.line.push(':');
        event.record(&mut fields);
        fields.line.push('\n');
        let _ = self.sink.make_writer().write_all(fields.line.as_bytes());
    }
}

/// What the events and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: lines are queued, or the guard is closing.
    wake: Condvar,
    /// Wakes the guard: the writer thread has finished.
    finished: Condvar,
}

/// The lines waiting for the writer thread, and where it stands.
struct Queue {
    /// Whole lines waiting for the writer thread, at most [`BUFFER_BYTES`].
    pending: Vec<u8>,
    /// Lines refused because the queue was full (or closed), not yet taken by the writer thread.
    dropped: u64,
    /// The guard has been dropped: no more lines are taken.
    closing: bool,
    /// The writer thread has written (or failed to write) everything and the final report.
    finished: bool,
}

/// The [`MakeWriter`] of the log subscriber: each writer it makes queues one event.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
            queue: None,
            start: 0,
            refused: None,
        }
    }
}

/// Queues what is written to it, up to its drop, as one unit: all of it or, if it does not fit
/// in the queue, none of it. Never fails and never blocks on the sink.
///
/// It holds the queue's lock from its first write until it is dropped, so that the pieces of
/// one event stay together. The subscriber formats an event before writing it, so only a copy
/// happens under the lock; code writing to it must not log.
pub struct EventWriter<'a> {
    shared: &'a Shared,
    queue: Option<MutexGuard<'a, Queue>>,
    /// Where this event starts in the queue.
    start: usize,
    /// The lines refused so far, once the event did not fit.
    refused: Option<u64>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        let queue = self.queue.get_or_insert_with(|| {
            let queue = shared.queue.lock();
            self.start = queue.pending.len();
            queue
        });
        match &mut self.refused {
            Some(lines) => *lines += count_lines(buf),
            None if queue.closing || queue.pending.len() + buf.len() > BUFFER_BYTES => {
                let lines = count_lines(&queue.pending[self.start..]) + count_lines(buf);
                queue.pending.truncate(self.start);
                self.refused = Some(lines);
            }
            None => queue.pending.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        let Some(queue) = &mut self.queue else { return };
        match self.refused {
            // An event without a line end still counts as one line.
            Some(lines) => queue.dropped += lines.max(1),
            // Wake the writer thread only if it may be idle (the queue was empty) or if the batch
            // has grown big: waking it for each line would cost more than formatting the line.
            None if self.start == 0
                || (self.start < BATCH_BYTES && queue.pending.len() >= BATCH_BYTES) =>
            {
                self.shared.wake.notify_one();
            }
            None => {}
        }
    }
}

/// The number of lines in `bytes`: its line ends.
fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Keeps the writer thread running; dropping it flushes the logs (see [`FLUSH_DEADLINE`]).
pub struct LogGuard {
    sink: LogSink,
    thread: Option<JoinHandle<()>>,
}

impl LogGuard {
    /// Starts the writer thread, writing to `out`.
    fn start(out: impl Write + Send + 'static) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                dropped: 0,
                closing: false,
                finished: false,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("log-writer".to_owned())
                .spawn(move || Output::new(out).run(&shared))?
        };
        Ok(Self {
            sink: LogSink { shared },
            thread: Some(thread),
        })
    }

    /// A writer whose output goes after the logs queued so far, as one unit (see
    /// [`EventWriter`]), for text that is not a log event.
    pub fn writer(&self) -> EventWriter<'_> {
        self.sink.make_writer()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let shared = &self.sink.shared;
        let deadline = Instant::now() + FLUSH_DEADLINE;
        let mut queue = shared.queue.lock();
        queue.closing = true;
        shared.wake.notify_one();
        while !queue.finished {
            if shared.finished.wait_until(&mut queue, deadline).timed_out() {
                // The sink is stuck: give up on it. The thread ends with the process.
                return;
            }
        }
        drop(queue);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's side: the sink and what it failed to write.
struct Output<W> {
    out: W,
    /// Lines dropped and not yet reported.
    unreported: u64,
    /// A failed write stopped in the middle of a line: the next write starts a new one.
    torn: bool,
}

impl<W: Write> Output<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            unreported: 0,
            torn: false,
        }
    }

    /// Writes batches of queued lines until the guard closes the queue and it is empty, then
    /// reports what was dropped.
    fn run(mut self, shared: &Shared) {
        let mut batch = Vec::new();
        loop {
            {
                let mut queue = shared.queue.lock();
                while queue.pending.is_empty() && !queue.closing {
                    shared.wake.wait(&mut queue);
                }
                if queue.pending.is_empty() {
                    break;
                }
                let until = Instant::now() + BATCH_DELAY;
                while !queue.closing
                    && queue.pending.len() < BATCH_BYTES
                    && !shared.wake.wait_until(&mut queue, until).timed_out()
                {}
                std::mem::swap(&mut queue.pending, &mut batch);
            }
            if self.torn && self.write(b"\n").is_ok() {
                self.torn = false;
            }
            match self.write(&batch) {
                Ok(()) => {
                    self.unreported += std::mem::take(&mut shared.queue.lock().dropped);
                    self.report();
                }
                Err(written) => {
                    self.unreported += count_lines(&batch[written..]);
                    self.torn |= written > 0 && batch[written - 1] != b'\n';
                }
            }
            batch.clear();
        }
        self.unreported += std::mem::take(&mut shared.queue.lock().dropped);
        self.report();
        shared.queue.lock().finished = true;
        shared.finished.notify_all();
    }

    /// Writes all of `bytes`, or says how many it wrote before failing.
    fn write(&mut self, bytes: &[u8]) -> Result<(), usize> {
        let mut written = 0;
        while written < bytes.len() {
            match self.out.write(&bytes[written..]) {
                Ok(0) => return Err(written),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(written),
            }
        }
        Ok(())
    }

    /// Writes the report of the lines dropped since the last one, if any.
    fn report(&mut self) {
        if self.unreported == 0 {
            return;
        }
        let mut line = String::new();
        // Formatting into a String cannot fail.
        let _ = SystemTime.format_time(&mut FmtWriter::new(&mut line));
        let _ = writeln!(
            line,
            "  WARN plugin-host: {} log lines were dropped (the log sink was full or failing)",
            self.unreported
        );
        match self.write(line.as_bytes()) {
            Ok(()) => self.unreported = 0,
            Err(written) => self.torn |= written > 0,
        }
    }
}

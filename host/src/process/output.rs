//! Copying a child's standard output and error into the host's log, line by line, with one
//! thread per child that waits on both pipes and a wake-up socket with `poll(2)`.
//!
//! - A line is cut at [`LOG_LINE_MAX`] bytes, logged at once, and the rest of it is discarded
//!   as it is read: a program that never writes a newline costs one buffer of that size.
//! - The copy never waits for the pipes' end, which a descendant of the child can withhold by
//!   keeping them open: once the child is reaped, [`Output::child_reaped`] (or dropping the
//!   [`Output`]) wakes the thread, which copies what the pipes hold at that moment (at most
//!   [`DRAIN_LIMIT`] bytes), closes them and ends; `child_reaped` waits for that, so that a
//!   child's last lines are in the log before its end is, and before the host exits.
//! - Every line goes through [`pluginlog::output`]: escaped, within the instance's rate limit,
//!   and tagged with the plugin's and the instance's names (held back until the handshake
//!   has them); a worker's crash line is an error.

use crate::limits::LOG_LINE_MAX;
use crate::pluginlog::{self, LogLimiter};
use parking_lot::Mutex;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::Arc;

/// The most bytes copied from a child's pipes once it has been reaped: as much as a child may
/// make a pipe hold without privileges (`/proc/sys/fs/pipe-max-size`, 1 MiB by default), so
/// what it wrote before it exited is copied, while a descendant that keeps writing cannot hold
/// the thread.
pub(crate) const DRAIN_LIMIT: usize = 1 << 20;

/// The copy of one child's output; ends when this is dropped or told the child was reaped.
pub(crate) struct Output {
    /// The host's end of the wake-up socket: closing it wakes the copying thread.
    wake: Mutex<Option<UnixStream>>,
    /// The copying thread, until it is waited for.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Output {
    /// Starts copying the piped standard output and error of `child` (taken from it) on a
    /// thread of its own (named `out:INSTANCE`), each line within the rate of `log` and tagged
    /// with its names.
    pub(crate) fn start(child: &mut Child, log: Arc<LogLimiter>) -> std::io::Result<Self> {
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Stream::new(File::from(OwnedFd::from(s)), "stdout")),
            child
                .stderr
                .take()
                .map(|s| Stream::new(File::from(OwnedFd::from(s)), "stderr")),
        ];
        let (wake, woken) = UnixStream::pair()?;
        let name = format!("out:{}", log.names().instance.replace('\0', ""));
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || copy(streams.into_iter().flatten().collect(), &woken, &log))?;
        Ok(Self {
            wake: Mutex::new(Some(wake)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Ends the copy once the child has been reaped, and waits until it has ended: what its
    /// pipes hold now is still copied (at most [`DRAIN_LIMIT`] bytes), then they are closed,
    /// whatever its descendants do with them.
    pub(crate) fn child_reaped(&self) {
        self.wake.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// One pipe being copied, and the line being gathered from it.
struct Stream {
    pipe: File,
    name: &'static str,
    /// The line so far, at most [`LOG_LINE_MAX`] bytes.
    line: Vec<u8>,
    /// Whether the rest of a line that was cut is being discarded, up to its newline.
    discarding: bool,
    /// Whether the pipe may still give bytes.
    open: bool,
}

impl Stream {
    fn new(pipe: File, name: &'static str) -> Self {
        Self {
            pipe,
            name,
            line: Vec::with_capacity(LOG_LINE_MAX),
            discarding: false,
            open: true,
        }
    }

    /// Splits `data` into lines, calling `emit` with each complete line (without its `\n` or
    /// `\r\n`) or each cut one (its first [`LOG_LINE_MAX`] bytes, `true`); keeps the rest.
    fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&'static str, &[u8], bool)) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            if self.discarding {
                self.discarding = false;
            } else {
                let cut = self.append(&data[..end]);
                let line = match cut {
                    true => &self.line[..],
                    false => self.line.strip_suffix(b"\r").unwrap_or(&self.line),
                };
                emit(self.name, line, cut);
                self.line.clear();
            }
            data = &data[end + 1..];
        }
        if !self.discarding && !data.is_empty() && self.append(data) {
            // Logged now: the line's end may never come.
            emit(self.name, &self.line, true);
            self.line.clear();
            self.discarding = true;
        }
    }

    /// Adds what fits of `bytes` to the line; whether some did not (the line is cut).
    fn append(&mut self, bytes: &[u8]) -> bool {
        let room = LOG_LINE_MAX - self.line.len();
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        bytes.len() > room
    }

    /// Emits the unfinished line the stream ended with, if any.
    fn finish(&mut self, emit: &mut dyn FnMut(&'static str, &[u8], bool)) {
        if !self.line.is_empty() {
            emit(self.name, &self.line, false);
            self.line.clear();
        }
    }

    /// Reads once from the pipe (which `poll` found ready) into `buffer` and feeds what came;
    /// the number of bytes, 0 at the end of the pipe or on an error (the stream is then closed).
    fn read(
        &mut self,
        buffer: &mut [u8],
        emit: &mut dyn FnMut(&'static str, &[u8], bool),
    ) -> usize {
        let read = loop {
            match self.pipe.read(buffer) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.unwrap_or(0),
            }
        };
        if read == 0 {
            self.open = false;
            self.finish(emit);
        } else {
            self.feed(&buffer[..read], emit);
        }
        read
    }
}

/// Waits for any of `fds` to be ready for reading, at most `timeout_ms` (-1: no limit);
/// `revents` says which.
fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<()> {
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    loop {
        // SAFETY: `fds` is an exclusively borrowed array of `count` initialised `pollfd`s, of
        // which `poll` writes only the `revents` fields, before it returns.
        let status = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) };
        if status >= 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Copies `streams` into the log until both end, or until `woken` is, then drains them.
fn copy(mut streams: Vec<Stream>, woken: &UnixStream, log: &Arc<LogLimiter>) {
    let mut emit = |stream: &'static str, line: &[u8], cut: bool| {
        pluginlog::output(log, stream, line, cut);
    };
    let mut buffer = vec![0; 64 << 10];
    while streams.iter().any(|s| s.open) {
        let open: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].open).collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| pollfd(streams[i].pipe.as_raw_fd()))
            .chain([pollfd(woken.as_raw_fd())])
            .collect();
        if poll(&mut fds, -1).is_err() {
            break;
        }
        if fds[open.len()].revents != 0 {
            // The child was reaped (or the link dropped): what the pipes hold now, then stop.
            drain(&mut streams, &mut buffer, &mut emit);
            break;
        }
        for (&i, fd) in open.iter().zip(&fds) {
            if fd.revents != 0 {
                streams[i].read(&mut buffer, &mut emit);
            }
        }
    }
    for stream in &mut streams {
        stream.finish(&mut emit);
    }
    // The pipes close here, with `streams`.
}

/// Copies what the open streams hold at this moment, at most [`DRAIN_LIMIT`] bytes.
fn drain(
    streams: &mut [Stream],
    buffer: &mut [u8],
    emit: &mut dyn FnMut(&'static str, &[u8], bool),
) {
    let mut left = DRAIN_LIMIT;
    while left > 0 {
        let open: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].open).collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| pollfd(streams[i].pipe.as_raw_fd()))
            .collect();
        if fds.is_empty() || poll(&mut fds, 0).is_err() || fds.iter().all(|fd| fd.revents == 0) {
            return;
        }
        for (&i, fd) in open.iter().zip(&fds) {
            if fd.revents != 0 {
                let room = left.min(buffer.len());
                left -= streams[i].read(&mut buffer[..room], emit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `chunks` make, as (text, cut).
    fn lines(chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let (_, reader) = UnixStream::pair().unwrap();
        let mut stream = Stream::new(File::from(OwnedFd::from(reader)), "stdout");
        let mut lines = Vec::new();
        let mut emit = |_: &'static str, line: &[u8], cut: bool| {
            lines.push((String::from_utf8_lossy(line).into_owned(), cut));
        };
        for chunk in chunks {
            stream.feed(chunk, &mut emit);
        }
        stream.finish(&mut emit);
        lines
    }

    #[test]
    fn lines_are_split_wherever_the_reads_end() {
        assert_eq!(
            lines(&[b"one\ntw", b"o\r\nthree\n\nfour"]),
            [
                ("one".into(), false),
                ("two".into(), false),
                ("three".into(), false),
                (String::new(), false),
                ("four".into(), false),
            ]
        );
        // Only the line's own ending goes: a carriage return inside stays (and is escaped).
        assert_eq!(lines(&[b"a\rb\n"]), [("a\rb".into(), false)]);
    }

    #[test]
    fn a_long_line_is_cut_at_once_and_its_rest_discarded() {
        let long = vec![b'x'; 3 * LOG_LINE_MAX];
        let lines = lines(&[&long, &long, b"x\nnext\n"]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], ("x".repeat(LOG_LINE_MAX), true));
        assert_eq!(lines[1], ("next".into(), false));
        // Exactly the limit, then its newline: whole.
        let exact = [vec![b'y'; LOG_LINE_MAX], b"\n".to_vec()].concat();
        assert_eq!(
            super::tests::lines(&[&exact]),
            [("y".repeat(LOG_LINE_MAX), false)]
        );
    }
}

//! Frames of the process protocol (see `PROTOCOL.md`): a length, a JSON header and a raw body.

use crate::hook::HookSet;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The protocol versions this host speaks, in order of preference.
pub(crate) const VERSIONS: &[u32] = &[1];

/// The minor version of protocol 1 this host speaks: 1 added hooks. A minor version only adds
/// messages and fields that a child of an earlier one never sees unless it asks for them.
pub(crate) const MINOR: u32 = 1;

/// The environment variable naming the child's end of the socket pair.
pub const FD_VARIABLE: &str = "PLUGLET_PLUGIN_FD";

/// The file descriptor number the child's end of the socket has.
pub(crate) const CHILD_FD: i32 = 3;

/// One frame: its header and its body.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) header: Header,
    pub(crate) body: Vec<u8>,
}

/// The shared memory `hello` offers: its size and its rings' shape, which a child that takes it
/// checks against its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct RingOffer {
    /// The size of the memory, in bytes.
    pub(crate) size: u64,
    /// Slots in each of its two rings.
    pub(crate) slots: u32,
    /// Bytes of a slot, its head included.
    pub(crate) slot_size: u32,
}

/// A message of the protocol. Fields unknown to this version are ignored when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Header {
    /// Host to child, first: the versions the host speaks and the instance's configuration.
    Hello {
        versions: Vec<u32>,
        /// The minor version of the protocol the host speaks ([`MINOR`]).
        #[serde(default)]
        minor: u32,
        instance: String,
        config: serde_json::Value,
        /// The shared memory offered for calls and answers (Linux), whose descriptor is
        /// attached to the frame's first byte.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring: Option<RingOffer>,
    },
    /// Child to host, first: the chosen version, the plugin's name and version, its routes,
    /// and the hooks it has (protocol 1.1; none when absent).
    Welcome {
        version: u32,
        name: String,
        plugin_version: String,
        #[serde(default)]
        routes: Vec<RouteSpec>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hooks: Vec<String>,
        /// Whether it takes the shared memory `hello` offered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ring: bool,
    },
    /// Child to host, first, instead of `welcome`: the plugin refuses to run.
    Refuse { error: String },
    /// Host to child: start the instance.
    Start { id: u64 },
    /// Host to child: stop the instance.
    Stop { id: u64 },
    /// Child to host: the outcome of `start` or `stop`.
    Result {
        id: u64,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routes: Option<Vec<RouteSpec>>,
    },
    /// Host to child: a request; the body is the request body.
    Call {
        id: u64,
        route: usize,
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        params: Vec<(String, String)>,
        /// How long, from when the call is sent, the host waits for its answer, in
        /// milliseconds: a call still waiting for a thread after that may be skipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// Child to host: the answer to a call; the body is the response body.
    Response {
        id: u64,
        #[serde(default = "ok_status")]
        status: u16,
        #[serde(default)]
        headers: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Set by the worker of a plugin library when the handler panicked.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        panicked: bool,
        /// The call was not run: the child has as many calls waiting as it takes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
    /// Host to child (1.1): the `on_request` hook; the body is the request body.
    OnRequest {
        id: u64,
        #[serde(flatten)]
        request: HookRequest,
    },
    /// Host to child (1.1): the `on_response` hook; the body is the request body
    /// (`request_body_len` bytes), then the response body.
    OnResponse {
        id: u64,
        #[serde(flatten)]
        request: HookRequest,
        request_body_len: usize,
        status: u16,
        response_headers: Vec<(String, String)>,
    },
    /// Host to child (1.1): the `on_connect` hook.
    OnConnect {
        id: u64,
        client: String,
        local: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// Host to child (1.1): the `on_disconnect` hook, told and not answered.
    OnDisconnect {
        client: String,
        local: String,
        requests: u64,
        bytes_in: u64,
        bytes_out: u64,
        duration_us: u64,
    },
    /// Child to host (1.1): the answer to a hook.
    HookResult(HookResult),
    /// Host to child: answer `pong` promptly.
    Ping { id: u64 },
    /// Child to host: the answer to `ping`.
    Pong { id: u64 },
    /// Child to host: a line for the host's log.
    Log {
        level: u32,
        message: String,
        /// Before `welcome`: the plugin's name, which the welcome will give (a worker says it
        /// from the moment it has loaded its library); its lines are tagged with it from then on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plugin: Option<String>,
    },
}

fn ok_status() -> u16 {
    200
}

/// What `on_request` and `on_response` carry of the request (its body is the frame's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HookRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    /// The client's address, `IP:PORT`; empty when the request came through no socket.
    pub(crate) client: String,
    /// The host's address the client connected to; empty as `client`.
    pub(crate) local: String,
    /// How long, from when the hook is sent, the host waits for its answer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deadline_ms: Option<u64>,
}

/// The answer to a hook, `hook_result`. Every field but `id` is optional: an answer without
/// any goes on, unchanged (and accepts a connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HookResult {
    pub(crate) id: u64,
    /// `on_request`, `on_response`: changes to the request's or the response's headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) edits: Vec<Edit>,
    /// `on_request`: answer now, with `status`, `headers` and the frame's body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) respond: bool,
    /// `on_request` with `respond`: the status (default 200); `on_response`: the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// `on_request` with `respond`: the response's headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) headers: Vec<(String, String)>,
    /// `on_response`: the frame's body replaces the response's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) body: bool,
    /// `on_connect`: close the connection (`error` beside it says why, for the log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) refuse: bool,
    /// The hook failed, for this reason (or, beside `refuse`, why it refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The hook panicked (or threw).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) panicked: bool,
    /// The hook was not run: the child has as many calls waiting as it takes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) busy: bool,
}

/// A change to a list of headers that a hook asks for, in `hook_result`'s `edits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Edit {
    /// Append a header.
    Add { name: String, value: String },
    /// Replace every header of the name with this one.
    Set { name: String, value: String },
    /// Remove every header of the name.
    Remove { name: String },
}

/// Every hook of protocol 1.1.
const ALL_HOOKS: HookSet = HookSet {
    on_request: true,
    on_response: true,
    on_connect: true,
    on_disconnect: true,
};

/// The hooks a child lists in `welcome`, by their names; an error naming one that protocol
/// 1.1 does not have.
pub(crate) fn hook_set(names: &[String]) -> Result<HookSet, String> {
    let mut hooks = HookSet::default();
    for name in names {
        let has = match name.as_str() {
            "on_request" => &mut hooks.on_request,
            "on_response" => &mut hooks.on_response,
            "on_connect" => &mut hooks.on_connect,
            "on_disconnect" => &mut hooks.on_disconnect,
            _ => {
                return Err(format!(
                    "its welcome lists the hook {name:?}, which protocol {}.{MINOR} does not \
                     have: the hooks are {}",
                    VERSIONS[0],
                    ALL_HOOKS.names().join(", ")
                ));
            }
        };
        *has = true;
    }
    Ok(hooks)
}

/// Headers as the protocol carries them: values as text, bytes that are not UTF-8 replaced
/// with U+FFFD.
pub(crate) fn text_headers<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Vec<(String, String)> {
    headers
        .map(|(name, value)| (name.to_owned(), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

/// A response's headers as the protocol carries them (see [`text_headers`]).
pub(crate) fn map_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    text_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

/// A route as the protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteSpec {
    /// An upper-case HTTP method token.
    pub(crate) method: String,
    /// A path pattern.
    pub(crate) path: String,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The other end closed the socket between frames.
    #[error("the connection was closed")]
    Closed,
    /// Reading failed, or the socket closed in the middle of a frame.
    #[error("reading failed: {0}")]
    Io(#[from] io::Error),
    /// A frame over the limit, refused before anything was allocated for it.
    #[error("a frame of {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// A frame that breaks the protocol.
    #[error("a malformed frame: {0}")]
    Malformed(String),
}

/// Reads one frame of at most `limit` bytes (after the length word).
pub(crate) fn read_frame(reader: &mut impl Read, limit: u64) -> Result<Frame, ReadError> {
    let mut word = [0u8; 4];
    // A clean end of stream is only allowed between frames.
    let mut filled = 0;
    while filled < 4 {
        match reader.read(&mut word[filled..]) {
            Ok(0) if filled == 0 => return Err(ReadError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let size = u64::from(u32::from_be_bytes(word));
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    if size < 4 {
        return Err(ReadError::Malformed(format!(
            "a frame of {size} bytes cannot hold its header length"
        )));
    }
    reader.read_exact(&mut word)?;
    let header_len = u64::from(u32::from_be_bytes(word));
    if header_len > size - 4 {
        return Err(ReadError::Malformed(format!(
            "a header of {header_len} bytes in a frame of {size}"
        )));
    }
    // `size <= limit`, which the caller chose to be allocatable.
    let mut rest = vec![0u8; (size - 4) as usize];
    reader.read_exact(&mut rest)?;
    let body = rest.split_off(header_len as usize);
    let header = serde_json::from_slice(&rest).map_err(|e| {
        let shown = String::from_utf8_lossy(&rest[..rest.len().min(80)]).into_owned();
        ReadError::Malformed(format!("{e} in the header {shown:?}"))
    })?;
    Ok(Frame { header, body })
}

/// Encodes a frame into `out`, ready for one write; its body is the `body` parts, one after
/// the other.
pub(crate) fn encode(header: &Header, body: &[&[u8]], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    serde_json::to_writer(&mut *out, header).expect("a header always serializes");
    let header_len = out.len() - start - 8;
    for part in body {
        out.extend_from_slice(part);
    }
    let size = out.len() - start - 4;
    let size = u32::try_from(size).expect("a frame under 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&(header_len as u32).to_be_bytes());
}

/// What the writer thread is sent.
enum Outgoing {
    /// An encoded frame (empty: only a wake-up, to write the rest of a frame).
    Frame(Vec<u8>),
    /// Answered once everything sent before is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// A frame the outbox refused because too many bytes are queued already (see
/// [`Outbox::send_capped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// The bytes queued and not yet written when the frame was refused.
    pub(crate) queued: usize,
    /// The outbox's limit.
    pub(crate) limit: usize,
    /// Whether this is the first refusal since the queue was last under half its limit: the
    /// one an episode is reported for.
    pub(crate) first: bool,
}

/// Why a frame was not sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Refused: the queue is past its limit.
    Backlog(Backlog),
    /// The socket failed, or the writer thread ended.
    Io(io::Error),
}

/// The most frames the writer thread hands the socket in one system call.
const SLICES: usize = 64;

/// How many bytes the writer thread gathers before it writes (more may come with the last
/// frame).
const BATCH: usize = 1 << 20;

/// How frames reach a socket. A sender that asks for it writes its frame at once, without
/// blocking, when nothing is queued and the socket takes it: no hop to another thread, the
/// lowest latency. Otherwise the frame (or its rest) is queued for a writer thread, which may
/// block, and which writes all that is queued in one go: under load, one system call, and one
/// wake-up of the reader at the other end, carry many frames.
///
/// The bytes queued and not yet written are counted, the rest of a partly written frame
/// included, and released as they are written. Frames sent with [`send_capped`] are refused
/// while that count is at or past the outbox's limit, so a reader that stops reading holds the
/// limit and one frame, never more; the frames of [`send`] (the lifecycle, liveness checks,
/// answers) are never refused.
///
/// Dropping the outbox closes its queue: the writer thread writes what is queued and ends. When
/// a write fails (the other end closed, or the socket was shut down) the thread ends at once,
/// what was queued is dropped with it, and the outbox is closed: every frame sent from then on,
/// capped or not, fails with that write's error (never a refusal for a backlog that is gone).
///
/// [`send`]: Outbox::send
/// [`send_capped`]: Outbox::send_capped
pub(crate) struct Outbox {
    socket: std::os::unix::net::UnixStream,
    queue: std::sync::mpsc::Sender<Outgoing>,
    shared: std::sync::Arc<OutboxShared>,
    limit: usize,
}

/// What the senders and the writer thread share (not the queue's sender: the thread must not
/// keep its own queue open).
#[derive(Default)]
struct OutboxShared {
    /// Frames queued and not yet written; while any are, senders queue behind them.
    waiting: std::sync::atomic::AtomicUsize,
    /// Bytes queued and not yet written, the rest of a partly written frame included.
    queued: std::sync::atomic::AtomicUsize,
    /// Set by the first refusal of an episode; cleared when the queue is back under half the
    /// limit, so that an episode is reported once, however many frames it refuses.
    backlogged: std::sync::atomic::AtomicBool,
    /// Held while bytes go out, by a sender or by the writer thread, so frames never mix.
    writing: parking_lot::Mutex<()>,
    /// Set when a write of the writer thread failed, with its error: the outbox is closed.
    failed: std::sync::OnceLock<(io::ErrorKind, String)>,
    /// The rest of a frame a sender could only write in part: written before anything else.
    rest: parking_lot::Mutex<Vec<u8>>,
}

impl Outbox {
    /// An outbox writing to `socket`, with its writer thread, that refuses capped frames while
    /// `limit` bytes or more are queued. If a write of the thread fails, `failed` runs and the
    /// thread ends.
    pub(crate) fn start(
        socket: std::os::unix::net::UnixStream,
        limit: usize,
        failed: impl FnOnce(io::Error) + Send + 'static,
    ) -> io::Result<std::sync::Arc<Self>> {
        use std::sync::atomic::Ordering;
        let (queue, queued) = std::sync::mpsc::channel::<Outgoing>();
        let outbox = std::sync::Arc::new(Outbox {
            socket: socket.try_clone()?,
            queue,
            shared: std::sync::Arc::default(),
            limit,
        });
        let this = outbox.shared.clone();
        let mut socket = socket;
        std::thread::Builder::new()
            .name("plugin-writer".into())
            .spawn(move || {
                let mut frames = std::collections::VecDeque::new();
                let mut flushed = Vec::new();
                while let Ok(first) = queued.recv() {
                    let _writing = this.writing.lock();
                    let rest = std::mem::take(&mut *this.rest.lock());
                    let mut bytes = rest.len();
                    if !rest.is_empty() {
                        frames.push_back(rest);
                    }
                    let mut count = 0;
                    let mut next = Some(first);
                    while let Some(outgoing) = next.take() {
                        match outgoing {
                            Outgoing::Frame(frame) => {
                                count += 1;
                                bytes += frame.len();
                                if !frame.is_empty() {
                                    frames.push_back(frame);
                                }
                            }
                            Outgoing::Flush(done) => flushed.push(done),
                        }
                        if bytes < BATCH {
                            next = queued.try_recv().ok();
                        }
                    }
                    let written = write_frames(&mut socket, &mut frames, &this.queued);
                    this.waiting.fetch_sub(count, Ordering::Release);
                    if let Err(e) = written {
                        // `frames` and the queue's receiver go with the thread: what was
                        // queued is dropped, and later frames fail with this error.
                        let _ = this.failed.set((e.kind(), e.to_string()));
                        this.queued.store(0, Ordering::Release);
                        failed(e);
                        return;
                    }
                    if this.backlogged.load(Ordering::Relaxed)
                        && this.queued.load(Ordering::Acquire) < limit / 2
                    {
                        this.backlogged.store(false, Ordering::Release);
                    }
                    for done in flushed.drain(..) {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(outbox)
    }

    /// Sends an encoded frame: written at once when `now` and nothing is queued and the socket
    /// takes it without blocking, queued otherwise. Never refused. Fails when the socket failed.
    pub(crate) fn send(&self, frame: Vec<u8>, now: bool) -> io::Result<()> {
        self.push(frame, now, false).map_err(|e| match e {
            SendError::Io(e) => e,
            SendError::Backlog(_) => unreachable!("an uncapped frame is never refused"),
        })
    }

    /// Sends an encoded frame as [`send`](Outbox::send) does, unless the bytes queued are at
    /// or past the limit: then the frame is refused (and dropped at once).
    pub(crate) fn send_capped(&self, frame: Vec<u8>, now: bool) -> Result<(), SendError> {
        self.admit()?;
        self.push(frame, now, true)
    }

    /// Whether a capped frame would be taken now: a check before it is built. A frame may
    /// still be refused when it is sent, if others filled the queue meanwhile. The error of a
    /// closed outbox comes first: its queue is gone.
    pub(crate) fn admit(&self) -> Result<(), SendError> {
        use std::sync::atomic::Ordering;
        self.open()?;
        let queued = self.shared.queued.load(Ordering::Acquire);
        if queued < self.limit {
            return Ok(());
        }
        Err(SendError::Backlog(self.refused(queued)))
    }

    /// The error of the write that closed the outbox, if one did.
    fn open(&self) -> Result<(), SendError> {
        match self.shared.failed.get() {
            None => Ok(()),
            Some((kind, message)) => Err(SendError::Io(io::Error::new(*kind, message.clone()))),
        }
    }

    /// The bytes queued and not yet written.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.shared
            .queued
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn refused(&self, queued: usize) -> Backlog {
        use std::sync::atomic::Ordering;
        Backlog {
            queued,
            limit: self.limit,
            first: !self.shared.backlogged.swap(true, Ordering::AcqRel),
        }
    }

    fn push(&self, frame: Vec<u8>, now: bool, capped: bool) -> Result<(), SendError> {
        use std::sync::atomic::Ordering;
        self.open()?;
        let shared = &*self.shared;
        if now
            && shared.waiting.load(Ordering::Acquire) == 0
            && let Some(_writing) = shared.writing.try_lock()
            && shared.waiting.load(Ordering::Acquire) == 0
        {
            let socket = socket2::SockRef::from(&self.socket);
            match socket.send_with_flags(&frame, libc::MSG_DONTWAIT) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => {
                    // Begun, so never refused: the rest goes first when the writer thread
                    // next writes; an empty frame wakes it up.
                    let rest = frame.len() - n;
                    shared.queued.fetch_add(rest, Ordering::AcqRel);
                    shared.rest.lock().extend_from_slice(&frame[n..]);
                    drop(frame);
                    return self.queue(Outgoing::Frame(Vec::new()), 0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(SendError::Io(e)),
            }
        }
        // Counted before it is queued: a capped frame that finds the count at or past the
        // limit takes its bytes back and is refused. However senders race, capped frames never
        // fill the queue past the limit and the one frame that crossed it.
        let bytes = frame.len();
        let before = shared.queued.fetch_add(bytes, Ordering::AcqRel);
        if capped && before >= self.limit {
            shared.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(SendError::Backlog(self.refused(before)));
        }
        self.queue(Outgoing::Frame(frame), bytes)
    }

    /// Waits, at most a second, until everything sent before is written.
    pub(crate) fn flush(&self) {
        let (done, flushed) = std::sync::mpsc::sync_channel(1);
        if self.queue(Outgoing::Flush(done), 0).is_ok() {
            let _ = flushed.recv_timeout(std::time::Duration::from_secs(1));
        }
    }

    /// Queues `outgoing`, whose `bytes` are already counted.
    fn queue(&self, outgoing: Outgoing, bytes: usize) -> Result<(), SendError> {
        use std::sync::atomic::Ordering;
        if let Outgoing::Frame(_) = outgoing {
            self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        }
        self.queue.send(outgoing).map_err(|_| {
            // The writer thread ended (its socket failed), dropping what was queued: this
            // frame goes the same way.
            self.shared.queued.fetch_sub(bytes, Ordering::AcqRel);
            self.open()
                .err()
                .unwrap_or_else(|| SendError::Io(io::ErrorKind::BrokenPipe.into()))
        })
    }
}

/// Writes `frames` in order, as few system calls as the socket allows, taking each frame's
/// bytes off `queued` as they go out and dropping each frame once it is written.
fn write_frames(
    socket: &mut impl Write,
    frames: &mut std::collections::VecDeque<Vec<u8>>,
    queued: &std::sync::atomic::AtomicUsize,
) -> io::Result<()> {
    // How much of the first frame is written.
    let mut offset = 0;
    while let Some(front) = frames.front() {
        let mut slices = [io::IoSlice::new(&[]); SLICES];
        slices[0] = io::IoSlice::new(&front[offset..]);
        let mut count = 1;
        for (slice, frame) in slices[1..].iter_mut().zip(frames.iter().skip(1)) {
            *slice = io::IoSlice::new(frame);
            count += 1;
        }
        let mut written = match socket.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        queued.fetch_sub(written, std::sync::atomic::Ordering::AcqRel);
        while written > 0 {
            let left = frames[0].len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            offset = 0;
            frames.pop_front();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(header: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_frame_round_trips_with_a_raw_body() {
        let header = Header::Response {
            id: 7,
            status: 201,
            headers: vec![("x-a".into(), "1".into())],
            error: None,
            panicked: false,
            busy: false,
        };
        let body = [0u8, 255, 10, 13];
        let mut out = Vec::new();
        encode(&header, &[&body], &mut out);
        let read = read_frame(&mut out.as_slice(), 1 << 20).unwrap();
        assert_eq!((read.header, read.body.as_slice()), (header, &body[..]));
    }

    /// `header` as the JSON object a frame carries.
    fn json(header: &Header) -> serde_json::Value {
        let mut out = Vec::new();
        encode(header, &[], &mut out);
        serde_json::from_slice(&out[8..]).unwrap()
    }

    /// The header of a frame whose JSON header is `text`.
    fn parsed(text: &str) -> Result<Header, ReadError> {
        let bytes = frame(text.as_bytes(), b"");
        read_frame(&mut bytes.as_slice(), 1 << 20).map(|frame| frame.header)
    }

    #[test]
    fn hello_says_minor_1_and_a_welcome_without_hooks_has_none() {
        let hello = Header::Hello {
            versions: VERSIONS.to_vec(),
            minor: MINOR,
            instance: "i".into(),
            config: serde_json::json!({}),
            ring: None,
        };
        assert_eq!(
            json(&hello),
            serde_json::json!({"type": "hello", "versions": [1], "minor": 1, "instance": "i",
                               "config": {}})
        );
        // A 1.0 program's welcome.
        let Header::Welcome { hooks, .. } =
            parsed(r#"{"type":"welcome","version":1,"name":"p","plugin_version":"1"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(hook_set(&hooks), Ok(HookSet::default()));
        let Header::Welcome { hooks, .. } = parsed(
            r#"{"type":"welcome","version":1,"name":"p","plugin_version":"1",
                "hooks":["on_response","on_connect"]}"#,
        )
        .unwrap() else {
            panic!()
        };
        let expected = HookSet {
            on_response: true,
            on_connect: true,
            ..HookSet::default()
        };
        assert_eq!(hook_set(&hooks), Ok(expected));
    }

    #[test]
    fn a_welcome_listing_a_hook_protocol_1_1_does_not_have_is_refused() {
        let error = hook_set(&["on_request".into(), "on_requests".into()]).unwrap_err();
        assert_eq!(
            error,
            "its welcome lists the hook \"on_requests\", which protocol 1.1 does not have: the \
             hooks are on_request, on_response, on_connect, on_disconnect"
        );
    }

    #[test]
    fn hook_messages_have_the_fields_protocol_md_documents() {
        let request = HookRequest {
            method: "GET".into(),
            path: "/a".into(),
            query: "q=1".into(),
            headers: vec![("x-a".into(), "1".into())],
            client: "127.0.0.1:5".into(),
            local: "127.0.0.1:80".into(),
            deadline_ms: Some(30),
        };
        let fields = serde_json::json!({"method": "GET", "path": "/a", "query": "q=1",
            "headers": [["x-a", "1"]], "client": "127.0.0.1:5", "local": "127.0.0.1:80",
            "deadline_ms": 30});
        let with = |mut object: serde_json::Value, more: serde_json::Value| {
            object
                .as_object_mut()
                .unwrap()
                .extend(more.as_object().unwrap().clone());
            object
        };
        let on_request = Header::OnRequest {
            id: 4,
            request: request.clone(),
        };
        assert_eq!(
            json(&on_request),
            with(
                fields.clone(),
                serde_json::json!({"type": "on_request", "id": 4})
            )
        );
        let on_response = Header::OnResponse {
            id: 5,
            request,
            request_body_len: 2,
            status: 201,
            response_headers: vec![("x-b".into(), "2".into())],
        };
        assert_eq!(
            json(&on_response),
            with(
                fields,
                serde_json::json!({"type": "on_response", "id": 5, "request_body_len": 2,
                                   "status": 201, "response_headers": [["x-b", "2"]]})
            )
        );
        let on_disconnect = Header::OnDisconnect {
            client: "c".into(),
            local: "l".into(),
            requests: 1,
            bytes_in: 2,
            bytes_out: 3,
            duration_us: 4,
        };
        assert_eq!(
            json(&on_disconnect),
            serde_json::json!({"type": "on_disconnect", "client": "c", "local": "l",
                               "requests": 1, "bytes_in": 2, "bytes_out": 3, "duration_us": 4})
        );
        // Each read back as it was written, as the worker reads them.
        for header in [on_request, on_response, on_disconnect] {
            let mut out = Vec::new();
            encode(&header, &[b"ab", b"cd"], &mut out);
            let read = read_frame(&mut out.as_slice(), 1 << 20).unwrap();
            assert_eq!((read.header, read.body.as_slice()), (header, &b"abcd"[..]));
        }
    }

    #[test]
    fn a_hook_result_reads_with_its_defaults_and_its_edits_in_order() {
        let header = parsed(
            r#"{"type":"hook_result","id":9,"edits":[{"op":"set","name":"a","value":"1"},
                {"op":"remove","name":"b"},{"op":"add","name":"c","value":"3"}],"later":true}"#,
        )
        .unwrap();
        let expected = HookResult {
            id: 9,
            edits: vec![
                Edit::Set {
                    name: "a".into(),
                    value: "1".into(),
                },
                Edit::Remove { name: "b".into() },
                Edit::Add {
                    name: "c".into(),
                    value: "3".into(),
                },
            ],
            ..HookResult::default()
        };
        assert_eq!(header, Header::HookResult(expected));
        let error = parsed(r#"{"type":"hook_result","id":9,"edits":[{"op":"rename","name":"a"}]}"#)
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `rename`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_defaults_filled_in() {
        let bytes = frame(br#"{"type":"response","id":3,"future":[1,2]}"#, b"hi");
        let read = read_frame(&mut bytes.as_slice(), 1 << 20).unwrap();
        let Header::Response { id, status, .. } = read.header else {
            panic!("{:?}", read.header)
        };
        assert_eq!((id, status, read.body.as_slice()), (3, 200, &b"hi"[..]));
    }

    #[test]
    fn an_oversize_frame_is_refused_before_it_is_read() {
        // Only the length word exists: reading any further would fail differently.
        let bytes = u32::MAX.to_be_bytes();
        let error = read_frame(&mut bytes.as_slice(), 1 << 20).unwrap_err();
        assert!(
            matches!(
                error,
                ReadError::TooLarge {
                    size: 4294967295,
                    limit: 1048576
                }
            ),
            "{error}"
        );
    }

    /// Waits at most 10 s for `done`.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Sends capped frames of `size` bytes until one is refused; returns the refusal.
    fn fill(outbox: &Outbox, size: usize) -> Backlog {
        for _ in 0..10_000 {
            match outbox.send_capped(vec![7; size], false) {
                Ok(()) => {}
                Err(SendError::Backlog(backlog)) => return backlog,
                Err(SendError::Io(e)) => panic!("{e}"),
            }
        }
        panic!("never refused")
    }

    #[test]
    fn the_outbox_caps_what_a_reader_that_stops_reading_makes_it_queue() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let failed = std::sync::Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let limit = 1 << 20;
        let outbox =
            Outbox::start(ours, limit, move |_| flag.store(true, Ordering::SeqCst)).unwrap();
        // Nobody reads: once the socket's buffer is full, frames of 256 KiB queue up to the
        // limit, and the one that crosses it.
        let frame = 256 << 10;
        let backlog = fill(&outbox, frame);
        assert_eq!((backlog.limit, backlog.first), (limit, true));
        assert!(backlog.queued >= limit && outbox.queued() < limit + frame);
        // The same episode: not reported again. Uncapped frames still go.
        let again = fill(&outbox, frame);
        assert!(!again.first);
        outbox.send(vec![1; 10], false).unwrap();
        // Read, and the count goes down as the bytes go out; under half the limit, the episode
        // is over, and the next one is reported again.
        theirs.set_nonblocking(true).unwrap();
        let mut buffer = vec![0; 64 << 10];
        wait_for("drained", || {
            while (&theirs).read(&mut buffer).is_ok_and(|n| n > 0) {}
            outbox.queued() == 0
        });
        while (&theirs).read(&mut buffer).is_ok_and(|n| n > 0) {}
        assert!(fill(&outbox, frame).first);
        // The other end goes away: the writer thread fails and drops what it had queued, and
        // frames are refused from then on.
        drop(theirs);
        wait_for("failed", || failed.load(Ordering::SeqCst));
        wait_for("refusing", || outbox.send(vec![3; 10], false).is_err());
    }

    #[test]
    fn a_failed_outbox_answers_its_error_not_a_backlog() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let failed = std::sync::Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let outbox =
            Outbox::start(ours, 1 << 20, move |_| flag.store(true, Ordering::SeqCst)).unwrap();
        // Full, then the reader goes away with the queue full: its bytes are gone with the
        // writer thread, and so is the backlog.
        fill(&outbox, 256 << 10);
        drop(theirs);
        wait_for("failed", || failed.load(Ordering::SeqCst));
        let is_io = |result: Result<(), SendError>| match result {
            Err(SendError::Io(_)) => true,
            other => panic!("{other:?}"),
        };
        assert!(is_io(outbox.admit()));
        assert!(is_io(outbox.send_capped(vec![1; 10], true)));
        assert!(outbox.send(vec![1; 10], true).is_err());
        assert_eq!(outbox.queued(), 0);
    }

    #[test]
    fn garbage_is_malformed_and_a_cut_frame_is_an_error() {
        let bytes = frame(b"not json", b"");
        let error = read_frame(&mut bytes.as_slice(), 1 << 20).unwrap_err();
        assert!(matches!(error, ReadError::Malformed(_)), "{error}");
        let bytes = frame(br#"{"type":"launch"}"#, b"");
        let error = read_frame(&mut bytes.as_slice(), 1 << 20).unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `launch`"),
            "{error}"
        );
        let mut bytes = frame(br#"{"type":"pong","id":1}"#, b"");
        bytes[7] = 200; // a header longer than the frame
        let error = read_frame(&mut bytes.as_slice(), 1 << 20).unwrap_err();
        assert!(matches!(error, ReadError::Malformed(_)), "{error}");
        let bytes = frame(br#"{"type":"pong","id":1}"#, b"");
        let error = read_frame(&mut &bytes[..10], 1 << 20).unwrap_err();
        assert!(matches!(error, ReadError::Io(_)), "{error}");
        assert!(matches!(
            read_frame(&mut &b""[..], 1 << 20),
            Err(ReadError::Closed)
        ));
    }
}

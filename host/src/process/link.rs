//! The live connection to one child: the handshake, a reader thread that routes answers to
//! their callers by id, and a writer thread, so that no caller ever blocks on the socket (a
//! child that stops reading cannot stall the host, nor make it hold more than
//! `ProcessOptions::queue_limit` for it: past it, calls are refused).

use super::child::{self, Started};
use super::output::Output;
#[cfg(target_os = "linux")]
use super::ring;
use super::wire::{self, Frame, Header, ReadError, RouteSpec, SendError};
use crate::hook::HookSet;
use crate::pluginlog::{self, LogLimiter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// What the child said of itself in `welcome`.
#[derive(Debug, Clone)]
pub(crate) struct Welcome {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) routes: Vec<RouteSpec>,
    /// The hooks it has (protocol 1.1; none for a 1.0 child).
    pub(crate) hooks: HookSet,
}

/// Why a call got no answer.
#[derive(Debug, Clone)]
pub(crate) enum Lost {
    /// The child died, or broke the protocol and was stopped: the reason.
    Child(String),
    /// No answer within the time given (for calls that wait synchronously).
    Timeout(Duration),
    /// Refused before it was sent: the bytes queued towards the child are past their limit.
    Backlogged(wire::Backlog),
}

/// Where an answer goes.
enum Waiter {
    Blocking(mpsc::SyncSender<Result<Frame, Lost>>),
    Async(tokio::sync::oneshot::Sender<Result<Frame, Lost>>),
}

impl Waiter {
    fn send(self, answer: Result<Frame, Lost>) {
        match self {
            Waiter::Blocking(sender) => {
                let _ = sender.try_send(answer);
            }
            Waiter::Async(sender) => {
                let _ = sender.send(answer);
            }
        }
    }
}

/// The state the reader, the writer and the callers share.
struct Shared {
    /// Calls waiting for an answer, by id; `None` once the link is down, with the reason.
    pending: Mutex<Result<HashMap<u64, Waiter>, String>>,
    next_id: AtomicU64,
}

impl Shared {
    /// Fails every waiting call with `reason`, and every later one; the first reason stays,
    /// and is returned.
    fn fail_all(&self, reason: &str) -> String {
        let waiting = {
            let mut pending = self.pending.lock();
            match std::mem::replace(&mut *pending, Err(reason.to_owned())) {
                Ok(waiting) => waiting,
                Err(first) => {
                    *pending = Err(first.clone());
                    return first;
                }
            }
        };
        for (_, waiter) in waiting {
            waiter.send(Err(Lost::Child(reason.to_owned())));
        }
        reason.to_owned()
    }

    /// Hands the answer `frame` to its caller: an answer to an id never sent is a violation of
    /// the protocol (the reason); one nobody waits for any more (its call timed out) is dropped.
    #[cfg(target_os = "linux")]
    fn deliver(&self, frame: Frame) -> Result<(), String> {
        let id = match &frame.header {
            Header::Response { id, .. } | Header::HookResult(wire::HookResult { id, .. }) => *id,
            other => {
                return Err(format!(
                    "the plugin process broke the protocol: it wrote {other:?} in the shared \
                     memory, where only answers go"
                ));
            }
        };
        if id == 0 || id >= self.next_id.load(Ordering::Acquire) {
            return Err(format!(
                "the plugin process broke the protocol: it wrote an answer to message {id} in \
                 the shared memory, which the host never sent"
            ));
        }
        let waiter = match &mut *self.pending.lock() {
            Ok(waiting) => waiting.remove(&id),
            Err(_) => None,
        };
        if let Some(waiter) = waiter {
            waiter.send(Ok(frame));
        }
        Ok(())
    }
}

/// One running child and its connection.
pub(crate) struct Link {
    shared: Arc<Shared>,
    outbox: Option<Arc<wire::Outbox>>,
    /// The host's end of the socket, to shut it down (which ends the reader and the writer).
    socket: UnixStream,
    /// The process, until it is reaped.
    child: Mutex<Option<Child>>,
    pid: u32,
    /// How what the child starts is contained (which decides where signals go).
    containment: child::Containment,
    /// The copy of its standard output and error, told to end once the process is reaped.
    output: Option<Output>,
    /// The instance's log: its rate limit.
    log: Arc<LogLimiter>,
    /// The ring of calls and the bell of the ring of answers, when the child took the shared
    /// memory.
    #[cfg(target_os = "linux")]
    fast: Option<Fast>,
}

/// The host's ends of the shared memory of a child that took it (see `ring.rs`).
#[cfg(target_os = "linux")]
struct Fast {
    /// Calls and hooks towards the child.
    calls: Mutex<ring::Producer>,
    /// The bell of the ring of answers, which wakes its reader when the link goes down.
    answers: ring::Bell,
}

/// Options of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkOptions {
    /// The largest frame accepted from the child.
    pub(crate) frame_limit: u64,
    /// How long the child has to answer `hello`.
    pub(crate) handshake_timeout: Duration,
    /// The most bytes of calls and hooks queued towards the child, not yet written (see
    /// [`wire::Outbox`]): past it, calls and hooks are refused.
    pub(crate) queue_limit: usize,
}

impl Link {
    /// Starts the child, sends `hello` and waits for `welcome`. What it logs (its `log`
    /// messages and its output lines) passes `log`'s rate limit, tagged with the names `log`
    /// holds: the ones it came with until the child says its plugin's name (see
    /// [`Link::handshake`]); `log` holds its output lines back until then, or until the
    /// handshake ends. A child that replaces another says the plugin's name `plugin`, or is
    /// refused before its names tag anything. `on_down` runs once, on the reader thread, when
    /// the link goes down for whatever reason after the handshake.
    pub(crate) fn open(
        spec: child::Spec,
        instance: &str,
        plugin: Option<&str>,
        config: &serde_json::Value,
        options: LinkOptions,
        log: &Arc<LogLimiter>,
        on_down: impl FnOnce(String) + Send + 'static,
    ) -> Result<(Arc<Link>, Welcome), String> {
        let Started {
            child,
            socket,
            containment,
        } = child::start(spec.clone())
            .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
        let pid = child.id();
        let mut link = Link {
            shared: Arc::new(Shared {
                pending: Mutex::new(Ok(HashMap::new())),
                next_id: AtomicU64::new(1),
            }),
            outbox: None,
            socket,
            child: Mutex::new(Some(child)),
            pid,
            containment,
            output: None,
            log: Arc::clone(log),
            #[cfg(target_os = "linux")]
            fast: None,
        };
        // Copied from the start: a program may write before it answers `hello`.
        if let Some(child) = link.child.get_mut() {
            match Output::start(child, Arc::clone(log)) {
                Ok(output) => link.output = Some(output),
                Err(e) => {
                    link.kill();
                    return Err(format!("cannot start the copy of its output: {e}"));
                }
            }
        }
        // A fresh shared memory for each process, offered in `hello`; without one (the system
        // refuses a memfd), the socket carries everything.
        #[cfg(target_os = "linux")]
        let memory = ring::Memory::create().ok().map(Arc::new);
        #[cfg(target_os = "linux")]
        let offer = memory.as_deref();
        #[cfg(not(target_os = "linux"))]
        let offer = None;
        let content = spec.content.as_deref();
        let handshake = link.handshake(instance, plugin, config, options, content, offer);
        // Named, or never to be: the output lines held back go out.
        log.settle();
        let (welcome, took_ring) = match handshake {
            Ok(welcome) => welcome,
            Err(reason) => {
                link.kill();
                return Err(reason);
            }
        };
        #[cfg(target_os = "linux")]
        let answers = memory.filter(|_| took_ring).map(|memory| {
            let answers = ring::Consumer::new(memory.clone(), ring::Direction::ToHost);
            link.fast = Some(Fast {
                calls: Mutex::new(ring::Producer::new(memory, ring::Direction::ToChild)),
                answers: answers.bell(),
            });
            answers
        });
        #[cfg(not(target_os = "linux"))]
        let _ = took_ring;
        let writer = link.socket.try_clone().map_err(|e| e.to_string())?;
        let _ = writer.set_write_timeout(Some(crate::limits::CHILD_WRITE_STALL));
        let shared = link.shared.clone();
        let shutdown = link.socket.try_clone().map_err(|e| e.to_string())?;
        link.outbox = Some(
            wire::Outbox::start(writer, options.queue_limit, move |e| {
                shared.fail_all(&format!("writing to the plugin process failed: {e}"));
                let _ = shutdown.shutdown(std::net::Shutdown::Both);
            })
            .map_err(|e| e.to_string())?,
        );
        let link = Arc::new(link);
        let reader = link.socket.try_clone().map_err(|e| e.to_string())?;
        let _ = reader.set_read_timeout(None);
        // Answers that arrive together are read with one system call.
        let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
        let shared = link.shared.clone();
        let limit = options.frame_limit;
        let log = Arc::clone(log);
        let plugin = welcome.name.clone();
        let instance = or_plugin(instance, &welcome.name).to_owned();
        #[cfg(target_os = "linux")]
        if let Some(answers) = answers {
            let shared = link.shared.clone();
            let socket = link.socket.try_clone().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("plugin-ring".into())
                .spawn(move || {
                    if let Some(reason) = ring_loop(answers, &shared) {
                        shared.fail_all(&reason);
                        // The socket's reader then ends, and reports the first reason.
                        let _ = socket.shutdown(std::net::Shutdown::Both);
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        let weak = Arc::downgrade(&link);
        std::thread::Builder::new()
            .name("plugin-reader".into())
            .spawn(move || {
                let names = (plugin.as_str(), instance.as_str());
                let reason = read_loop(&mut reader, limit, &shared, &log, names);
                // A violation found in the shared memory came first.
                let reason = shared.fail_all(&reason);
                if let Some(link) = weak.upgrade() {
                    // A protocol error leaves a live child behind: end it.
                    link.close();
                }
                on_down(reason);
            })
            .map_err(|e| e.to_string())?;
        Ok((link, welcome))
    }

    /// Sends `hello` and reads up to `welcome` (or `refuse`). The child's lines are tagged
    /// with the plugin's name from the moment it says it: in a `log` message before `welcome`
    /// (as a worker does from the moment it has loaded its library, before `create`), or in
    /// `welcome`; the instance's name is `instance`, or else the plugin's. A name other than
    /// `expected` (the plugin of the process this one replaces) is refused before it tags
    /// anything.
    fn handshake(
        &mut self,
        instance: &str,
        expected: Option<&str>,
        config: &serde_json::Value,
        options: LinkOptions,
        content: Option<&std::fs::File>,
        #[cfg(target_os = "linux")] memory: Option<&ring::Memory>,
        #[cfg(not(target_os = "linux"))] memory: Option<std::convert::Infallible>,
    ) -> Result<(Welcome, bool), String> {
        let hello = Header::Hello {
            versions: wire::VERSIONS.to_vec(),
            minor: wire::MINOR,
            instance: instance.to_owned(),
            config: config.clone(),
            #[cfg(target_os = "linux")]
            ring: memory.map(|_| ring::offer()),
            #[cfg(not(target_os = "linux"))]
            ring: None,
        };
        let deadline = options.handshake_timeout;
        let _ = self.socket.set_write_timeout(Some(deadline));
        let started = Instant::now();
        let mut bytes = Vec::with_capacity(256);
        wire::encode(&hello, &[], &mut bytes);
        // The library's content (for a worker) and the memory travel with the first byte of
        // `hello`, in this order.
        #[cfg(target_os = "linux")]
        let sent = {
            use std::os::fd::AsFd;
            let fds: Vec<_> = (content.map(AsFd::as_fd).into_iter())
                .chain(memory.map(ring::Memory::fd))
                .collect();
            if fds.is_empty() {
                std::io::Write::write_all(&mut self.socket, &bytes)
            } else {
                ring::send_with_fds(&self.socket, &bytes, &fds)
            }
        };
        #[cfg(not(target_os = "linux"))]
        let sent = {
            let _ = (content, memory);
            std::io::Write::write_all(&mut self.socket, &bytes)
        };
        if let Err(e) = sent {
            // A program that ended before it read hello: said as if it ended after.
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    self.ended_without_welcome(started)
                }
                _ => format!("sending hello failed: {e}"),
            });
        }
        // Every read waits at most for what is left of the deadline, however the program
        // dribbles its bytes; `log` messages may come before `welcome` (a plugin logging while
        // it starts), but the deadline holds for them too.
        let mut reader = Deadline {
            socket: &self.socket,
            until: started + deadline,
        };
        let mut logs = 0;
        // The plugin's name, once a `log` message said it.
        let mut said: Option<String> = None;
        let frame = loop {
            match wire::read_frame(&mut reader, options.frame_limit) {
                Ok(Frame {
                    header:
                        Header::Log {
                            level,
                            message,
                            plugin,
                        },
                    ..
                }) => {
                    logs += 1;
                    if let Some(plugin) = plugin
                        && said.as_ref() != Some(&plugin)
                    {
                        check_name(&plugin, expected, "a log message")?;
                        if let Some(before) = &said {
                            return Err(format!(
                                "its log messages gave the plugin two names, {before:?} then \
                                 {plugin:?}"
                            ));
                        }
                        self.log.rename(&plugin, or_plugin(instance, &plugin));
                        said = Some(plugin);
                    }
                    let names = self.log.names();
                    let bytes = message.as_bytes();
                    pluginlog::message(&self.log, level, &names.plugin, &names.instance, bytes);
                }
                other => break other,
            }
        };
        let _ = self.socket.set_write_timeout(None);
        match frame {
            Ok(Frame {
                header:
                    Header::Welcome {
                        version,
                        name,
                        plugin_version,
                        routes,
                        hooks,
                        ring,
                    },
                ..
            }) => {
                if ring && memory.is_none() {
                    return Err(
                        "its welcome took the shared memory, which hello did not offer".to_owned(),
                    );
                }
                if !wire::VERSIONS.contains(&version) {
                    return Err(format!(
                        "it chose protocol version {version}, which this host does not speak \
                         (it offered {:?})",
                        wire::VERSIONS
                    ));
                }
                check_name(&name, expected, "its welcome")?;
                if let Some(said) = said
                    && said != name
                {
                    return Err(format!(
                        "its welcome gave the plugin the name {name:?}, its log messages before \
                         it {said:?}"
                    ));
                }
                let hooks = wire::hook_set(&hooks)?;
                self.log.rename(&name, or_plugin(instance, &name));
                let welcome = Welcome {
                    name,
                    version: plugin_version,
                    routes,
                    hooks,
                };
                Ok((welcome, ring))
            }
            Ok(Frame {
                header: Header::Refuse { error },
                ..
            }) => Err(format!("it refused to run: {error}")),
            Ok(frame) => Err(format!(
                "it answered hello with {:?} instead of welcome",
                frame.header
            )),
            Err(ReadError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let received = match logs {
                    0 => "nothing was received".to_owned(),
                    n => format!("only {n} log message(s) were received"),
                };
                Err(format!(
                    "no welcome within {deadline:?} ({received}); a plugin program must answer \
                     hello as the protocol says"
                ))
            }
            Err(ReadError::Closed) | Err(ReadError::Io(_)) => {
                Err(self.ended_without_welcome(started))
            }
            Err(e) => Err(format!("instead of welcome it sent {e}")),
        }
    }

    /// Why the handshake ended with the connection: the child closed it, and how it exited,
    /// with what its status means when it is the shell's or env's for a command that cannot run.
    fn ended_without_welcome(&self, started: Instant) -> String {
        let status = self.wait_exit(Duration::from_millis(500));
        // The shell's and env's statuses for a command that cannot run: most often the
        // interpreter of a `#!` line, which the program's file names.
        let hint = match status.and_then(|s| s.code()) {
            Some(126) => {
                "; status 126 is a command found but not executable: its standard error, logged \
                 above, says which"
            }
            Some(127) => {
                "; status 127 is a command not found, such as the interpreter its `#!` line \
                 names through env: its standard error, logged above, says which"
            }
            _ => "",
        };
        format!(
            "it closed the connection after {:?} without a welcome{}{hint}",
            started.elapsed(),
            status.map_or_else(String::new, |s| format!(" and exited ({s})"))
        )
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the link went down (the child died, or broke the protocol): every call on it
    /// fails from then on.
    pub(crate) fn is_down(&self) -> bool {
        self.shared.pending.lock().is_err()
    }

    /// Why the link went down, if it did (the first reason).
    fn down_reason(&self) -> Option<String> {
        self.shared.pending.lock().as_ref().err().cloned()
    }

    /// Sends a message that expects an answer; `make` builds it with its id, and its body is
    /// the `body` parts one after the other. A call or a hook is refused (its waiter told at
    /// once, nothing sent) while the bytes queued towards the child are past their limit; the
    /// lifecycle and liveness messages never are. On a link that is down, every message fails
    /// at once with the reason it went down.
    fn send(
        &self,
        make: impl FnOnce(u64) -> Header,
        body: &[&[u8]],
        waiter: Waiter,
    ) -> Option<u64> {
        // A dead link first: its queue, full or not, is gone with it.
        if let Err(reason) = &*self.shared.pending.lock() {
            waiter.send(Err(Lost::Child(reason.clone())));
            return None;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header = make(id);
        let capped = matches!(
            header,
            Header::Call { .. }
                | Header::OnRequest { .. }
                | Header::OnResponse { .. }
                | Header::OnConnect { .. }
        );
        // Checked before the body is copied into a frame: a refused call costs nothing.
        if capped && let Err(lost) = self.admit() {
            waiter.send(Err(lost));
            return None;
        }
        let frame = frame(&header, body);
        drop(header);
        // With no other call in flight, the frame is written at once (the lowest latency);
        // under load it is queued, and goes out with others.
        let alone = {
            let mut pending = self.shared.pending.lock();
            match &mut *pending {
                Ok(waiting) => {
                    waiting.insert(id, waiter);
                    waiting.len() == 1
                }
                Err(reason) => {
                    let reason = reason.clone();
                    drop(pending);
                    waiter.send(Err(Lost::Child(reason)));
                    return None;
                }
            }
        };
        if capped {
            match self.push(&frame) {
                Ok(true) => return Some(id),
                Ok(false) => {}
                Err(reason) => {
                    self.shared.fail_all(&reason);
                    self.close();
                    return Some(id);
                }
            }
        }
        let sent = match &self.outbox {
            Some(outbox) if capped => outbox.send_capped(frame, alone),
            Some(outbox) => outbox.send(frame, alone).map_err(SendError::Io),
            None => Err(SendError::Io(std::io::ErrorKind::NotConnected.into())),
        };
        match sent {
            Ok(()) => {}
            Err(SendError::Backlog(backlog)) => {
                let waiter = match &mut *self.shared.pending.lock() {
                    Ok(waiting) => waiting.remove(&id),
                    Err(_) => None,
                };
                if let Some(waiter) = waiter {
                    waiter.send(Err(Lost::Backlogged(backlog)));
                }
                return None;
            }
            Err(SendError::Io(e)) => {
                // The waiter, registered above, is told with every other.
                self.write_failed(&e);
            }
        }
        Some(id)
    }

    /// Whether a capped message would be taken now (see [`wire::Outbox::admit`]); on a link
    /// whose socket failed, takes it down.
    fn admit(&self) -> Result<(), Lost> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        match outbox.admit() {
            Ok(()) => Ok(()),
            Err(SendError::Backlog(backlog)) => Err(Lost::Backlogged(backlog)),
            Err(SendError::Io(e)) => Err(self.write_failed(&e)),
        }
    }

    /// Takes the link down after a write to the child failed with `e`: what every waiting
    /// message, and the one that found it, gets.
    fn write_failed(&self, e: &std::io::Error) -> Lost {
        let reason = format!("writing to the plugin process failed: {e}");
        self.shared.fail_all(&reason);
        self.close();
        Lost::Child(self.down_reason().unwrap_or(reason))
    }

    /// Sends a message that expects no answer (`on_disconnect`), unless the bytes queued
    /// towards the child are past their limit: then it is dropped, and that is the error. It
    /// never blocks, and never queues past the limit.
    pub(crate) fn notify(&self, header: &Header) -> Result<(), Lost> {
        // Written at once when nothing waits for an answer, as a lone call is.
        let alone = match &*self.shared.pending.lock() {
            Ok(waiting) => waiting.is_empty(),
            Err(reason) => return Err(Lost::Child(reason.clone())),
        };
        self.admit()?;
        let frame = frame(header, &[]);
        match self.push(&frame) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(reason) => {
                let reason = self.shared.fail_all(&reason);
                self.close();
                return Err(Lost::Child(reason));
            }
        }
        let sent = match &self.outbox {
            Some(outbox) => outbox.send_capped(frame, alone),
            None => Err(SendError::Io(std::io::ErrorKind::NotConnected.into())),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::Backlog(backlog)) => Err(Lost::Backlogged(backlog)),
            Err(SendError::Io(e)) => Err(self.write_failed(&e)),
        }
    }

    /// Sends a message and waits at most `timeout` for its answer.
    pub(crate) fn request(
        &self,
        make: impl FnOnce(u64) -> Header,
        body: &[&[u8]],
        timeout: Duration,
    ) -> Result<Frame, Lost> {
        let (sender, receiver) = mpsc::sync_channel(1);
        let id = self.send(make, body, Waiter::Blocking(sender));
        match receiver.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(_) => {
                if let Some(id) = id
                    && let Ok(waiting) = &mut *self.shared.pending.lock()
                {
                    waiting.remove(&id);
                }
                Err(Lost::Timeout(timeout))
            }
        }
    }

    /// Sends a message; its answer arrives through the returned future.
    pub(crate) fn request_async(
        &self,
        make: impl FnOnce(u64) -> Header,
        body: &[&[u8]],
    ) -> PendingAnswer {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let id = self.send(make, body, Waiter::Async(sender));
        PendingAnswer {
            receiver,
            id,
            shared: self.shared.clone(),
        }
    }

    /// Writes a call or hook into the ring of calls, when the child took the shared memory and
    /// `frame` fits a free slot: whether it did; a violation of the ring is the reason the link
    /// goes down.
    fn push(&self, frame: &[u8]) -> Result<bool, String> {
        #[cfg(target_os = "linux")]
        if let Some(fast) = &self.fast {
            return fast
                .calls
                .lock()
                .push(frame)
                .map_err(|ring::Violation(what)| {
                    format!("the plugin process broke the protocol: in the shared memory, {what}")
                });
        }
        let _ = frame;
        Ok(false)
    }

    /// Closes the connection: the child sees the end of its input, and the reader of the
    /// shared memory, if any, ends.
    pub(crate) fn close(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        #[cfg(target_os = "linux")]
        if let Some(fast) = &self.fast {
            fast.answers.ring();
        }
    }

    /// Waits at most `limit` for the child to exit, and reaps it; its status, if it exited.
    pub(crate) fn wait_exit(&self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut child = self.child.lock();
                let process = child.as_mut()?;
                if child::has_exited(process) {
                    // Whatever it started in its group goes with it, while its id cannot be
                    // reused yet; once reaped, it is never signalled again.
                    child::signal_group(process, libc::SIGKILL);
                    if let Ok(Some(status)) = process.try_wait() {
                        *child = None;
                        drop(child);
                        // Its descendants may keep its pipes open: the copy ends now (after
                        // its last lines, bounded), with the lock released, so that nothing
                        // waiting for the child waits for its output too.
                        if let Some(output) = &self.output {
                            output.child_reaped();
                        }
                        return Some(status);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to the child, unless it has been reaped: SIGKILL to its process group
    /// (with a PID namespace, the init's death then ends everything in it; a subreaper kills
    /// what is below it); any other signal to the outer process, which passes it on to the
    /// program alone, or to the process group of a child without one (see [`child::signal`]).
    pub(crate) fn signal(&self, signal: i32) {
        if let Some(process) = self.child.lock().as_ref() {
            child::signal(process, self.containment, signal);
        }
    }

    /// Kills the child (see [`signal`](Self::signal)) and reaps it: its exit status, unless it
    /// was reaped before, or did not end within 5 s of SIGKILL (a process stuck in the kernel,
    /// in uninterruptible sleep; it dies when that ends).
    pub(crate) fn kill(&self) -> Option<std::process::ExitStatus> {
        self.close();
        self.signal(libc::SIGKILL);
        self.wait_exit(KILL_WAIT)
    }

    /// Whether the child was reaped (its status was taken by [`wait_exit`](Self::wait_exit)).
    pub(crate) fn is_reaped(&self) -> bool {
        self.child.lock().is_none()
    }
}

pub(crate) use child::KILL_WAIT;

impl Drop for Link {
    fn drop(&mut self) {
        self.kill();
        // Not reaped within `KILL_WAIT`: reaped whenever it ends, never left a zombie.
        if let Some(process) = self.child.lock().take() {
            child::reap_later(process);
        }
    }
}

/// `header` and the `body` parts, encoded as one frame.
fn frame(header: &Header, body: &[&[u8]]) -> Vec<u8> {
    let size: usize = body.iter().map(|part| part.len()).sum();
    let mut frame = Vec::with_capacity(256 + size);
    wire::encode(header, body, &mut frame);
    frame
}

/// Reads from a socket until a point in time: a read after it fails with `TimedOut`.
struct Deadline<'s> {
    socket: &'s UnixStream,
    until: Instant,
}

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.socket.set_read_timeout(Some(left))?;
        (&mut &*self.socket).read(buffer)
    }
}

/// Checks a plugin's name a child gave in `what`: it tags the host's log lines, `list` and
/// `/healthz`, so it must be one line of text, as a library's must be; and it must be
/// `expected`, the name of the plugin the child replaces, if any (its routes and its tags are
/// that plugin's).
fn check_name(name: &str, expected: Option<&str>, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !pluginlog::is_one_line(name) {
        return Err(format!(
            "{what} gave the plugin the name {name:?}: a plugin's name must be 1 to 128 bytes of \
             text without control characters"
        ));
    }
    match expected {
        Some(expected) if expected != name => Err(format!(
            "{what} gave the plugin the name {name:?}, but the process it replaces was plugin \
             {expected:?}: a plugin process must keep its plugin's name (to serve another \
             plugin, restart the host)"
        )),
        _ => Ok(()),
    }
}

/// The instance's name: the configuration's (`instance`, what `hello` said), or else the
/// plugin's.
fn or_plugin<'a>(instance: &'a str, plugin: &'a str) -> &'a str {
    match instance {
        "" => plugin,
        name => name,
    }
}

/// Reads frames until the link goes down; returns why.
fn read_loop(
    reader: &mut impl std::io::Read,
    limit: u64,
    shared: &Shared,
    log: &Arc<LogLimiter>,
    (plugin, instance): (&str, &str),
) -> String {
    loop {
        let frame = match wire::read_frame(reader, limit) {
            Ok(frame) => frame,
            Err(ReadError::Closed) => return "the plugin process closed its connection".into(),
            Err(ReadError::Io(e)) => {
                return format!("the connection to the plugin process broke: {e}");
            }
            Err(e) => return format!("the plugin process broke the protocol: it sent {e}"),
        };
        let id = match &frame.header {
            Header::Response { id, .. }
            | Header::Result { id, .. }
            | Header::HookResult(wire::HookResult { id, .. })
            | Header::Pong { id } => *id,
            Header::Log { level, message, .. } => {
                pluginlog::message(log, *level, plugin, instance, message.as_bytes());
                continue;
            }
            other => {
                return format!(
                    "the plugin process broke the protocol: it sent {other:?}, which only the \
                     host sends"
                );
            }
        };
        let waiter = match &mut *shared.pending.lock() {
            Ok(waiting) => waiting.remove(&id),
            Err(_) => None,
        };
        // An answer nobody waits for (its call timed out) is dropped.
        if let Some(waiter) = waiter {
            waiter.send(Ok(frame));
        }
    }
}

/// How long the reader of the ring of answers sleeps at most before it looks again (at the ring
/// and at whether the link is down), whether or not the child rings its bell.
#[cfg(target_os = "linux")]
pub(crate) const RING_WAIT: Duration = Duration::from_secs(1);

/// Reads the ring of answers until the link goes down (`None`) or the child breaks the
/// protocol in it (the reason). Everything there is hostile: `ring::Consumer` checks the ring's
/// indexes and lengths and copies the message out, which is then parsed as a frame of the
/// socket is, and must be an answer to a message sent. It spins while answers are due.
#[cfg(target_os = "linux")]
fn ring_loop(mut answers: ring::Consumer, shared: &Shared) -> Option<String> {
    let mut bytes = Vec::with_capacity(ring::SLOT_SIZE);
    loop {
        match answers.pop(&mut bytes) {
            Ok(true) => {
                let mut rest = bytes.as_slice();
                let delivered = match wire::read_frame(&mut rest, ring::SLOT_FRAME as u64) {
                    Ok(_) if !rest.is_empty() => Err(format!(
                        "the plugin process broke the protocol: it wrote a message of {} bytes \
                         in the shared memory, {} more than its frame",
                        bytes.len(),
                        rest.len()
                    )),
                    Ok(frame) => shared.deliver(frame),
                    Err(e) => Err(format!(
                        "the plugin process broke the protocol: it wrote {e} in the shared memory"
                    )),
                };
                if let Err(reason) = delivered {
                    return Some(reason);
                }
                continue;
            }
            Ok(false) => {}
            Err(ring::Violation(what)) => {
                return Some(format!(
                    "the plugin process broke the protocol: in the shared memory, {what}"
                ));
            }
        }
        let due = match &*shared.pending.lock() {
            Ok(waiting) => !waiting.is_empty(),
            Err(_) => return None,
        };
        answers.wait(due, RING_WAIT, || false);
    }
}

/// An answer on its way; dropping it forgets the call.
pub(crate) struct PendingAnswer {
    receiver: tokio::sync::oneshot::Receiver<Result<Frame, Lost>>,
    id: Option<u64>,
    shared: Arc<Shared>,
}

impl std::future::Future for PendingAnswer {
    type Output = Result<Frame, Lost>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|answer| {
                answer.unwrap_or_else(|_| Err(Lost::Child("the plugin process is gone".into())))
            })
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && let Ok(waiting) = &mut *self.shared.pending.lock()
        {
            waiting.remove(&id);
        }
    }
}

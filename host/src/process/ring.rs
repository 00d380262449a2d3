//! The shared-memory rings between the host and a child (Linux; see `PROTOCOL.md`, "Shared
//! memory"): one `memfd` per child process, sealed to its size and mapped shared by both, with
//! two single-producer single-consumer rings of fixed-size slots, one towards the child and one
//! towards the host. A slot carries one frame, byte for byte as the socket would.
//!
//! Every `unsafe` of the fast path is here: the mapping, the atomic views on it, the futex and
//! the descriptor passing. Everything the other process can write is read through
//! [`AtomicU32`]/[`AtomicU64`] views (never a reference to plain shared bytes), checked against
//! the ring's bounds before use, and copied out before it is parsed: the host treats the
//! memory as hostile, as it does the socket. Each side keeps its own indexes in private memory
//! and only writes them to the shared ones, never reads them back.

use super::wire::RingOffer;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

/// Slots in each ring.
pub(crate) const SLOTS: u32 = 64;
/// Bytes of a slot: its 8-byte head (sequence number, length), then the frame.
pub(crate) const SLOT_SIZE: usize = 4096;
/// The largest frame a slot carries; a larger one travels on the socket.
pub(crate) const SLOT_FRAME: usize = SLOT_SIZE - SLOT_HEAD;
/// The longest a consumer spins, while an answer is due, before it sleeps on the futex.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(40);
/// The shortest spin the adaptive limit comes down to when answers keep coming after it.
const SPIN_MIN: Duration = Duration::from_micros(2);
const SLOT_HEAD: usize = 8;
/// Bytes of a ring's control block, before its slots: four words, each on a cache line.
const CONTROL: usize = 256;
const TAIL: usize = 0;
const HEAD: usize = 64;
const BELL: usize = 128;
const SLEEPING: usize = 192;
const RING_BYTES: usize = CONTROL + SLOTS as usize * SLOT_SIZE;
/// The size of the shared memory: the ring towards the child, then the one towards the host.
pub(crate) const MEMORY_SIZE: usize = 2 * RING_BYTES;

/// What `hello` offers: the memory's size and its rings' shape.
pub(crate) fn offer() -> RingOffer {
    RingOffer {
        size: MEMORY_SIZE as u64,
        slots: SLOTS,
        slot_size: SLOT_SIZE as u32,
    }
}

/// Which of the two rings.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Calls and hooks, written by the host.
    ToChild,
    /// Answers, written by the child.
    ToHost,
}

impl Direction {
    fn offset(self) -> usize {
        match self {
            Direction::ToChild => 0,
            Direction::ToHost => RING_BYTES,
        }
    }
}

/// What the other side wrote that no correct peer writes: the link goes down.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation(pub(crate) String);

/// The shared memory, mapped.
pub(crate) struct Memory {
    base: NonNull<u8>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only reached through atomic views (`word`, `word64`), which any thread
// may use; it stays mapped until `Drop`, which needs the last owner.
unsafe impl Send for Memory {}
// SAFETY: as above: shared access is atomic access.
unsafe impl Sync for Memory {}

impl Memory {
    /// A fresh, zeroed memory for one child process, sealed so that nobody (the child
    /// included) can shrink it under the host's mapping (which would fault it, SIGBUS).
    pub(crate) fn create() -> io::Result<Memory> {
        // SAFETY: the name is a NUL-terminated literal; the call returns a new descriptor or -1.
        let fd = unsafe {
            libc::memfd_create(
                c"pluglet-ring".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        // SAFETY: a descriptor just returned, owned by nothing else (-1 is checked first).
        let fd = unsafe { OwnedFd::from_raw_fd(check(fd)?) };
        // SAFETY: plain system calls on the descriptor owned above; no memory is passed.
        unsafe {
            check(libc::ftruncate(fd.as_raw_fd(), MEMORY_SIZE as libc::off_t))?;
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            check(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals))?;
        }
        Self::map(fd)
    }

    /// Maps the memory of `fd`, which must be [`MEMORY_SIZE`] bytes.
    pub(crate) fn map(fd: OwnedFd) -> io::Result<Memory> {
        // SAFETY: `fstat` writes a `stat` into the zeroed value it is given, which outlives it.
        let size = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            check(libc::fstat(fd.as_raw_fd(), &mut stat))?;
            stat.st_size
        };
        if usize::try_from(size).ok() != Some(MEMORY_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the shared memory is {size} bytes, not {MEMORY_SIZE}"),
            ));
        }
        // SAFETY: a new shared mapping of a descriptor of `MEMORY_SIZE` bytes; the kernel
        // chooses the address, so no existing memory is replaced.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MEMORY_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Memory { base, fd })
    }

    /// The descriptor, to hand to the child.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The 32-bit word at `offset`.
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= MEMORY_SIZE);
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned), mapped as long
        // as `self` lives; the memory is only ever accessed atomically, by both processes.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// The 64-bit word at `offset`.
    fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= MEMORY_SIZE);
        // SAFETY: as in `word`.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once: no view outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), MEMORY_SIZE) };
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} bytes)", MEMORY_SIZE)
    }
}

/// Rings a ring's bell: tells its consumer that something is there (a message, or, inside one
/// process, anything else it waits for), waking it only if it sleeps.
#[derive(Clone)]
pub(crate) struct Bell {
    memory: Arc<Memory>,
    ring: usize,
}

impl Bell {
    /// Rings the bell.
    pub(crate) fn ring(&self) {
        let bell = self.memory.word(self.ring + BELL);
        bell.fetch_add(1, Ordering::SeqCst);
        if self
            .memory
            .word(self.ring + SLEEPING)
            .load(Ordering::SeqCst)
            != 0
        {
            futex_wake(bell);
        }
    }
}

/// The writing end of one ring. One thread at a time (put it behind a lock).
pub(crate) struct Producer {
    bell: Bell,
    /// Messages written, this side's own count: the shared one is written, never read.
    tail: u32,
}

impl Producer {
    /// The writing end of the ring `direction` of `memory`.
    pub(crate) fn new(memory: Arc<Memory>, direction: Direction) -> Producer {
        Producer {
            bell: Bell {
                memory,
                ring: direction.offset(),
            },
            tail: 0,
        }
    }

    /// Copies `frame` into the next slot and publishes it: false when it is larger than a slot
    /// or the ring is full (it then goes on the socket). The consumer's read index is checked:
    /// one ahead of what was written, or more than a ring behind, is a violation.
    pub(crate) fn push(&mut self, frame: &[u8]) -> Result<bool, Violation> {
        if frame.len() > SLOT_FRAME {
            return Ok(false);
        }
        let memory = &self.bell.memory;
        let ring = self.bell.ring;
        let head = memory.word(ring + HEAD).load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > SLOTS {
            return Err(Violation(format!(
                "its read index {head} does not lie within the {SLOTS} messages before the \
                 write index {}",
                self.tail
            )));
        }
        if used == SLOTS {
            return Ok(false);
        }
        let slot = slot(ring, self.tail);
        for (i, chunk) in frame.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            memory
                .word64(slot + SLOT_HEAD + 8 * i)
                .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        memory
            .word(slot + 4)
            .store(frame.len() as u32, Ordering::Relaxed);
        memory.word(slot).store(self.tail, Ordering::Release);
        self.tail = self.tail.wrapping_add(1);
        memory.word(ring + TAIL).store(self.tail, Ordering::SeqCst);
        self.bell.ring();
        Ok(true)
    }
}

/// The reading end of one ring, and how long it spins before it sleeps.
pub(crate) struct Consumer {
    bell: Bell,
    /// Messages read, this side's own count: the shared one is written, never read.
    head: u32,
    /// The current spin limit: halved when the spin ended without a message, doubled when one
    /// came during it, within [`SPIN_MIN`] and [`SPIN_MAX`].
    spin: Duration,
    /// Whether this process may run on more than one CPU: spinning on the only one would keep
    /// the producer from running.
    may_spin: bool,
}

impl Consumer {
    /// The reading end of the ring `direction` of `memory`.
    pub(crate) fn new(memory: Arc<Memory>, direction: Direction) -> Consumer {
        Consumer {
            bell: Bell {
                memory,
                ring: direction.offset(),
            },
            head: 0,
            spin: SPIN_MAX,
            // `sched_getaffinity` (and the cgroup's CPU quota) on Linux.
            may_spin: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
        }
    }

    /// Its bell, for whoever else the consumer waits for (see [`wait`](Self::wait)).
    pub(crate) fn bell(&self) -> Bell {
        self.bell.clone()
    }

    /// Copies the next message, if any, into `into` (replacing what it held): false when there
    /// is none. A write index more than a ring ahead, a slot that does not hold the message
    /// due (a replay, an old slot), a length over the slot, or a slot rewritten while it was
    /// copied, is a violation.
    pub(crate) fn pop(&mut self, into: &mut Vec<u8>) -> Result<bool, Violation> {
        let memory = &self.bell.memory;
        let ring = self.bell.ring;
        let tail = memory.word(ring + TAIL).load(Ordering::Acquire);
        let waiting = tail.wrapping_sub(self.head);
        if waiting == 0 {
            return Ok(false);
        }
        if waiting > SLOTS {
            return Err(Violation(format!(
                "its write index {tail} is more than {SLOTS} messages past the read index {}",
                self.head
            )));
        }
        let slot = slot(ring, self.head);
        let sequence = memory.word(slot).load(Ordering::Acquire);
        if sequence != self.head {
            return Err(Violation(format!(
                "the slot of message {} holds message {sequence}",
                self.head
            )));
        }
        let len = memory.word(slot + 4).load(Ordering::Relaxed) as usize;
        if len > SLOT_FRAME {
            return Err(Violation(format!(
                "a message of {len} bytes in a slot of {SLOT_FRAME}"
            )));
        }
        into.clear();
        into.reserve(len);
        for i in 0..len.div_ceil(8) {
            let word = memory
                .word64(slot + SLOT_HEAD + 8 * i)
                .load(Ordering::Relaxed);
            let take = (len - 8 * i).min(8);
            into.extend_from_slice(&word.to_ne_bytes()[..take]);
        }
        fence(Ordering::Acquire);
        if memory.word(slot).load(Ordering::Relaxed) != sequence {
            return Err(Violation(format!(
                "the slot of message {sequence} was rewritten while it was read"
            )));
        }
        self.head = self.head.wrapping_add(1);
        memory.word(ring + HEAD).store(self.head, Ordering::Release);
        Ok(true)
    }

    /// Whether a message waits.
    fn ready(&self) -> bool {
        let tail = self.bell.memory.word(self.bell.ring + TAIL);
        tail.load(Ordering::SeqCst) != self.head
    }

    /// Waits until a message waits, `other` says something else does (checked after the
    /// bell's count is read, so that a ring of the bell after it is never missed), or `timeout`
    /// passes, or a spurious wake-up. While `due` (an answer is awaited) and the process may
    /// run on more than one CPU, it first spins, up to the adaptive limit; then it sleeps on
    /// the futex of the bell, which producers ring only when it sleeps.
    pub(crate) fn wait(&mut self, due: bool, timeout: Duration, other: impl Fn() -> bool) {
        if due && self.may_spin {
            let started = Instant::now();
            let mut turns = 0u32;
            loop {
                if self.ready() || other() {
                    self.spin = (self.spin * 2).min(SPIN_MAX);
                    return;
                }
                std::hint::spin_loop();
                turns += 1;
                if turns.is_multiple_of(32) && started.elapsed() >= self.spin {
                    self.spin = (self.spin / 2).max(SPIN_MIN);
                    break;
                }
            }
        }
        let memory = &self.bell.memory;
        let ring = self.bell.ring;
        let bell = memory.word(ring + BELL);
        let rung = bell.load(Ordering::SeqCst);
        let sleeping = memory.word(ring + SLEEPING);
        sleeping.store(1, Ordering::SeqCst);
        if !self.ready() && !other() {
            futex_wait(bell, rung, timeout);
        }
        sleeping.store(0, Ordering::SeqCst);
    }
}

/// The offset of the slot of message `index` in the ring at `ring`.
fn slot(ring: usize, index: u32) -> usize {
    ring + CONTROL + (index % SLOTS) as usize * SLOT_SIZE
}

/// Sleeps while `word` holds `expected`, at most `timeout` (the other process may never wake
/// this one: every wait ends).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is an aligned 32-bit word of a live shared mapping, which the kernel reads
    // (a process-shared futex: no FUTEX_PRIVATE_FLAG); `timeout` outlives the call. Its
    // outcome (woken, timed out, interrupted, the word changed) needs no handling: the caller
    // looks again in every case.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes the one thread that sleeps on `word`, if any.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE only reads the address, to find its sleepers.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// The most descriptors sent with one message: the library's content and the shared memory.
const MAX_FDS: usize = 2;

/// Writes `bytes` to `socket` with `fds` (at most [`MAX_FDS`]) attached to their first byte
/// (SCM_RIGHTS), in this order: a peer that reads with plain `read` gets the bytes alone (the
/// kernel closes the descriptors).
pub(crate) fn send_with_fds(
    socket: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use std::io::Write;
    assert!(fds.len() <= MAX_FDS, "at most {MAX_FDS} descriptors");
    let Some((first, rest)) = bytes.split_first() else {
        return Ok(());
    };
    let raw: Vec<libc::c_int> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let data = size_of_val(raw.as_slice()) as u32;
    // SAFETY: a `msghdr` naming one byte and a control buffer sized by CMSG_SPACE for the
    // descriptors, all living across `sendmsg`; the CMSG_* macros stay within that buffer.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: std::ptr::from_ref(first).cast_mut().cast(),
            iov_len: 1,
        };
        let space = libc::CMSG_SPACE(data) as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if !raw.is_empty() {
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen = space as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                data as usize,
            );
        }
        loop {
            match libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) {
                1 => break,
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                -1 => return Err(io::Error::last_os_error()),
                _ => return Err(io::ErrorKind::WriteZero.into()),
            }
        }
    }
    (&mut &*socket).write_all(rest)
}

/// The descriptors attached to the first byte waiting on `socket`, in the order they were sent
/// (at most [`MAX_FDS`]; more are closed), without taking the byte (MSG_PEEK): it waits for
/// that byte as a read would.
pub(crate) fn peek_fds(socket: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    let mut byte = 0u8;
    // SAFETY: as in `send_with_fds`: the buffers named by the `msghdr` live across `recvmsg`,
    // and the CMSG_* macros walk only the control length the kernel wrote; each descriptor is
    // read within its header's length. A descriptor the kernel installed is owned by nothing
    // else, and is taken once.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: std::ptr::from_mut(&mut byte).cast(),
            iov_len: 1,
        };
        let space = libc::CMSG_SPACE((MAX_FDS * size_of::<libc::c_int>()) as u32) as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        let flags = libc::MSG_PEEK | libc::MSG_CMSG_CLOEXEC;
        loop {
            if libc::recvmsg(socket.as_raw_fd(), &mut message, flags) >= 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        let mut header = libc::CMSG_FIRSTHDR(&message);
        let mut found = Vec::new();
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let length = (*header).cmsg_len as usize - (data as usize - header as usize);
                for index in 0..length / size_of::<libc::c_int>() {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(index));
                    found.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        found.truncate(MAX_FDS);
        Ok(found)
    }
}

/// A sealed memory file holding `bytes`, named `name`: what the host hands a worker to load
/// (see `ProcessPlugin::isolated`). Nothing is left on disk, whatever ends the host, and
/// nobody can change the bytes once sealed, the worker that receives it included.
pub(crate) fn sealed_copy(bytes: &[u8], name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    use std::io::Write;
    // SAFETY: the name is a NUL-terminated string; the call returns a new descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    // SAFETY: a descriptor just returned, owned by nothing else (-1 is checked first).
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(check(fd)?) });
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: a plain system call on the descriptor owned above; no memory is passed.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(file)
}

fn check(status: libc::c_int) -> io::Result<libc::c_int> {
    if status == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Producer, Consumer) {
        let memory = Arc::new(Memory::create().unwrap());
        (
            Producer::new(memory.clone(), Direction::ToHost),
            Consumer::new(memory, Direction::ToHost),
        )
    }

    #[test]
    fn messages_go_through_in_order_until_the_ring_is_full() {
        let (mut producer, mut consumer) = pair();
        let mut out = Vec::new();
        for round in 0..3u32 {
            for i in 0..SLOTS {
                let message = format!("message {round}.{i}").repeat(i as usize + 1);
                assert_eq!(producer.push(message.as_bytes()), Ok(true));
            }
            assert_eq!(producer.push(b"one too many"), Ok(false));
            for i in 0..SLOTS {
                assert_eq!(consumer.pop(&mut out), Ok(true));
                let message = format!("message {round}.{i}").repeat(i as usize + 1);
                assert_eq!(out, message.as_bytes());
            }
            assert_eq!(consumer.pop(&mut out), Ok(false));
        }
        assert_eq!(producer.push(&vec![1; SLOT_FRAME]), Ok(true));
        assert_eq!(producer.push(&vec![1; SLOT_FRAME + 1]), Ok(false));
    }

    #[test]
    fn impossible_indexes_lengths_and_replays_are_violations() {
        let (mut producer, mut consumer) = pair();
        let memory = consumer.bell.memory.clone();
        let ring = consumer.bell.ring;
        let mut out = Vec::new();
        producer.push(b"first").unwrap();
        // A write index far ahead.
        memory.word(ring + TAIL).store(SLOTS + 1, Ordering::SeqCst);
        let error = consumer.pop(&mut out).unwrap_err();
        assert!(error.0.contains("more than 64 messages past"), "{error:?}");
        memory.word(ring + TAIL).store(1, Ordering::SeqCst);
        // A length over the slot.
        memory
            .word(slot(ring, 0) + 4)
            .store(u32::MAX, Ordering::SeqCst);
        let error = consumer.pop(&mut out).unwrap_err();
        assert!(error.0.contains("bytes in a slot of 4088"), "{error:?}");
        memory.word(slot(ring, 0) + 4).store(5, Ordering::SeqCst);
        assert_eq!(consumer.pop(&mut out), Ok(true));
        // A replay: message 1 announced, the slot still holding message 0's number.
        producer.push(b"second").unwrap();
        memory.word(slot(ring, 1)).store(0, Ordering::SeqCst);
        let error = consumer.pop(&mut out).unwrap_err();
        assert_eq!(error.0, "the slot of message 1 holds message 0");
        // A read index the consumer never wrote.
        memory.word(ring + HEAD).store(1000, Ordering::SeqCst);
        let error = producer.push(b"third").unwrap_err();
        assert!(error.0.contains("read index 1000"), "{error:?}");
    }

    #[test]
    fn a_sleeping_consumer_is_woken_and_a_silent_producer_times_out() {
        let (mut producer, mut consumer) = pair();
        let started = Instant::now();
        consumer.wait(false, Duration::from_millis(50), || false);
        assert!(started.elapsed() >= Duration::from_millis(40));
        let pushing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            producer.push(b"wake up").unwrap();
        });
        let started = Instant::now();
        let mut out = Vec::new();
        while !consumer.pop(&mut out).unwrap() {
            consumer.wait(true, Duration::from_secs(10), || false);
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        pushing.join().unwrap();
    }

    #[test]
    fn descriptors_pass_with_the_first_byte_in_order_and_a_plain_read_gets_the_bytes() {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsFd;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let memory = Memory::create().unwrap();
        let content = sealed_copy(b"library bytes", c"libx.so").unwrap();
        send_with_fds(&ours, b"hello", &[content.as_fd(), memory.fd()]).unwrap();
        let [content, fd]: [OwnedFd; 2] = peek_fds(&theirs).unwrap().try_into().unwrap();
        let mut content = std::fs::File::from(content);
        let mut read = Vec::new();
        content.seek(std::io::SeekFrom::Start(0)).unwrap();
        content.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"library bytes");
        // Sealed: nobody writes into the library's bytes.
        assert!(content.write_all(b"x").is_err());
        let mapped = Memory::map(fd).unwrap();
        memory.word(64).store(7, Ordering::SeqCst);
        assert_eq!(mapped.word(64).load(Ordering::SeqCst), 7);
        let mut text = [0u8; 5];
        std::io::Read::read_exact(&mut &theirs, &mut text).unwrap();
        assert_eq!(&text, b"hello");
        // Sealed: the child cannot shrink it under the host.
        // SAFETY: a plain system call on a descriptor this test owns.
        let shrunk = unsafe { libc::ftruncate(mapped.fd.as_raw_fd(), 4096) };
        assert_eq!(shrunk, -1);
    }
}

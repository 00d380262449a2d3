//! The gates of an instance's calls: how an instance is stopped while routers still hold it,
//! without ever stopping it under a running call, and without a shared write per call.
//!
//! A [`Gate`] guards the calls of one route (or of an instance's hooks). A call passes it with
//! [`Gate::enter`] and leaves when the guard drops; [`close`] shuts gates for new calls and
//! tells how many calls are inside each. Whatever the interleaving, a call either entered
//! before its gate closed, and is counted by `close`, or sees the gate closed and never reaches
//! the plugin. The caller of `close` stops the instance only when it counted no call.
//!
//! # The call path writes nothing shared
//!
//! A gate that counts its calls in a shared word costs two atomic read-modify-writes per call,
//! and makes every core that calls the route fight over its cache line. Instead, each thread has
//! a *slot* of its own, on a cache line of its own, in a list of every thread's slots. A call
//! that passes a gate:
//!
//! 1. stores the gate's address in its thread's slot (a plain store);
//! 2. then loads the gate's word, and goes on if it is not closed (or clears its slot and is
//!    refused);
//! 3. when it returns, stores null in its slot (a release store).
//!
//! `close` sets the closed bit of each gate, then runs an *asymmetric fence*, then reads every
//! slot: a slot that holds one of the gates is a call inside it.
//!
//! Steps 1 and 2 are a store then a load of different addresses, which a CPU may reorder (its
//! store buffer); `close` is a store then loads too. That is Dekker's pattern, which is only
//! correct when neither side can reorder its store after its load: both need a full fence.
//! The asymmetric fence moves the cost of both to the side that is rare. On Linux it is
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which returns only once every thread of the
//! process has executed a full memory barrier (the kernel interrupts the CPUs that run one; a
//! thread that is not running went through a context switch, itself a full barrier), while the
//! call side keeps only a compiler fence, so that the compiler keeps the store before the load.
//! For each thread that calls, the barrier falls somewhere in its program order:
//! - before its store (1): then the barrier orders `close`'s store of the closed bit before the
//!   call's load (2), which sees the gate closed: refused;
//! - after its load (2): then its store (1) is visible before `membarrier` returns, and `close`
//!   reads the slot after that: counted (and if the call returned meanwhile, its release store
//!   of null is what `close` reads, and everything it did happens before the stop);
//! - between its store and its load: both of the above hold; the call is counted, and refused,
//!   which is conservative.
//!
//! So no call runs inside a gate that `close` counted empty. `membarrier` costs microseconds, and
//! `close` runs at shutdown and reloads only.
//!
//! Where `membarrier` is missing (another system, an old kernel, a seccomp filter), the call side
//! puts a full fence between its store and its load instead, and `close` a full fence between
//! its store and its loads (Dekker's pattern with sequentially consistent fences on both sides):
//! correct, and still no shared write per call. Which of the two applies is decided once, when
//! the first gate is made, before any call can pass one.
//!
//! A slot holds one call: a call made while the thread is inside another one (plugin code that
//! calls back into a router), made on a thread being torn down, or whose guard travels across
//! `await`s ([`Gate::enter_counted`]) is counted in the gate's word, as every call once was.

use parking_lot::Mutex;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering, compiler_fence, fence};

/// The admission word of a gate: the closed bit, and how many counted calls are inside.
#[derive(Default)]
pub(crate) struct Gate(AtomicUsize);

const CLOSED: usize = 1 << (usize::BITS - 1);

/// One thread's slot: the gate of the call it runs now, or null. On a cache line of its own, so
/// that threads' calls never share one.
#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicPtr<Gate>);

/// Every slot ever made, in use or free; a slot is made when a thread first calls, and is reused
/// by a later thread once its thread ends.
struct Slots {
    all: Vec<&'static Slot>,
    free: Vec<&'static Slot>,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    all: Vec::new(),
    free: Vec::new(),
});

/// This thread's slot, handed back to the free list when the thread ends.
struct Mine(&'static Slot);

impl Mine {
    fn take() -> Self {
        let mut slots = SLOTS.lock();
        let slot = slots.free.pop().unwrap_or_else(|| {
            // Leaked on purpose: `close` may read a slot at any moment; a slot is reused, so
            // there are never more than the most threads that called at once.
            let slot: &'static Slot = Box::leak(Box::default());
            slots.all.push(slot);
            slot
        });
        Self(slot)
    }
}

impl Drop for Mine {
    fn drop(&mut self) {
        // No call runs on a thread that ends: its guard cleared the slot when it returned (or
        // unwound).
        SLOTS.lock().free.push(self.0);
    }
}

thread_local! {
    static MINE: Mine = Mine::take();
}

/// Whether `close` runs the asymmetric fence (`membarrier`), so that a call needs only a
/// compiler fence; decided when the first gate is made.
static ASYMMETRIC: OnceLock<bool> = OnceLock::new();

#[cfg(target_os = "linux")]
fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: `membarrier` takes two integers (and a CPU number that `flags` 0 ignores), reads
    // and writes no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// From `linux/membarrier.h`.
#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
#[cfg(target_os = "linux")]
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Makes this process's gates use a full fence on both sides, before any gate is made: for a
/// plugin's worker process, whose calls each cost a message anyway, and which must start and
/// stop fast: registering for `membarrier` waits for an RCU grace period (milliseconds), which
/// every new worker would pay.
pub(crate) fn symmetric_in_this_process() {
    let _ = ASYMMETRIC.set(false);
}

/// Registers the process for `membarrier`'s private expedited command; whether it can use it.
fn register() -> bool {
    #[cfg(target_os = "linux")]
    {
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The asymmetric fence's call side.
#[inline(always)]
fn light_fence(asymmetric: bool) {
    if asymmetric {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The asymmetric fence's closing side.
fn heavy_fence(asymmetric: bool) {
    #[cfg(target_os = "linux")]
    if asymmetric && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) {
        return;
    }
    // Registered, it does not fail; were it to, the call side's compiler fence would not be
    // enough, so this is no fallback: stopping is refused below.
    assert!(
        !asymmetric,
        "membarrier failed after it was registered: cannot tell whether a plugin call runs"
    );
    fence(Ordering::SeqCst);
}

impl Gate {
    /// An open gate.
    pub(crate) fn new() -> Self {
        ASYMMETRIC.get_or_init(register);
        Self::default()
    }

    /// Lets a call in, unless the gate is closed. The guard stays on this thread (it is not
    /// `Send`), and the call is counted in the thread's slot.
    #[inline]
    pub(crate) fn enter(&self) -> Option<Entered<'_>> {
        let asymmetric = *ASYMMETRIC.get().expect("a gate was made");
        let slot = MINE
            .try_with(|mine| mine.0)
            .ok()
            .filter(|slot| slot.0.load(Ordering::Relaxed).is_null());
        let Some(slot) = slot else {
            return self.enter_counted().map(|counted| Entered {
                how: How::Counted { _counted: counted },
                here: PhantomData,
            });
        };
        slot.0
            .store(std::ptr::from_ref(self).cast_mut(), Ordering::Relaxed);
        light_fence(asymmetric);
        // Acquire: pairs with `close`, as the word's other users do.
        if self.0.load(Ordering::Acquire) & CLOSED == 0 {
            return Some(Entered {
                how: How::Slot(slot),
                here: PhantomData,
            });
        }
        slot.0.store(std::ptr::null_mut(), Ordering::Relaxed);
        None
    }

    /// Lets a call in, unless the gate is closed, counting it in the gate's word: for a call
    /// whose guard may move to another thread (it is held across `await`s).
    pub(crate) fn enter_counted(&self) -> Option<Counted<'_>> {
        // Acquire: pairs with `close`, so a call that enters sees everything before it.
        if self.0.fetch_add(1, Ordering::Acquire) & CLOSED == 0 {
            Some(Counted(self))
        } else {
            self.0.fetch_sub(1, Ordering::Release);
            None
        }
    }
}

/// Closes `gates` for new calls, for good, and returns how many calls are inside each, in
/// order (see the module's documentation).
pub(crate) fn close(gates: &[Gate]) -> Vec<usize> {
    // AcqRel: the counted calls that left before happen-before whatever follows (`stop`).
    let mut inside: Vec<usize> = gates
        .iter()
        .map(|gate| gate.0.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED)
        .collect();
    // A gate exists, so the choice was made.
    heavy_fence(ASYMMETRIC.get().copied().unwrap_or(false));
    for slot in &SLOTS.lock().all {
        // Acquire: pairs with the release store of a call that returned.
        let gate = slot.0.load(Ordering::Acquire);
        if let Some(index) = gates.iter().position(|g| std::ptr::eq(g, gate)) {
            inside[index] += 1;
        }
    }
    inside
}

/// A call inside a gate, on this thread; leaves when dropped.
pub(crate) struct Entered<'g> {
    how: How<'g>,
    /// Not `Send`: the slot is this thread's.
    here: PhantomData<*const ()>,
}

enum How<'g> {
    /// In this thread's slot.
    Slot(&'static Slot),
    /// In the gate's word; counted out when dropped.
    Counted { _counted: Counted<'g> },
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if let How::Slot(slot) = self.how {
            // Release: the call's effects happen-before a `close` that reads the slot empty.
            slot.0.store(std::ptr::null_mut(), Ordering::Release);
        }
    }
}

/// A call counted in a gate's word ([`Gate::enter_counted`]); counted out when dropped.
pub(crate) struct Counted<'g>(&'g Gate);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // Release: the call's effects happen-before a `close` that sees it gone.
        self.0.0.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn close_counts_the_calls_inside_and_refuses_new_ones() {
        let gates: Arc<[Gate]> = (0..2).map(|_| Gate::new()).collect();
        let (inside, wait) = std::sync::mpsc::channel();
        let (release, go) = std::sync::mpsc::channel::<()>();
        let running = {
            let gates = Arc::clone(&gates);
            std::thread::spawn(move || {
                let _entered = gates[1].enter().expect("open");
                // A nested call, counted in the word.
                let _nested = gates[1].enter().expect("open");
                let _counted = gates[0].enter_counted().expect("open");
                inside.send(()).unwrap();
                go.recv().unwrap();
            })
        };
        wait.recv().unwrap();
        assert_eq!(close(&gates), [1, 2]);
        assert!(gates[0].enter().is_none() && gates[1].enter().is_none());
        assert!(gates[1].enter_counted().is_none());
        release.send(()).unwrap();
        running.join().unwrap();
        assert_eq!(close(&gates), [0, 0]);
    }

    #[test]
    fn no_call_runs_in_a_gate_that_close_counted_empty() {
        let gate: Arc<[Gate]> = Arc::new([Gate::new()]);
        let stopped = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let (gate, stopped) = (Arc::clone(&gate), Arc::clone(&stopped));
                std::thread::spawn(move || {
                    let mut calls = 0u64;
                    while let Some(_entered) = gate[0].enter() {
                        assert!(!stopped.load(Ordering::SeqCst), "a call ran after the stop");
                        calls += 1;
                    }
                    calls
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        while close(&gate)[0] > 0 {
            std::thread::yield_now();
        }
        stopped.store(true, Ordering::SeqCst);
        for caller in callers {
            assert!(caller.join().unwrap() > 0);
        }
    }
}

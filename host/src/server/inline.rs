//! Calls that run inline, on the async worker that serves their connection, and the watchdog
//! that keeps a call turning slow there from stopping the runtime.
//!
//! A route earns the inline path with a record of fast calls (`crate::pacing`), and at most
//! `workers - 1` calls run inline at once, so one worker is always free. Free is not enough:
//! tokio's workers take turns polling the I/O driver (sockets and timers), and a worker that is
//! idle while another polls it sleeps on a condition variable. When the worker polling the
//! driver wakes for a request whose inline call then blocks, nothing polls the driver any more,
//! and the idle workers are never told: no connection is accepted, no request read, no timer
//! fires until the call returns (measured before this module: `/healthz` waited 1.45 s, the
//! whole length of a 1.5 s call, on the first attempt).
//!
//! Go's scheduler meets the same hazard with `sysmon`, a thread that hands a processor stuck in
//! a system call to another thread. Here the watchdog is a thread that samples the inline slots
//! every [`TICK`]; a slot that holds the same call at two samples in a row has a call that turned
//! slow, and the watchdog spawns an empty task on the runtime from outside it. tokio wakes an
//! idle worker for it; that worker runs it, steals what waits in the blocked worker's queue, and
//! parks on the driver, which the blocked worker does not hold while it runs a task. Requests,
//! accepts and timers go on within a tick or two. One task can stay behind until the call
//! returns: one, if any, that the blocked call's own task woke on its worker just before it
//! blocked (tokio's LIFO slot cannot be stolen).
//!
//! The alternatives cost every call: `tokio::task::block_in_place` hands the worker's core to a
//! pooled thread on each call, and a hop to the blocking pool is the microseconds the inline
//! path exists to save. The watchdog costs a call nothing but the atomic update of its slot that
//! the cap on inline calls needs anyway, and it sleeps when no inline call has run for a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the watchdog samples the slots while inline calls run: a call running inline
/// longer than one to two ticks gets another worker onto the I/O driver.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Idle ticks (no inline call started or running) after which the watchdog sleeps until the
/// next inline call: one second.
const IDLE_TICKS: u32 = 100;

/// One inline slot: a counter that is odd while a call holds the slot, and moves on by one when
/// a call takes it and again when it leaves, so that two samples tell one long call from many
/// short ones. Aligned to a cache line, so that workers in different slots do not contend.
#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

/// The slots of inline calls and the watchdog's state, shared with the watchdog thread.
struct Slots {
    slots: Box<[Slot]>,
    /// The watchdog sleeps (parked, woken by the next call) after a second without calls.
    asleep: AtomicBool,
}

/// The inline calls of one service: at most one per slot.
pub(super) struct Inline {
    shared: Arc<Slots>,
    /// The watchdog thread, to wake it.
    watchdog: Option<std::thread::Thread>,
}

impl Inline {
    /// `count` slots of calls on the runtime of `runtime`, watched by a thread of their own
    /// that ends within a second of the service being dropped. Without a runtime (or with one
    /// worker) there are no slots: every call goes to the blocking pool.
    pub(super) fn new(count: usize, runtime: Option<tokio::runtime::Handle>) -> Self {
        let slots = |count| {
            Arc::new(Slots {
                slots: (0..count).map(|_| Slot::default()).collect(),
                asleep: AtomicBool::new(false),
            })
        };
        let shared = slots(count);
        let watched = Arc::downgrade(&shared);
        let watchdog = runtime.filter(|_| count > 0).and_then(|runtime| {
            std::thread::Builder::new()
                .name("inline-watchdog".into())
                .spawn(move || watch(&watched, &runtime))
                .map(|thread| thread.thread().clone())
                .inspect_err(|e| {
                    tracing::warn!(
                        "cannot start the inline watchdog thread ({e}): every plugin call runs on \
                         the blocking pool"
                    );
                })
                .ok()
        });
        Self {
            // Without a watchdog, no call may run inline.
            shared: if watchdog.is_some() { shared } else { slots(0) },
            watchdog,
        }
    }

    /// Takes a free slot, if there is one; the slot is freed when the guard is dropped.
    #[inline]
    pub(super) fn admit(&self) -> Option<Admitted<'_>> {
        let slot = self.shared.slots.iter().find(|slot| {
            let word = slot.0.load(Ordering::Relaxed);
            // SeqCst: ordered before the load of `asleep` below (the watchdog stores `asleep`,
            // then loads the slots).
            word % 2 == 0
                && slot
                    .0
                    .compare_exchange(word, word + 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
        })?;
        if self.shared.asleep.load(Ordering::SeqCst)
            && self.shared.asleep.swap(false, Ordering::SeqCst)
            && let Some(watchdog) = &self.watchdog
        {
            watchdog.unpark();
        }
        Some(Admitted(&slot.0))
    }
}

/// A call's place among the inline calls; given back when dropped.
pub(super) struct Admitted<'a>(&'a AtomicU64);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// The watchdog's loop: samples the slots every tick, wakes an idle worker for each call that
/// stays in its slot from one sample to the next, and sleeps while no call runs inline.
fn watch(slots: &std::sync::Weak<Slots>, runtime: &tokio::runtime::Handle) {
    let mut seen: Vec<u64> = Vec::new();
    // Per slot, the call the watchdog last woke a worker for: once per call is enough.
    let mut handled: Vec<u64> = Vec::new();
    let mut idle = 0;
    loop {
        let Some(shared) = slots.upgrade() else {
            return;
        };
        let now: Vec<u64> = shared
            .slots
            .iter()
            .map(|slot| slot.0.load(Ordering::SeqCst))
            .collect();
        handled.resize(now.len(), 0);
        let mut stuck = false;
        for ((before, now), handled) in seen.iter().zip(&now).zip(&mut handled) {
            // The same call in its slot at two samples: it turned slow.
            if now % 2 == 1 && before == now && handled != now {
                *handled = *now;
                stuck = true;
            }
        }
        if stuck {
            // An empty task from outside the runtime: tokio wakes an idle worker for it, which
            // then polls the I/O driver (see the module's docs).
            drop(runtime.spawn(async {}));
        }
        if seen == now && now.iter().all(|word| word % 2 == 0) {
            idle += 1;
        } else {
            idle = 0;
        }
        seen = now;
        if idle >= IDLE_TICKS {
            // Asleep first, then a last look at the slots; a call takes its slot first, then
            // looks whether the watchdog sleeps (both SeqCst): one of the two sees the other.
            shared.asleep.store(true, Ordering::SeqCst);
            let started = shared
                .slots
                .iter()
                .zip(&seen)
                .any(|(slot, seen)| slot.0.load(Ordering::SeqCst) != *seen);
            drop(shared);
            if !started {
                // Woken by the next inline call, or after a second to see whether the service
                // is gone.
                std::thread::park_timeout(Duration::from_secs(1));
            }
            if let Some(shared) = slots.upgrade() {
                shared.asleep.store(false, Ordering::SeqCst);
            }
            // Still idle at the next sample: straight back to sleep, without ticking.
            continue;
        }
        drop(shared);
        std::thread::sleep(TICK);
    }
}

//! Waiting for a future on a thread that is not a runtime's: the synchronous entry points
//! (`Router::dispatch`) call plugins in child processes, whose answers arrive as futures
//! completed by the link's reader thread.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How long a waiting thread spins, once its future is not ready, before it parks (see
/// [`SPIN`](crate::limits::SPIN)). Never in a process that may run on one CPU only, where
/// spinning would delay the answer it waits for.
const SPIN: Duration = crate::limits::SPIN;

/// Wakes the thread that waits, and tells it so while it spins.
struct Unpark {
    thread: std::thread::Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Whether this process may run on more than one CPU (read once).
fn may_spin() -> bool {
    static MAY: OnceLock<bool> = OnceLock::new();
    *MAY.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Runs `future` on this thread until it completes, or `None` once `timeout` (if any) has
/// passed (the future is dropped). A future that is ready at once costs one poll and no
/// allocation; one that is not is polled again when woken, which the thread waits for spinning
/// at most [`SPIN`], then parked.
pub(crate) fn on<F: Future>(future: F, timeout: Option<Duration>) -> Option<F::Output> {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return Some(output);
    }
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(unpark.clone());
    let mut context = Context::from_waker(&waker);
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    let mut spin = may_spin();
    loop {
        // Polled again with a waker that wakes this thread: the first poll registered none.
        unpark.woken.store(false, Ordering::Relaxed);
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        // Spins once per wait: a future woken for nothing (a spurious wake) parks next time.
        if std::mem::take(&mut spin) && woken_within(&unpark.woken, SPIN) {
            continue;
        }
        match deadline {
            Some(deadline) => {
                std::thread::park_timeout(deadline.checked_duration_since(Instant::now())?)
            }
            None => std::thread::park(),
        }
    }
}

/// Spins until `woken` is set or `limit` has passed; whether it was set.
fn woken_within(woken: &AtomicBool, limit: Duration) -> bool {
    let started = Instant::now();
    let mut turns: u32 = 0;
    loop {
        if woken.load(Ordering::Acquire) {
            return true;
        }
        std::hint::spin_loop();
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(64) && started.elapsed() >= limit {
            return false;
        }
    }
}

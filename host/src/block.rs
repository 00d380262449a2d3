//! Waiting for a future on a thread that is not a runtime's: the synchronous entry points
//! (`Router::dispatch`) call plugins in child processes, whose answers arrive as futures
//! completed by the link's reader thread.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Wakes the thread that waits.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread until it completes, or `None` once `timeout` (if any) has
/// passed (the future is dropped). A future that is ready at once costs one poll and no
/// allocation.
pub(crate) fn on<F: Future>(future: F, timeout: Option<Duration>) -> Option<F::Output> {
    let mut future = pin!(future);
    if let Poll::Ready(output) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return Some(output);
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        // Polled again with a waker that wakes this thread: the first poll registered none.
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        match deadline {
            Some(deadline) => {
                std::thread::park_timeout(deadline.checked_duration_since(Instant::now())?)
            }
            None => std::thread::park(),
        }
    }
}

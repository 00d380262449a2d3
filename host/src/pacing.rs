//! Where a route's handler runs: inline on the async worker that serves the connection, or on
//! the blocking pool. A plugin call costs nanoseconds and a hop to another thread microseconds,
//! so fast routes run inline; a slow one must not hold a worker.
//!
//! The decision rests on evidence that survives scheduler noise: a route starts on the pool and
//! earns inline after [`PROMOTE_AFTER`] fast calls in a row; an inline route goes back to the
//! pool when [`DEMOTE_AT`] of its last 8 calls were slow. One slow sample (a busy machine, a
//! page fault, a preempted thread) moves nothing, and no move is for good.

use std::sync::atomic::{AtomicU32, Ordering};

/// Consecutive fast calls that move a route from the pool to inline.
pub(crate) const PROMOTE_AFTER: u32 = 8;

/// Slow calls among the last 8 that move an inline route back to the pool.
pub(crate) const DEMOTE_AT: u32 = 3;

/// The route runs inline.
const INLINE: u32 = 1 << 31;
/// While inline: the last 8 calls, one bit each, 1 for slow (newest in bit 0).
const HISTORY: u32 = 0xff;
/// While on the pool: the fast calls in a row, in bits 8..16.
const STREAK_SHIFT: u32 = 8;

/// A route's pacing state, one atomic word. Concurrent records may lose a sample, which only
/// delays a move by a call.
#[derive(Debug, Default)]
pub(crate) struct Pacing(AtomicU32);

/// A change of where a route runs, returned by [`Pacing::record`] so that it can be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// The route runs inline from now on.
    Inline,
    /// The route runs on the blocking pool from now on.
    Pool,
}

impl Pacing {
    /// Whether the route's calls run inline.
    #[inline]
    pub(crate) fn inline(&self) -> bool {
        self.0.load(Ordering::Relaxed) & INLINE != 0
    }

    /// Records one call, slow or not (wherever it ran), and returns the move it caused.
    #[inline]
    pub(crate) fn record(&self, slow: bool) -> Option<Move> {
        let old = self.0.load(Ordering::Relaxed);
        let new = next(old, slow);
        // A fast call of a settled inline route changes nothing: no write on the hot path.
        if new == old {
            return None;
        }
        // Another call may have recorded since: then this sample is lost, which is harmless.
        self.0
            .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        match (old & INLINE != 0, new & INLINE != 0) {
            (false, true) => Some(Move::Inline),
            (true, false) => Some(Move::Pool),
            _ => None,
        }
    }
}

/// The state after one more call.
fn next(state: u32, slow: bool) -> u32 {
    if state & INLINE != 0 {
        let history = ((state << 1) | u32::from(slow)) & HISTORY;
        if history.count_ones() >= DEMOTE_AT {
            0
        } else {
            INLINE | history
        }
    } else if slow {
        0
    } else {
        let streak = (state >> STREAK_SHIFT) + 1;
        if streak >= PROMOTE_AFTER {
            INLINE
        } else {
            streak << STREAK_SHIFT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pacing: &Pacing, calls: &[bool]) -> Vec<Move> {
        calls
            .iter()
            .filter_map(|&slow| pacing.record(slow))
            .collect()
    }

    #[test]
    fn a_new_route_earns_inline_with_fast_calls_in_a_row() {
        let pacing = Pacing::default();
        assert!(!pacing.inline());
        let fast = vec![false; PROMOTE_AFTER as usize - 1];
        assert_eq!(run(&pacing, &fast), []);
        // A slow call restarts the count.
        assert_eq!(run(&pacing, &[true]), []);
        assert_eq!(run(&pacing, &fast), []);
        assert!(!pacing.inline());
        assert_eq!(run(&pacing, &[false]), [Move::Inline]);
        assert!(pacing.inline());
    }

    #[test]
    fn one_or_two_noisy_samples_do_not_move_an_inline_route() {
        let pacing = Pacing::default();
        run(&pacing, &[false; PROMOTE_AFTER as usize]);
        // Two slow calls among eight, again and again: it stays inline.
        for _ in 0..10 {
            assert_eq!(
                run(
                    &pacing,
                    &[true, false, false, false, true, false, false, false]
                ),
                []
            );
        }
        assert!(pacing.inline());
    }

    #[test]
    fn three_slow_calls_among_the_last_eight_move_it_to_the_pool() {
        let pacing = Pacing::default();
        run(&pacing, &[false; PROMOTE_AFTER as usize]);
        assert_eq!(run(&pacing, &[true, false, false, true, false]), []);
        assert_eq!(run(&pacing, &[true]), [Move::Pool]);
        assert!(!pacing.inline());
        // And it can earn inline again.
        assert_eq!(
            run(&pacing, &[false; PROMOTE_AFTER as usize]),
            [Move::Inline]
        );
    }

    #[test]
    fn a_settled_fast_route_is_not_written() {
        let pacing = Pacing::default();
        run(&pacing, &[false; PROMOTE_AFTER as usize]);
        let before = pacing.0.load(Ordering::Relaxed);
        run(&pacing, &[false; 100]);
        assert_eq!(pacing.0.load(Ordering::Relaxed), before);
    }
}

//! The token buckets, one per client, in bounded memory: plain arithmetic on a clock the
//! caller gives, tested with made-up times.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Token buckets keyed by client: each holds up to `burst` tokens, refills at `rate` tokens
/// per second, and a request takes one.
///
/// A bucket is kept as the time at which it will be full again (the "theoretical arrival time"
/// of GCRA, the same limit as a token bucket): a request passes if that time is at most
/// `burst - 1` refill intervals ahead, and pushes it one interval further. Times are
/// [`Duration`]s since any fixed origin of a monotonic clock, so the arithmetic is exact (no
/// rounding drift, however many requests) and saturates instead of overflowing.
///
/// At most `capacity` clients are tracked. When a new client comes and the table is full, the
/// buckets that are full again are dropped first (a fresh bucket is full too, so nothing is
/// lost); if that frees less than an eighth of the table, the buckets that will be full soonest
/// are dropped until it does. Each such sweep costs one pass over the table and makes room for
/// many newcomers, so its cost per request stays constant. A client dropped before its bucket
/// was full starts again with a full one: the price of the bound.
#[derive(Debug)]
pub struct Limiter<K> {
    /// The time one token takes to come back: 1 / rate.
    interval: Duration,
    /// How far ahead of now a bucket's full time may be for a request to pass:
    /// (burst - 1) intervals.
    tolerance: Duration,
    capacity: usize,
    /// Each client's time at which its bucket is full again.
    full_at: HashMap<K, Duration>,
}

impl<K: Hash + Eq> Limiter<K> {
    /// A limiter of `rate` tokens per second (finite, above 0), buckets of `burst` tokens (at
    /// least 1), tracking at most `capacity` clients (at least 1).
    pub fn new(rate: f64, burst: u32, capacity: usize) -> Self {
        assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
        assert!(
            burst >= 1 && capacity >= 1,
            "burst {burst}, capacity {capacity}"
        );
        let interval = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::MAX);
        Self {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            capacity,
            full_at: HashMap::new(),
        }
    }

    /// Takes a token of `client`'s bucket at the time `now`, or says how long until one is
    /// there.
    pub fn take(&mut self, client: K, now: Duration) -> Result<(), Duration> {
        if self.full_at.len() >= self.capacity && !self.full_at.contains_key(&client) {
            self.make_room(now);
        }
        let full_at = self.full_at.entry(client).or_insert(now);
        let ahead = full_at.saturating_sub(now);
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *full_at = now.saturating_add(ahead).saturating_add(self.interval);
        Ok(())
    }

    /// How many clients are tracked.
    pub fn clients(&self) -> usize {
        self.full_at.len()
    }

    /// Frees at least an eighth of the table (at least one slot): the buckets full at `now`,
    /// then those that will be full soonest.
    fn make_room(&mut self, now: Duration) {
        self.full_at.retain(|_, full_at| *full_at > now);
        let keep = self.capacity - (self.capacity / 8).max(1);
        if self.full_at.len() > keep {
            let mut times: Vec<Duration> = self.full_at.values().copied().collect();
            let excess = self.full_at.len() - keep;
            let (_, &mut last_dropped, _) = times.select_nth_unstable(excess - 1);
            self.full_at.retain(|_, full_at| *full_at > last_dropped);
        }
    }
}

/// `wait` in whole seconds, rounded up, at least 1: the value of a `retry-after` header.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_bucket_refuses_until_it_refills() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(2.0, 3, 10);
        for _ in 0..3 {
            assert_eq!(limiter.take("a", start), Ok(()));
        }
        // Empty: one token comes back after 1 / rate = 500 ms.
        assert_eq!(limiter.take("a", start), Err(ms(500)));
        assert_eq!(limiter.take("a", start + ms(200)), Err(ms(300)));
        assert_eq!(limiter.take("a", start + ms(500)), Ok(()));
        assert_eq!(limiter.take("a", start + ms(500)), Err(ms(500)));
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1.0, 1, 10);
        assert_eq!(limiter.take("a", start), Ok(()));
        // Refused every 100 ms: the refusals do not push the refill back.
        for i in 1..10 {
            assert!(limiter.take("a", start + ms(i * 100)).is_err());
        }
        assert_eq!(limiter.take("a", start + ms(1000)), Ok(()));
    }

    #[test]
    fn a_bucket_refills_no_higher_than_its_burst() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(10.0, 2, 10);
        assert_eq!(limiter.take("a", start), Ok(()));
        // An hour later: 2 tokens, not 36,000.
        let later = start + Duration::from_secs(3600);
        assert_eq!(limiter.take("a", later), Ok(()));
        assert_eq!(limiter.take("a", later), Ok(()));
        assert_eq!(limiter.take("a", later), Err(ms(100)));
    }

    #[test]
    fn clients_have_buckets_of_their_own() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1.0, 1, 10);
        assert_eq!(limiter.take("a", start), Ok(()));
        assert!(limiter.take("a", start).is_err());
        assert_eq!(limiter.take("b", start), Ok(()));
    }

    #[test]
    fn a_full_table_drops_full_buckets_first() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1.0, 2, 3);
        // `a` comes first and is refilled by the time `d` comes; `b` and `c` are not.
        limiter.take("a", start).unwrap();
        limiter.take("b", start + ms(900)).unwrap();
        limiter.take("c", start + ms(900)).unwrap();
        limiter.take("d", start + ms(1000)).unwrap();
        assert_eq!(limiter.clients(), 3);
        // `b` and `c` kept their state: one token left each, then none.
        for client in ["b", "c"] {
            assert_eq!(limiter.take(client, start + ms(1000)), Ok(()));
            assert!(limiter.take(client, start + ms(1000)).is_err(), "{client}");
        }
    }

    #[test]
    fn a_full_table_of_busy_clients_drops_the_buckets_full_soonest() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1.0, 1, 16);
        for i in 0..16u64 {
            limiter.take(i, start + ms(i)).unwrap();
        }
        // None is full again: the two full soonest (an eighth of 16) make room for the newcomer.
        limiter.take(100, start + ms(20)).unwrap();
        assert_eq!(limiter.clients(), 15);
        for i in 2..16 {
            assert!(limiter.take(i, start + ms(20)).is_err(), "{i} was dropped");
        }
        // A dropped client starts again with a full bucket.
        assert_eq!(limiter.take(0, start + ms(20)), Ok(()));
        assert_eq!(limiter.clients(), 16);
    }

    #[test]
    fn a_table_of_one_keeps_the_last_client() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1.0, 1, 1);
        limiter.take("a", start).unwrap();
        limiter.take("b", start).unwrap();
        assert_eq!(limiter.clients(), 1);
        assert!(limiter.take("b", start).is_err());
    }

    #[test]
    fn a_tiny_rate_waits_long_without_overflowing() {
        let start = Duration::ZERO;
        let mut limiter = Limiter::new(1e-300, 1, 1);
        limiter.take("a", start).unwrap();
        assert_eq!(limiter.take("a", start), Err(Duration::MAX));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }
}

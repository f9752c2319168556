//! When to renew and how long to back off: pure arithmetic, unit-tested.

use std::time::Duration;

const DAY: u64 = 86_400;

/// How long before expiry renewal starts: `renew_before` if configured,
/// else 30 days or a third of the lifetime, whichever is shorter.
pub fn window(renew_before: Option<Duration>, not_before: i64, not_after: i64) -> Duration {
    renew_before.unwrap_or_else(|| {
        let lifetime = not_after.saturating_sub(not_before).max(0) as u64;
        Duration::from_secs((30 * DAY).min(lifetime / 3))
    })
}

/// Time from `now` until renewal is due; `jitter` in [0, 1) moves the
/// moment earlier by up to a tenth of the window (at most an hour), so a
/// fleet does not renew in lockstep.
pub fn until_renewal(
    now: i64,
    not_before: i64,
    not_after: i64,
    renew_before: Option<Duration>,
    jitter: f64,
) -> Duration {
    let w = window(renew_before, not_before, not_after).as_secs();
    let spread = (w / 10).min(3600) as f64 * jitter.clamp(0.0, 1.0);
    let due = not_after.saturating_sub(w.min(i64::MAX as u64) as i64).saturating_sub(spread as i64);
    Duration::from_secs(due.saturating_sub(now).max(0) as u64)
}

/// Exponential backoff after `failures` consecutive failures: 2 s, 4 s,
/// 8 s, ... capped at one hour.
pub fn backoff(failures: u32) -> Duration {
    let secs = 2u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_secs(secs.min(3600))
}

/// A random number in [0, 1) from the crypto provider's RNG.
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    if rng.fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_window_is_30_days_or_a_third() {
        let ninety = 90 * DAY as i64;
        assert_eq!(window(None, 0, ninety), Duration::from_secs(30 * DAY));
        assert_eq!(window(None, 0, 6 * DAY as i64), Duration::from_secs(2 * DAY));
        assert_eq!(window(Some(Duration::from_secs(5)), 0, ninety), Duration::from_secs(5));
    }

    #[test]
    fn renewal_time() {
        let ninety = 90 * DAY as i64;
        // 90-day cert at day 0: due at day 60 (minus jitter).
        assert_eq!(until_renewal(0, 0, ninety, None, 0.0), Duration::from_secs(60 * DAY));
        assert!(until_renewal(0, 0, ninety, None, 0.99) < Duration::from_secs(60 * DAY));
        // Already inside the window: now.
        assert_eq!(until_renewal(ninety - 5, 0, ninety, None, 0.0), Duration::ZERO);
        // renew_before longer than the lifetime: now.
        let long = Some(Duration::from_secs(1000 * DAY));
        assert_eq!(until_renewal(0, 0, ninety, long, 0.3), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(50), Duration::from_secs(3600));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}

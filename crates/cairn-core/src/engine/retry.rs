//! Backoff between attempts of a step: exponential, capped, with jitter, and never
//! shorter than what the other side asked for (`Retry-After`).

use std::time::Duration;

use crate::workflow::RetryPolicy;

/// The delay after failed attempt number `attempt` (1-based): `initial × multiplier^(attempt-1)`,
/// capped at `max_delay`, scaled by a random factor in `[1 - jitter, 1 + jitter]`
/// (`rand01` in `[0, 1)`), and raised to `retry_after` when that is longer.
pub fn delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    rand01: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(1000) as i32;
    let base = policy.initial_delay_ms as f64 * policy.multiplier.powi(exponent);
    let capped = base.min(policy.max_delay_ms as f64);
    let factor = 1.0 + policy.jitter * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
    let ms = (capped * factor).clamp(0.0, policy.max_delay_ms as f64);
    let computed = Duration::from_millis(ms.round() as u64);
    match retry_after {
        Some(asked) if asked > computed => asked,
        _ => computed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_and_caps() {
        let p = policy(0.0);
        let ms: Vec<u128> = (1..=6)
            .map(|a| delay(&p, a, None, 0.5).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(0.2);
        assert_eq!(delay(&p, 2, None, 0.0).as_millis(), 160);
        assert_eq!(delay(&p, 2, None, 0.999_999).as_millis(), 240);
        for i in 0..100 {
            let d = delay(&p, 3, None, i as f64 / 100.0).as_millis();
            assert!((320..=480).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let p = policy(0.0);
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(5)), 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(
            delay(&p, 1, Some(Duration::from_millis(10)), 0.5),
            Duration::from_millis(100)
        );
    }
}

//! How soon a failed reconcile is tried again, the same for every controller: 5 s after the
//! first failure of a streak, doubling to 5 minutes. Pure.

use std::time::Duration;

/// The first retry.
const FIRST: Duration = Duration::from_secs(5);
/// The longest wait.
const LONGEST: Duration = Duration::from_secs(300);

/// The wait before retrying after the `attempt`th consecutive failure (1 for the first).
pub fn delay(attempt: u32) -> Duration {
    let doublings = attempt.clamp(1, 7) - 1;
    FIRST.saturating_mul(1 << doublings).min(LONGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_seconds_doubling_to_five_minutes() {
        let waits: Vec<u64> = (0..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), LONGEST);
    }
}

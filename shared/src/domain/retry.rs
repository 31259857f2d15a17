//! When to try a failed delivery again (SPEC §6): the configured schedule with ±20 % jitter,
//! never sooner than the provider's `retry_after`.

use std::time::Duration;

use rand::Rng;

use super::Period;

/// The delay before the next try after `failures` failed runs (1 = the first attempt failed),
/// or None when the schedule — the retry budget — is used up.
pub fn next_delay(schedule: &[Period], failures: usize, retry_after: Option<Duration>) -> Option<Duration> {
    let base = schedule.get(failures.checked_sub(1)?)?.0;
    let jitter = rand::rng().random_range(-0.2..=0.2);
    let delay = base.mul_f64(1.0 + jitter);
    Some(retry_after.map_or(delay, |after| delay.max(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Period> {
        super::super::duration::parse_list("1m,5m,15m").expect("schedule")
    }

    #[test]
    fn each_failure_takes_the_next_delay_within_twenty_percent() {
        for (failures, minutes) in [(1, 1.0), (2, 5.0), (3, 15.0)] {
            for _ in 0..50 {
                let d = next_delay(&schedule(), failures, None).expect("within budget").as_secs_f64();
                assert!(d >= minutes * 60.0 * 0.8 - 1e-6 && d <= minutes * 60.0 * 1.2 + 1e-6, "{d}");
            }
        }
    }

    #[test]
    fn the_schedule_length_is_the_retry_budget() {
        assert!(next_delay(&schedule(), 4, None).is_none());
        assert!(next_delay(&schedule(), 0, None).is_none());
        assert!(next_delay(&[], 1, None).is_none());
    }

    #[test]
    fn a_providers_retry_after_is_never_undercut() {
        let d = next_delay(&schedule(), 1, Some(Duration::from_secs(600))).expect("within budget");
        assert_eq!(d, Duration::from_secs(600));
    }
}

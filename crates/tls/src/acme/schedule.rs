//! When to renew, when to ask the CA again and how long to back off: pure functions of the
//! certificate's validity, the CA's renewal window (ARI, RFC 9773) and the failure count.
//!
//! Random choices come in as a fraction `u` in [0, 1), drawn once per certificate and
//! issuance, so that checking the window again does not move the renewal time around.

use std::time::{Duration, SystemTime};

/// Most jitter subtracted from the one-third point: 6 h.
pub const MAX_JITTER: Duration = Duration::from_secs(6 * 3600);
/// How often the CA's renewal window is fetched again when it gave no `Retry-After`
/// (or offers no ARI): 6 h.
pub const ARI_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// Bounds on the CA's `Retry-After` for the renewal window (RFC 9773 section 4.3 suggests
/// treating less than a minute as a minute and more than a day as a day).
pub const ARI_RECHECK_MIN: Duration = Duration::from_secs(60);
pub const ARI_RECHECK_MAX: Duration = Duration::from_secs(86_400);

fn fraction(u: f64) -> f64 {
    if (0.0..=1.0).contains(&u) {
        u
    } else {
        0.0
    }
}

/// When a certificate valid from `not_before` to `not_after` is renewed without ARI: when a
/// third of its own lifetime is left (so 90-, 64-, 45- and 6-day certificates all renew in
/// time; nothing assumes 90 days), minus a jitter of up to 1/50 of the lifetime, at most
/// [`MAX_JITTER`], so many certificates issued together do not renew together.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, u: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let jitter = (lifetime / 50).min(MAX_JITTER).mul_f64(fraction(u));
    not_after.checked_sub(lifetime / 3 + jitter).unwrap_or(not_before)
}

/// A time inside the CA's suggested renewal window (RFC 9773 section 4.2: a time chosen
/// uniformly in the window), at fraction `u`. A window whose end does not follow its start
/// is invalid and treated as no answer (section 4.2).
pub fn in_window(start: SystemTime, end: SystemTime, u: f64) -> Option<SystemTime> {
    let span = end.duration_since(start).ok().filter(|s| !s.is_zero())?;
    Some(start + span.mul_f64(fraction(u)))
}

/// How long until the renewal window is fetched again (RFC 9773 section 4.3): the CA's
/// `Retry-After`, bounded to [1 min, 1 day], or [`ARI_RECHECK`] without one.
pub fn ari_recheck(retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(d) => d.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX),
        None => ARI_RECHECK,
    }
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// When the loop wakes.
    pub at: SystemTime,
    /// Whether it orders then (else it only fetches the renewal window again).
    pub renew: bool,
    /// When the renewal is planned as far as known now (for `status.json`).
    pub renewal: SystemTime,
}

/// Combines the certificate's own renewal time with the CA's window: renew at the earlier
/// of the two, and wake before that to fetch the window again when it is further away
/// than `recheck`, so a CA that moves the window earlier (a revocation coming) is heard.
pub fn plan(now: SystemTime, own: SystemTime, window: Option<SystemTime>, recheck: Duration) -> Wake {
    let renewal = window.map_or(own, |w| w.min(own));
    if renewal <= now {
        return Wake {
            at: now,
            renew: true,
            renewal,
        };
    }
    let check = now + recheck;
    if check < renewal {
        Wake {
            at: check,
            renew: false,
            renewal,
        }
    } else {
        Wake {
            at: renewal,
            renew: true,
            renewal,
        }
    }
}

/// The wait after `failures` failed attempts in a row (at least 1): `min`, doubled per
/// further failure, at most `max`. Exact (no floating point), so the log can be checked.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(31);
    min.checked_mul(1u32 << shift).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    /// Renewal with a third of the lifetime left, for the certificate's own lifetime.
    fn check_lifetime(days: u64, jitter: Duration) {
        let (from, to) = (t0(), t0() + DAY * days as u32);
        let third = DAY * days as u32 / 3;
        assert_eq!(renew_at(from, to, 0.0), to - third, "{days} days, no jitter");
        assert_eq!(
            renew_at(from, to, 1.0),
            to - third - jitter,
            "{days} days, full jitter"
        );
        let mid = renew_at(from, to, 0.5);
        assert!(mid < to - third && mid > to - third - jitter, "{days} days");
        // Never later than the one-third point, never more than the jitter earlier.
        assert!(to.duration_since(mid).unwrap() >= third);
    }

    #[test]
    fn renews_at_a_third_of_the_certificates_own_lifetime() {
        // 90 days: 30 days left; jitter 1.8 days, capped at 6 h.
        check_lifetime(90, MAX_JITTER);
        // 64 days (Let's Encrypt from 2026): 21 d 8 h left.
        check_lifetime(64, MAX_JITTER);
        assert_eq!(
            renew_at(t0(), t0() + DAY * 64, 0.0),
            t0() + DAY * 64 - (DAY * 21 + HOUR * 8)
        );
        // 45 days (Let's Encrypt from 2028): 15 days left.
        check_lifetime(45, MAX_JITTER);
        assert_eq!(renew_at(t0(), t0() + DAY * 45, 0.0), t0() + DAY * 30);
        // 6 days (short-lived): 2 days left, jitter 6 d / 50 = 2 h 52 min 48 s.
        check_lifetime(6, Duration::from_secs(6 * 86_400 / 50));
    }

    #[test]
    fn odd_validity_never_panics() {
        // notAfter before notBefore: renew now-ish (at notAfter), no underflow.
        assert_eq!(renew_at(t0(), t0() - DAY, 0.5), t0() - DAY);
        assert_eq!(
            renew_at(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, 0.9),
            SystemTime::UNIX_EPOCH
        );
        assert_eq!(renew_at(t0(), t0() + DAY, f64::NAN), t0() + DAY - DAY / 3);
    }

    #[test]
    fn window_pick_and_invalid_windows() {
        assert_eq!(in_window(t0(), t0() + DAY, 0.5), Some(t0() + DAY / 2));
        assert_eq!(in_window(t0(), t0(), 0.5), None);
        assert_eq!(in_window(t0() + DAY, t0(), 0.5), None);
    }

    #[test]
    fn the_window_is_fetched_again_at_the_cas_pace() {
        assert_eq!(ari_recheck(None), 6 * HOUR);
        assert_eq!(ari_recheck(Some(Duration::from_secs(5))), Duration::from_secs(60));
        assert_eq!(ari_recheck(Some(2 * HOUR)), 2 * HOUR);
        assert_eq!(ari_recheck(Some(10 * DAY)), DAY);
    }

    #[test]
    fn a_window_moved_earlier_is_followed() {
        let now = t0();
        let own = now + 40 * DAY;
        // The CA suggests day 30: wake in 6 h to look again, do not renew yet.
        let first = plan(now, own, Some(now + 30 * DAY), ari_recheck(None));
        assert_eq!(
            first,
            Wake {
                at: now + 6 * HOUR,
                renew: false,
                renewal: now + 30 * DAY
            }
        );
        // 6 h later the CA moved the window into the past (it will revoke): renew now.
        let later = first.at;
        let second = plan(later, own, Some(later - HOUR), ari_recheck(Some(HOUR)));
        assert!(second.renew);
        assert_eq!(second.at, later);
        // Without ARI the certificate's own time counts; still woken every 6 h.
        let plain = plan(now, own, None, ari_recheck(None));
        assert_eq!(
            (plain.at, plain.renew, plain.renewal),
            (now + 6 * HOUR, false, own)
        );
        // Renewal closer than the next check: wake exactly then, and renew.
        let close = plan(now, now + HOUR, None, ari_recheck(None));
        assert_eq!((close.at, close.renew), (now + HOUR, true));
        // A window later than the certificate's own time does not delay renewal.
        let late = plan(now, now + HOUR, Some(now + 50 * DAY), ari_recheck(None));
        assert_eq!(late.renewal, now + HOUR);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let waits: Vec<Duration> = (1..=7).map(|f| backoff(min, max, f)).collect();
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            waits,
            vec![ms(200), ms(400), ms(800), ms(1600), ms(2000), ms(2000), ms(2000)]
        );
        assert_eq!(backoff(min, max, 0), min);
        assert_eq!(backoff(Duration::from_secs(60), DAY, 1000), DAY, "no overflow");
    }
}

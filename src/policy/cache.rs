//! A bounded in-memory cache of resolution outcomes, so that a burst of mail to one recipient
//! makes one lookup. Positive answers live until the policy's expiry (at most
//! [`POSITIVE_TTL`]); "no valid policy" for [`NEGATIVE_TTL`]; transient failures for at most a
//! minute, so that a DNS hiccup does not refuse mail for long.

use super::resolve::ResolveFailure;
use super::verify::Verified;
use moka::sync::Cache;
use moka::Expiry;
use std::time::{Duration, Instant};

pub const POSITIVE_TTL: Duration = Duration::from_secs(3600);
pub const NEGATIVE_TTL: Duration = Duration::from_secs(600);
pub const TRANSIENT_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most (each is a few KB).
pub const CAPACITY: u64 = 10_000;

pub type Outcome = Result<Verified, ResolveFailure>;

#[derive(Clone)]
pub struct PolicyCache {
    inner: Cache<String, Outcome>,
}

struct OutcomeExpiry {
    transient: Duration,
}

impl Expiry<String, Outcome> for OutcomeExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Outcome,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Err(ResolveFailure::Temporary(_)) => ttl_of(value).min(self.transient),
            _ => ttl_of(value),
        })
    }
}

/// How long an outcome may be reused.
pub fn ttl_of(outcome: &Outcome) -> Duration {
    match outcome {
        Ok(verified) => match verified.expires() {
            Some(expires) => {
                let left = expires - time::OffsetDateTime::now_utc();
                Duration::try_from(left)
                    .unwrap_or(Duration::ZERO)
                    .min(POSITIVE_TTL)
            }
            None => POSITIVE_TTL,
        },
        Err(ResolveFailure::NoValidPolicy(_)) => NEGATIVE_TTL,
        Err(ResolveFailure::Temporary(_)) => TRANSIENT_TTL,
    }
}

impl PolicyCache {
    /// A cache of `capacity` outcomes; a transient failure is kept for at most `transient`
    /// (and never longer than [`TRANSIENT_TTL`]).
    pub fn new(capacity: u64, transient: Duration) -> PolicyCache {
        PolicyCache {
            inner: Cache::builder()
                .max_capacity(capacity)
                .expire_after(OutcomeExpiry { transient })
                .build(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Outcome> {
        self.inner.get(key)
    }

    pub fn insert(&self, key: String, outcome: Outcome) {
        self.inner.insert(key, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_kept_at_most_a_minute() {
        assert!(ttl_of(&Err(ResolveFailure::Temporary("x".into()))) <= Duration::from_secs(60));
        assert_eq!(
            ttl_of(&Err(ResolveFailure::NoValidPolicy("x".into()))),
            NEGATIVE_TTL
        );
        let cache = PolicyCache::new(2, TRANSIENT_TTL);
        cache.insert("a".into(), Err(ResolveFailure::Temporary("t".into())));
        assert!(matches!(
            cache.get("a"),
            Some(Err(ResolveFailure::Temporary(_)))
        ));
        assert!(cache.get("b").is_none());
    }
}

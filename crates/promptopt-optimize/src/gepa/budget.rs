//! The metric-call budget of GEPA's loop.
//!
//! A metric call is one example evaluated by one candidate (a rollout); reflection calls are not
//! metric calls. Unlike DSPy, which checks its budget only at the top of an iteration and can
//! overshoot it, every evaluation here first reserves its calls: an evaluation that would
//! exceed the budget is not started and the run stops, so the count never passes the limit.

use serde::{Deserialize, Serialize};

/// Metric calls allowed and used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricBudget {
    /// The limit, `None` for unlimited.
    pub max: Option<u64>,
    /// Calls used so far.
    pub used: u64,
}

impl MetricBudget {
    /// A budget of `max` calls (`None`: unlimited).
    pub fn new(max: Option<u64>) -> Self {
        Self { max, used: 0 }
    }

    /// Whether `calls` more calls fit.
    pub fn fits(&self, calls: u64) -> bool {
        self.max
            .is_none_or(|max| self.used.saturating_add(calls) <= max)
    }

    /// Reserves `calls` calls if they fit; `false` (and nothing reserved) otherwise.
    pub fn reserve(&mut self, calls: u64) -> bool {
        if self.fits(calls) {
            self.used = self.used.saturating_add(calls);
            true
        } else {
            false
        }
    }

    /// Calls left, `None` when unlimited.
    pub fn remaining(&self) -> Option<u64> {
        self.max.map(|max| max.saturating_sub(self.used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_limit() {
        let mut b = MetricBudget::new(Some(10));
        assert!(b.reserve(4));
        assert!(b.reserve(6));
        assert!(!b.reserve(1));
        assert_eq!(b.used, 10);
        let mut b = MetricBudget::new(Some(10));
        assert!(b.reserve(8));
        assert!(
            !b.reserve(3),
            "an evaluation of 3 does not start with 2 left"
        );
        assert_eq!(b.used, 8);
        assert_eq!(b.remaining(), Some(2));
        let mut u = MetricBudget::new(None);
        assert!(u.reserve(u64::MAX));
        assert_eq!(u.remaining(), None);
    }
}

//! The state of one rule between evaluations, and the step each evaluation makes.

use std::time::{Instant, SystemTime};

use crate::rule::Rule;

/// Where an alert stands. "Resolved" is not a state but the step from firing back to
/// inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AlertState {
    /// The condition does not hold (or the rule was never evaluated).
    #[default]
    Inactive,
    /// The condition holds, for less than the rule's `for` so far.
    Pending {
        /// The evaluation that first found the condition holding.
        since: Instant,
    },
    /// The condition has held for the rule's `for`; notified.
    Firing {
        /// The evaluation that started firing.
        since: Instant,
        /// The same moment on the wall clock (`startsAt`).
        started_at: SystemTime,
    },
}

impl AlertState {
    /// `inactive`, `pending` or `firing`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending { .. } => "pending",
            AlertState::Firing { .. } => "firing",
        }
    }
}

/// A change of one rule's state in one evaluation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The rule's name.
    pub rule: String,
    /// `inactive`, `pending` or `firing`.
    pub from: &'static str,
    /// `pending`, `inactive` (a pending alert cleared), `firing` or `resolved` (a firing
    /// alert cleared).
    pub to: &'static str,
    /// The value compared.
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
}

/// What a step changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    Pending,
    Cleared,
    Fired { from: &'static str, started_at: SystemTime },
    Resolved { started_at: SystemTime },
}

impl Change {
    /// The `from` and `to` of its [`Transition`].
    pub(crate) fn names(self) -> (&'static str, &'static str) {
        match self {
            Change::Pending => ("inactive", "pending"),
            Change::Cleared => ("pending", "inactive"),
            Change::Fired { from, .. } => (from, "firing"),
            Change::Resolved { .. } => ("firing", "resolved"),
        }
    }
}

/// One rule's state, and what it remembers between evaluations.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleState {
    pub(crate) state: AlertState,
    /// The last value compared: `None` before the first, and for a rate rule until its
    /// second reading.
    pub(crate) value: Option<f64>,
    /// The threshold of the last comparison.
    pub(crate) threshold: Option<f64>,
    /// When the current pending or firing state began, on the wall clock.
    pub(crate) since: Option<SystemTime>,
    /// Rate rules: the counter at the previous reading, and when.
    baseline: Option<(f64, Instant)>,
}

impl RuleState {
    /// The value to compare: the metric itself, or for a rate rule the counter's increase per
    /// second since the previous reading (`None` at the first reading, or at the same instant
    /// again).
    pub(crate) fn aggregate(&mut self, raw: f64, rate: bool, now: Instant) -> Option<f64> {
        if !rate {
            return Some(raw);
        }
        let Some((previous, at)) = self.baseline else {
            self.baseline = Some((raw, now));
            return None;
        };
        let seconds = now.saturating_duration_since(at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        self.baseline = Some((raw, now));
        // A counter that went down was reset: it counted up from zero since.
        let increase = if raw >= previous { raw - previous } else { raw };
        Some(increase / seconds)
    }

    /// One evaluation of `rule` at `value` against `threshold`; `wall` is `now` on the wall
    /// clock.
    pub(crate) fn step(
        &mut self,
        rule: &Rule,
        value: f64,
        threshold: f64,
        hysteresis: f64,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Change> {
        self.value = Some(value);
        self.threshold = Some(threshold);
        let holds = rule.comparison.holds(value, threshold);
        match self.state {
            AlertState::Inactive if !holds => None,
            AlertState::Inactive if rule.for_duration.is_zero() => Some(self.fire("inactive", now, wall)),
            AlertState::Inactive => {
                self.state = AlertState::Pending { since: now };
                self.since = Some(wall);
                Some(Change::Pending)
            }
            AlertState::Pending { .. } if !holds => {
                self.reset();
                Some(Change::Cleared)
            }
            AlertState::Pending { since } if now.saturating_duration_since(since) >= rule.for_duration => {
                Some(self.fire("pending", now, wall))
            }
            AlertState::Pending { .. } => None,
            AlertState::Firing { started_at, .. } => {
                if rule.keeps_firing(value, threshold, hysteresis) {
                    None
                } else {
                    self.reset();
                    Some(Change::Resolved { started_at })
                }
            }
        }
    }

    fn fire(&mut self, from: &'static str, now: Instant, wall: SystemTime) -> Change {
        self.state = AlertState::Firing {
            since: now,
            started_at: wall,
        };
        self.since = Some(wall);
        Change::Fired { from, started_at: wall }
    }

    /// Back to inactive.
    pub(crate) fn reset(&mut self) {
        self.state = AlertState::Inactive;
        self.since = None;
    }

    /// When it started firing, if it fires.
    pub(crate) fn firing_since(&self) -> Option<SystemTime> {
        match self.state {
            AlertState::Firing { started_at, .. } => Some(started_at),
            _ => None,
        }
    }
}

//! Decisions per time bucket. The bucket width is the smallest round duration
//! (1 s, 5 s, … 1 h, 2 h, … 1 day, 1 week) that cuts the window into at most
//! [`MAX_BUCKETS`] pieces, and buckets start at multiples of it since the epoch, so
//! axis labels read `12:00`, `12:30`, … rather than the minute the report ran.

use crate::record::Effect;
use crate::report::model::{TimeBucket, Timeline, Window};

/// At most this many buckets, plus one when the window does not start on a bucket
/// boundary.
pub(crate) const MAX_BUCKETS: i64 = 48;

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const ROUND_WIDTHS: [i64; 20] = [
    SECOND,
    5 * SECOND,
    10 * SECOND,
    30 * SECOND,
    MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    90 * DAY,
];

/// The counting side of a [`Timeline`].
#[derive(Debug)]
pub(crate) struct TimelineCounter {
    first_start: i64,
    width: i64,
    /// `[allow, deny, dry_run_deny]` per bucket.
    counts: Vec<[u64; 3]>,
}

impl TimelineCounter {
    pub(crate) fn new(window: Window) -> Self {
        let span = i128::from(window.until_micros) - i128::from(window.since_micros);
        if span < 0 {
            return Self {
                first_start: window.since_micros,
                width: SECOND,
                counts: Vec::new(),
            };
        }
        let wanted = (span + i128::from(MAX_BUCKETS) - 1)
            .div_euclid(i128::from(MAX_BUCKETS))
            .max(1);
        let width = ROUND_WIDTHS
            .iter()
            .copied()
            .find(|w| i128::from(*w) >= wanted)
            .unwrap_or_else(|| i64::try_from(wanted).unwrap_or(i64::MAX));
        let first_start = window.since_micros.div_euclid(width).saturating_mul(width);
        let buckets = (i128::from(window.until_micros) - i128::from(first_start)).div_euclid(i128::from(width)) + 1;
        let buckets = usize::try_from(buckets.clamp(0, i128::from(MAX_BUCKETS) + 1)).unwrap_or(0);
        Self {
            first_start,
            width,
            counts: vec![[0; 3]; buckets],
        }
    }

    /// Counts one decision at a time inside the window.
    pub(crate) fn add(&mut self, time_micros: i64, effect: Effect) {
        let index = (i128::from(time_micros) - i128::from(self.first_start)).div_euclid(i128::from(self.width));
        let Some(counts) = usize::try_from(index).ok().and_then(|i| self.counts.get_mut(i)) else {
            return;
        };
        let slot = match effect {
            Effect::Allow => &mut counts[0],
            Effect::Deny => &mut counts[1],
            Effect::DryRunDeny => &mut counts[2],
        };
        *slot += 1;
    }

    pub(crate) fn finish(self) -> Timeline {
        let width = self.width;
        let buckets = self
            .counts
            .into_iter()
            .zip(0_i64..)
            .map(|([allow, deny, dry_run_deny], i)| TimeBucket {
                start: crate::report::Timestamp(self.first_start.saturating_add(i.saturating_mul(width))),
                allow,
                deny,
                dry_run_deny,
            })
            .collect();
        Timeline {
            bucket_micros: width,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(since: i64, until: i64) -> Window {
        Window {
            since_micros: since,
            until_micros: until,
        }
    }

    #[test]
    fn a_day_is_cut_into_half_hours_on_the_clock() {
        let since = 1_700_000_000 * SECOND + 7 * MINUTE; // not on a boundary
        let counter = TimelineCounter::new(window(since, since + DAY));
        assert_eq!(counter.width, 30 * MINUTE);
        assert_eq!(counter.first_start % (30 * MINUTE), 0);
        assert_eq!(counter.counts.len(), 49);
    }

    #[test]
    fn decisions_land_in_their_bucket_and_strays_are_dropped() {
        let mut counter = TimelineCounter::new(window(0, HOUR - 1));
        counter.add(0, Effect::Allow);
        counter.add(HOUR - 1, Effect::Deny);
        counter.add(HOUR * 5, Effect::Deny);
        counter.add(-1, Effect::Deny);
        let timeline = counter.finish();
        assert_eq!(timeline.bucket_micros, 5 * MINUTE);
        assert_eq!(timeline.buckets.len(), 12);
        assert_eq!(timeline.buckets.first().map(|b| (b.allow, b.deny)), Some((1, 0)));
        assert_eq!(timeline.buckets.last().map(|b| (b.allow, b.deny)), Some((0, 1)));
    }

    #[test]
    fn odd_windows_do_not_panic() {
        assert!(TimelineCounter::new(window(10, 5)).finish().buckets.is_empty());
        let whole = TimelineCounter::new(window(i64::MIN, i64::MAX)).finish();
        assert!(!whole.buckets.is_empty() && whole.buckets.len() <= 49);
        assert_eq!(TimelineCounter::new(window(7, 7)).finish().buckets.len(), 1);
    }
}

//! How many deliveries that were not recorded get a log line of their own. A flood of
//! forged requests must cost a bounded number of lines (a line costs more than checking a
//! signature), while the metrics count every one: per outcome, the first [`EACH`] of a
//! window are logged one by one; the rest are counted, and one summary line per window
//! reports them. Recorded deliveries are not counted here: each keeps its line.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Lines of their own per outcome and window.
pub const EACH: u32 = 5;
/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The current window's counts, per outcome label.
#[derive(Debug, Default)]
pub struct Refusals {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    logged: BTreeMap<&'static str, u32>,
    unlogged: BTreeMap<&'static str, u64>,
}

impl Refusals {
    /// Counts one delivery with outcome `label`; whether it gets a line of its own.
    pub fn admit(&self, label: &'static str) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let logged = window.logged.entry(label).or_insert(0);
        if *logged < EACH {
            *logged += 1;
            return true;
        }
        *window.unlogged.entry(label).or_insert(0) += 1;
        false
    }

    /// Ends the window: what it counted without a line, by outcome (`None`: nothing).
    pub fn end_window(&self) -> Option<Summary> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.logged.clear();
        let unlogged = std::mem::take(&mut window.unlogged);
        (!unlogged.is_empty()).then_some(Summary(unlogged))
    }
}

/// Deliveries of one window that got no line of their own, by outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary(BTreeMap<&'static str, u64>);

impl Summary {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Whether a sink failed to record some of them (labels `sink_*`).
    pub fn has_sink_failures(&self) -> bool {
        self.0.keys().any(|label| label.starts_with("sink_"))
    }
}

/// `signature_mismatch=12000, stale_timestamp=345`: the largest first.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut counts: Vec<_> = self.0.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (i, (label, n)) in counts.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{label}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_of_each_outcome_get_a_line_then_a_summary_counts_the_rest() {
        let r = Refusals::default();
        let lines = (0..10_000)
            .filter(|i| {
                r.admit(if i % 100 == 0 {
                    "stale_timestamp"
                } else {
                    "signature_mismatch"
                })
            })
            .count();
        assert_eq!(lines, 2 * EACH as usize);
        let summary = r.end_window().expect("a summary");
        assert_eq!(summary.total(), 10_000 - 2 * u64::from(EACH));
        assert_eq!(
            summary.to_string(),
            format!(
                "signature_mismatch={}, stale_timestamp={}",
                9_900 - EACH,
                100 - EACH
            )
        );
        assert!(!summary.has_sink_failures());
        for _ in 0..=EACH {
            r.admit("sink_unavailable");
        }
        assert!(r.end_window().expect("a summary").has_sink_failures());
        // a new window: lines again, and nothing to summarise yet
        assert!(r.admit("signature_mismatch"));
        assert_eq!(r.end_window(), None);
    }
}

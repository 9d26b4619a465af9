//! Session-count monitoring: the symptom of the seed problem is a session
//! count that keeps rising while nothing comes in. This raises a warning and
//! a metric when, within a window, sessions grew by the threshold or more
//! and no inbound application frame arrived.
//!
//! [`GrowthWindow`] is the rule on its own, fed counts; the node's
//! [`GrowthMonitor`] feeds it this node's, and cluster mode feeds another
//! the whole cluster's (from every node's heartbeat).

use std::time::{Duration, Instant};

use crate::core::hub::Hub;

/// The growth rule over windows of counts: a window is suspect when the
/// session count grew by `threshold` or more and no application frame came
/// in. Counts that fall (a node restarted, its frame counter with it) count
/// as no growth and no traffic, never as negative.
#[derive(Debug, Clone)]
pub struct GrowthWindow {
    window: Duration,
    threshold: u64,
    window_started: Instant,
    sessions_at_start: u64,
    app_frames_at_start: u64,
}

/// What a closed window found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowthVerdict {
    /// Sessions at the window's end.
    pub sessions: u64,
    /// How many more than at its start.
    pub grown: u64,
    /// Whether the alarm is raised: grown past the threshold, no traffic.
    pub suspect: bool,
}

impl GrowthWindow {
    /// Starts the first window at `now` with these counts.
    pub fn new(
        window: Duration,
        threshold: u64,
        now: Instant,
        sessions: u64,
        app_frames: u64,
    ) -> Self {
        GrowthWindow {
            window,
            threshold,
            window_started: now,
            sessions_at_start: sessions,
            app_frames_at_start: app_frames,
        }
    }

    /// Closes the window if it is over at `now` and starts the next;
    /// `None` while it is still open.
    pub fn observe(
        &mut self,
        now: Instant,
        sessions: u64,
        app_frames: u64,
    ) -> Option<GrowthVerdict> {
        if now.saturating_duration_since(self.window_started) < self.window {
            return None;
        }
        let grown = sessions.saturating_sub(self.sessions_at_start);
        let inbound = app_frames.saturating_sub(self.app_frames_at_start);
        self.window_started = now;
        self.sessions_at_start = sessions;
        self.app_frames_at_start = app_frames;
        Some(GrowthVerdict {
            sessions,
            grown,
            suspect: grown >= self.threshold && inbound == 0,
        })
    }

    /// The window's length, for the warning.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// This node's growth alarm, checked every tick.
pub(crate) struct GrowthMonitor {
    rule: GrowthWindow,
}

impl GrowthMonitor {
    /// Starts the first window now.
    pub(crate) fn new(hub: &Hub) -> Self {
        GrowthMonitor {
            rule: GrowthWindow::new(
                Duration::from_millis(hub.config.monitor.window_ms),
                hub.config.monitor.growth_threshold,
                Instant::now(),
                hub.registry.len() as u64,
                hub.app_frames(),
            ),
        }
    }

    /// Closes the window if it is over, and raises or clears the alarm.
    pub(crate) fn check(&mut self, hub: &Hub) {
        let Some(verdict) =
            self.rule
                .observe(Instant::now(), hub.registry.len() as u64, hub.app_frames())
        else {
            return;
        };
        if verdict.suspect {
            tracing::warn!(
                sessions = verdict.sessions,
                grown = verdict.grown,
                window_ms = self.rule.window().as_millis() as u64,
                "session count keeps growing while no application traffic arrives: dead sessions may be piling up"
            );
        }
        hub.metrics
            .suspect_session_growth
            .set(i64::from(verdict.suspect));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_suspect_only_when_sessions_grew_past_the_threshold_without_traffic() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut rule = GrowthWindow::new(second, 10, start, 100, 5);
        assert_eq!(rule.observe(start + second / 2, 500, 5), None, "still open");
        let grown_quietly = rule.observe(start + second, 110, 5);
        assert_eq!(
            grown_quietly,
            Some(GrowthVerdict {
                sessions: 110,
                grown: 10,
                suspect: true
            })
        );
        let grown_with_traffic = rule.observe(start + 2 * second, 130, 6);
        assert_eq!(grown_with_traffic.map(|v| v.suspect), Some(false));
        // A node restarting drops the counts: no growth, never negative.
        let fell = rule.observe(start + 3 * second, 20, 0);
        assert_eq!(fell.map(|v| (v.grown, v.suspect)), Some((0, false)));
    }
}

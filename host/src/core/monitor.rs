//! Session-count monitoring: the symptom of the seed problem is a session
//! count that keeps rising while nothing comes in. This raises a warning and
//! a metric when, within a window, sessions grew by the threshold or more
//! and no inbound application frame arrived.

use std::time::{Duration, Instant};

use crate::core::hub::Hub;

/// Compares each window with the previous one.
pub struct GrowthMonitor {
    window: Duration,
    threshold: u64,
    window_started: Instant,
    sessions_at_start: u64,
    app_frames_at_start: u64,
}

impl GrowthMonitor {
    /// Starts the first window now.
    pub fn new(hub: &Hub) -> Self {
        GrowthMonitor {
            window: Duration::from_millis(hub.config.monitor.window_ms),
            threshold: hub.config.monitor.growth_threshold,
            window_started: Instant::now(),
            sessions_at_start: hub.registry.len() as u64,
            app_frames_at_start: hub.app_frames(),
        }
    }

    /// Closes the window if it is over, and raises or clears the alarm.
    pub fn check(&mut self, hub: &Hub) {
        if self.window_started.elapsed() < self.window {
            return;
        }
        let sessions = hub.registry.len() as u64;
        let app_frames = hub.app_frames();
        let grown = sessions.saturating_sub(self.sessions_at_start);
        let inbound = app_frames.saturating_sub(self.app_frames_at_start);
        let suspect = grown >= self.threshold && inbound == 0;
        if suspect {
            tracing::warn!(
                sessions,
                grown,
                window_ms = self.window.as_millis() as u64,
                "session count keeps growing while no application traffic arrives: dead sessions may be piling up"
            );
        }
        hub.metrics.suspect_session_growth.set(i64::from(suspect));
        self.window_started = Instant::now();
        self.sessions_at_start = sessions;
        self.app_frames_at_start = app_frames;
    }
}

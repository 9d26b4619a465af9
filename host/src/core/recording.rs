//! Recording the active policy's calls for `vigil policy replay`: one
//! recording at a time, bounded in time and size, kept until the next one
//! starts so the operator can fetch it. The trace's header names the
//! host settings that shape the policy's input.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_policy_runtime::clock::unix_ms_now;
use vigil_policy_runtime::recorder::RecordingCaps;
use vigil_policy_runtime::trace::{RecordedPolicy, TraceHeader, FORMAT_VERSION};

use crate::core::host::SessionHost;

/// How long a stop waits for the writer to finish the file.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Why a recording could not be started or fetched.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The caps are out of bounds.
    #[error("{0}")]
    BadCaps(String),
    /// One is already running.
    #[error("a recording is already running; stop it first (DELETE /admin/policy/recording)")]
    Busy,
    /// None was started.
    #[error("no recording was started")]
    None,
    /// The trace is not finished yet.
    #[error("the recording is still running; stop it or wait for its cap")]
    Unfinished,
    /// The trace file could not be written or read.
    #[error("trace file: {0}")]
    Io(#[from] std::io::Error),
    /// The policy thread is gone.
    #[error("the policy thread has stopped")]
    PolicyGone,
}

impl SessionHost {
    /// Starts recording every call of the active policy, within `caps`.
    pub async fn start_recording(&self, caps: RecordingCaps) -> Result<Value, RecordingError> {
        caps.validate().map_err(RecordingError::BadCaps)?;
        let hub = &self.hub;
        // Held across the request so two starts cannot race each other.
        let mut slot = hub.recording.lock().await;
        if slot.as_ref().is_some_and(|r| r.is_recording()) {
            return Err(RecordingError::Busy);
        }
        // The previous trace goes (its file is deleted) as the next starts.
        *slot = None;
        let header = TraceHeader {
            vigil_trace: FORMAT_VERSION,
            vigil_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix_ms: unix_ms_now(),
            policy: RecordedPolicy {
                name: String::new(),
                sha256: String::new(),
                config_json: String::new(),
            },
            sessions_at_start: hub.registry.len(),
            host_config: json!({
                "sessions": hub.config.sessions,
                "tiers": hub.config.tiers,
                "policy_limits": hub.config.policy.limits,
            }),
            max_duration_ms: caps.max_duration.as_millis() as u64,
            max_bytes: caps.max_bytes,
        };
        let recording = hub
            .policy
            .record(header, caps, std::env::temp_dir())
            .await
            .map_err(|_| RecordingError::PolicyGone)??;
        let status = recording.status();
        tracing::info!(
            max_seconds = caps.max_duration.as_secs(),
            max_bytes = caps.max_bytes,
            "policy recording started"
        );
        *slot = Some(recording);
        Ok(status)
    }

    /// The current or last recording's state.
    pub async fn recording_status(&self) -> Result<Value, RecordingError> {
        let slot = self.hub.recording.lock().await;
        slot.as_ref()
            .map(|recording| recording.status())
            .ok_or(RecordingError::None)
    }

    /// Ends the running recording once what is queued is written (a
    /// finished one stays as it is).
    pub async fn stop_recording(&self) -> Result<Value, RecordingError> {
        let slot = self.hub.recording.lock().await;
        let recording = slot.as_ref().ok_or(RecordingError::None)?;
        recording.request_stop();
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while recording.is_recording() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(recording.status())
    }

    /// The finished trace, gzip-compressed JSON lines.
    pub async fn recorded_trace(&self) -> Result<Vec<u8>, RecordingError> {
        let slot = self.hub.recording.lock().await;
        let recording = slot.as_ref().ok_or(RecordingError::None)?;
        if recording.is_recording() {
            return Err(RecordingError::Unfinished);
        }
        let path = recording.path().to_owned();
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|error| RecordingError::Io(std::io::Error::other(error)))?
            .map_err(RecordingError::Io)
    }
}

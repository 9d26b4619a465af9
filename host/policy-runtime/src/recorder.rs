//! Recording the active policy's calls into a trace ([`crate::trace`]).
//!
//! The policy thread only hands records over: a [`RecordingTap`] it holds
//! passes each call's arguments and answers, already owned, through a
//! bounded channel to a writer thread, which serializes, compresses and
//! writes them. The policy thread never waits on the disk. If the writer
//! falls behind so far that the channel fills, the recording ends there
//! (`writer-behind`) rather than leave a gap in the middle: a trace is
//! always a complete run of calls from its start to its end record.
//!
//! A recording ends at its time cap, at its size cap (compressed bytes; the
//! record that crosses it is the last), when the operator stops it, or when
//! the active policy changes (a trace is one policy's answers).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

use crate::trace::{TraceHeader, TraceRecord};

/// Records queued for the writer at most.
const QUEUE: usize = 1_024;

/// How often the writer looks at the clock and the stop flag when no
/// record arrives.
const POLL: Duration = Duration::from_millis(50);

/// Bounds of one recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingCaps {
    /// Stop after this long.
    pub max_duration: Duration,
    /// Stop once the compressed file reaches this size.
    pub max_bytes: u64,
}

impl RecordingCaps {
    /// Largest size cap accepted: the trace is served from memory.
    pub const MAX_BYTES: u64 = 256 << 20;
    /// Longest recording accepted.
    pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

    /// Checks the caps against their bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_duration.is_zero() || self.max_duration > Self::MAX_DURATION {
            return Err(format!(
                "max_seconds must be between 1 and {}",
                Self::MAX_DURATION.as_secs()
            ));
        }
        if self.max_bytes < 4_096 || self.max_bytes > Self::MAX_BYTES {
            return Err(format!(
                "max_bytes must be between 4096 and {}",
                Self::MAX_BYTES
            ));
        }
        Ok(())
    }
}

impl Default for RecordingCaps {
    fn default() -> Self {
        RecordingCaps {
            max_duration: Duration::from_secs(300),
            max_bytes: 32 << 20,
        }
    }
}

/// What the recording's two sides share.
#[derive(Debug)]
struct Progress {
    /// False once the writer has ended the recording.
    open: AtomicBool,
    /// Call records written.
    records: AtomicU64,
    /// Compressed bytes in the file so far.
    bytes: Arc<AtomicU64>,
    /// Why it ended (set first by whoever asks it to end).
    end_reason: Mutex<Option<String>>,
    /// A write error, if one ended it.
    error: Mutex<Option<String>>,
}

impl Progress {
    fn request_end(&self, reason: &str) {
        if let Ok(mut end) = self.end_reason.lock() {
            end.get_or_insert_with(|| reason.to_owned());
        }
    }

    fn end_reason(&self) -> Option<String> {
        self.end_reason.lock().ok().and_then(|end| end.clone())
    }
}

/// The policy thread's side: hands records to the writer.
#[derive(Debug)]
pub struct RecordingTap {
    records: SyncSender<TraceRecord>,
    progress: Arc<Progress>,
}

impl RecordingTap {
    /// Whether records are still wanted.
    pub fn is_open(&self) -> bool {
        self.progress.open.load(Ordering::Relaxed)
    }

    /// Queues a record; false when the recording has ended (the tap can be
    /// dropped). A full queue ends the recording before this record.
    pub fn record(&self, record: TraceRecord) -> bool {
        if !self.is_open() {
            return false;
        }
        match self.records.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.progress.request_end("writer-behind");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Ends the recording for `reason` after what is queued.
    pub fn end(self, reason: &str) {
        self.progress.request_end(reason);
    }
}

/// The operator's side: status, stop, and the file once it is done.
#[derive(Debug)]
pub struct Recording {
    header: TraceHeader,
    caps: RecordingCaps,
    started: Instant,
    progress: Arc<Progress>,
    file: tempfile::NamedTempFile,
}

impl Recording {
    /// Starts a recording into a new file in `dir`: writes the header and
    /// the writer thread. Hand the tap to the policy thread.
    pub fn start(
        header: TraceHeader,
        caps: RecordingCaps,
        dir: &Path,
    ) -> io::Result<(Recording, RecordingTap)> {
        let file = tempfile::Builder::new()
            .prefix("vigil-trace-")
            .suffix(".jsonl.gz")
            .tempfile_in(dir)?;
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = CountingFile {
            file: file.reopen()?,
            bytes: Arc::clone(&bytes),
        };
        let mut encoder = GzEncoder::new(counted, Compression::fast());
        serde_json::to_writer(&mut encoder, &header)?;
        encoder.write_all(b"\n")?;
        let progress = Arc::new(Progress {
            open: AtomicBool::new(true),
            records: AtomicU64::new(0),
            bytes,
            end_reason: Mutex::new(None),
            error: Mutex::new(None),
        });
        let (records, inbox) = mpsc::sync_channel(QUEUE);
        let started = Instant::now();
        let writer = Writer {
            encoder,
            progress: Arc::clone(&progress),
            deadline: started + caps.max_duration,
            max_bytes: caps.max_bytes,
        };
        thread::Builder::new()
            .name("vigil-trace".to_owned())
            .spawn(move || writer.run(inbox))?;
        let tap = RecordingTap {
            records,
            progress: Arc::clone(&progress),
        };
        Ok((
            Recording {
                header,
                caps,
                started,
                progress,
                file,
            },
            tap,
        ))
    }

    /// Whether it is still recording.
    pub fn is_recording(&self) -> bool {
        self.progress.open.load(Ordering::Relaxed)
    }

    /// Asks the writer to end the recording after what is queued; it has
    /// once [`Recording::is_recording`] is false (within [`POLL`]).
    pub fn request_stop(&self) {
        self.progress.request_end("stopped");
    }

    /// The trace file (complete once the recording has ended; deleted when
    /// this is dropped).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The finished trace's bytes; `None` while it is still recording.
    pub fn trace(&self) -> io::Result<Option<Vec<u8>>> {
        if self.is_recording() {
            return Ok(None);
        }
        std::fs::read(self.file.path()).map(Some)
    }

    /// The state as the admin API reports it.
    pub fn status(&self) -> Value {
        let error = self.progress.error.lock().ok().and_then(|e| e.clone());
        json!({
            "state": if self.is_recording() { "recording" } else { "finished" },
            "started_unix_ms": self.header.started_unix_ms,
            "elapsed_ms": self.started.elapsed().as_millis() as u64,
            "records": self.progress.records.load(Ordering::Relaxed),
            "bytes": self.progress.bytes.load(Ordering::Relaxed),
            "max_bytes": self.caps.max_bytes,
            "max_seconds": self.caps.max_duration.as_secs(),
            "end_reason": if self.is_recording() { None } else { self.progress.end_reason() },
            "error": error,
            "policy": {
                "name": self.header.policy.name,
                "sha256": self.header.policy.sha256,
            },
            "sessions_at_start": self.header.sessions_at_start,
        })
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.progress.request_end("host-stopped");
    }
}

/// A file that counts what is written to it.
struct CountingFile {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.bytes.fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The writer thread.
struct Writer {
    encoder: GzEncoder<CountingFile>,
    progress: Arc<Progress>,
    deadline: Instant,
    max_bytes: u64,
}

impl Writer {
    fn run(mut self, inbox: mpsc::Receiver<TraceRecord>) {
        let reason = match self.write_until_done(&inbox) {
            Ok(reason) => reason,
            Err(error) => {
                tracing::warn!(%error, "writing the policy trace failed; the recording ends here");
                if let Ok(mut slot) = self.progress.error.lock() {
                    *slot = Some(error.to_string());
                }
                "write-error".to_owned()
            }
        };
        self.progress.request_end(&reason);
        let reason = self.progress.end_reason().unwrap_or(reason);
        let progress = Arc::clone(&self.progress);
        let records = progress.records.load(Ordering::Relaxed);
        if let Err(error) = self.finish(&reason, records) {
            tracing::warn!(%error, "finishing the policy trace failed");
            if let Ok(mut slot) = progress.error.lock() {
                *slot = Some(error.to_string());
            }
        }
        tracing::info!(records, reason = %reason, "policy recording ended");
        progress.open.store(false, Ordering::Relaxed);
    }

    /// Writes records until a cap or a request ends the recording; returns
    /// why it ended.
    fn write_until_done(&mut self, inbox: &mpsc::Receiver<TraceRecord>) -> io::Result<String> {
        loop {
            if let Some(reason) = self.progress.end_reason() {
                // Everything queued was handed over before the request.
                while let Ok(record) = inbox.try_recv() {
                    self.write(&record)?;
                }
                return Ok(reason);
            }
            let now = Instant::now();
            if now >= self.deadline {
                return Ok("duration".to_owned());
            }
            match inbox.recv_timeout(POLL.min(self.deadline - now)) {
                Ok(record) => {
                    self.write(&record)?;
                    if self.progress.bytes.load(Ordering::Relaxed) >= self.max_bytes {
                        return Ok("size".to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok("host-stopped".to_owned()),
            }
        }
    }

    fn write(&mut self, record: &TraceRecord) -> io::Result<()> {
        serde_json::to_writer(&mut self.encoder, record)?;
        self.encoder.write_all(b"\n")?;
        self.progress.records.fetch_add(1, Ordering::Relaxed);
        // Sync-flush now and then so the size on disk tracks what was
        // written (the size cap reads it) without a flush per record.
        if self
            .progress
            .records
            .load(Ordering::Relaxed)
            .is_multiple_of(64)
        {
            self.encoder.flush()?;
        }
        Ok(())
    }

    fn finish(self, reason: &str, records: u64) -> io::Result<()> {
        let mut encoder = self.encoder;
        let end = TraceRecord::End {
            reason: reason.to_owned(),
            records,
        };
        serde_json::to_writer(&mut encoder, &end)?;
        encoder.write_all(b"\n")?;
        let mut file = encoder.finish()?;
        file.flush()?;
        file.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use crate::trace::tests::header;
    use crate::trace::TraceReader;

    use super::*;

    fn events(n: u64) -> TraceRecord {
        TraceRecord::OnEvents {
            events: (0..n)
                .map(|at_ms| vigil_policy_sdk::Event {
                    at_ms,
                    kind: vigil_policy_sdk::EventKind::Tick,
                })
                .collect(),
        }
    }

    fn wait_finished(recording: &Recording) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while recording.is_recording() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(!recording.is_recording(), "the recording did not end");
    }

    fn read_back(recording: &Recording) -> (u64, Option<String>) {
        let bytes = match recording.trace() {
            Ok(Some(bytes)) => bytes,
            other => panic!("no trace: {other:?}"),
        };
        let mut reader = match TraceReader::new(io::Cursor::new(bytes)) {
            Ok(reader) => reader,
            Err(error) => panic!("{error}"),
        };
        let mut records = 0;
        loop {
            match reader.next_record() {
                Ok(Some(_)) => records += 1,
                Ok(None) => break,
                Err(error) => panic!("{error}"),
            }
        }
        (records, reader.ended().map(str::to_owned))
    }

    #[test]
    fn a_stopped_recording_keeps_every_record_handed_over() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (recording, tap) = Recording::start(header(), RecordingCaps::default(), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        for n in 0..100 {
            assert!(tap.record(events(n % 5)));
        }
        recording.request_stop();
        wait_finished(&recording);
        assert!(!tap.record(events(1)), "a stopped recording takes no more");
        assert_eq!(read_back(&recording), (100, Some("stopped".to_owned())));
    }

    #[test]
    fn the_size_cap_and_the_time_cap_end_a_recording() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let caps = RecordingCaps {
            max_duration: Duration::from_secs(60),
            max_bytes: 4_096,
        };
        let (recording, tap) =
            Recording::start(header(), caps, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut handed = 0;
        // Paced, so the writer keeps up (a writer left behind is the
        // other way a recording ends).
        while tap.record(events(200)) && handed < 100_000 {
            handed += 1;
            thread::sleep(Duration::from_millis(1));
        }
        wait_finished(&recording);
        let (records, reason) = read_back(&recording);
        assert_eq!(reason.as_deref(), Some("size"));
        assert!(records > 0 && records <= handed, "{records} of {handed}");

        let caps = RecordingCaps {
            max_duration: Duration::from_millis(100),
            max_bytes: 1 << 20,
        };
        let (recording, _tap) =
            Recording::start(header(), caps, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        wait_finished(&recording);
        assert_eq!(read_back(&recording), (0, Some("duration".to_owned())));
    }
}

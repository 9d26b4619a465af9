//! Recorded traces: every call the active policy took during a recording,
//! with its arguments and the answers that were carried out. A trace is
//! the input of `vigil policy replay`, shadow mode run offline.
//!
//! The file is gzip-compressed JSON lines:
//! 1. a [`TraceHeader`]: the format version, the policy that ran (name,
//!    hash, configuration), the host settings that shaped its input, the
//!    caps the recording ran under;
//! 2. one [`TraceRecord`] per call, in the order the policy thread took
//!    them (`on-events`, `assess`, `select-evictions`);
//! 3. an `end` record saying why the recording stopped.
//!
//! Traces come from operators, so [`TraceReader`] treats them as untrusted:
//! a file that is not gzip, not a trace, of another version, with a
//! malformed or oversized line, or cut short, is an error that says which
//! and where, never a panic or an unbounded allocation.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use vigil_policy_sdk::{Event, SessionFacts, SessionId, Verdict};

/// The trace format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Longest line accepted when reading, bytes (decompressed). A batch of
/// 20 000 sessions is about 8 MB of JSON; anything far beyond is not a
/// trace this host wrote.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// The first line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Always [`FORMAT_VERSION`] for files this build writes; the key also
    /// marks the file as a Vigil trace.
    pub vigil_trace: u32,
    /// The version of Vigil that recorded it.
    pub vigil_version: String,
    /// When the recording started, Unix ms.
    pub started_unix_ms: u64,
    /// The policy whose answers were recorded.
    pub policy: RecordedPolicy,
    /// Sessions already open when the recording started: a policy that
    /// remembers events saw their history before the trace begins.
    pub sessions_at_start: usize,
    /// The host settings that shape the policy's input (tiers, session
    /// timings, the plugin's limits), as the host reported them.
    pub host_config: serde_json::Value,
    /// The recording's time cap, ms.
    pub max_duration_ms: u64,
    /// The recording's size cap, compressed bytes.
    pub max_bytes: u64,
}

/// Which policy answered, and configured how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPolicy {
    /// Its name (file name or upload name).
    pub name: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// The configuration JSON it was given.
    pub config_json: String,
}

/// One call the policy thread took, or the end of the recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum TraceRecord {
    /// Events handed to the policy.
    OnEvents {
        /// In the order they were handed over.
        events: Vec<Event>,
    },
    /// A batch assessed.
    Assess {
        /// The call's `now-ms`.
        now_ms: u64,
        /// The batch.
        sessions: Vec<SessionFacts>,
        /// The verdicts carried out.
        verdicts: Vec<Verdict>,
        /// `plugin`, or the reason the built-in fallback answered.
        source: String,
    },
    /// Sessions chosen under capacity pressure.
    SelectEvictions {
        /// The call's `now-ms`.
        now_ms: u64,
        /// How many had to go.
        excess: u32,
        /// The candidates.
        sessions: Vec<SessionFacts>,
        /// The choice carried out; `None` when the plugin could not say.
        chosen: Option<Vec<SessionId>>,
    },
    /// The recording stopped.
    End {
        /// `duration`, `size`, `stopped`, `policy-changed`,
        /// `writer-behind` or `host-stopped`.
        reason: String,
        /// Call records before this one.
        records: u64,
    },
}

/// Why a trace cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("cannot read the trace: {0}")]
    Io(#[from] io::Error),
    /// Not gzip at all.
    #[error("not a Vigil trace: the file is not gzip-compressed (a trace is what GET /admin/policy/recording/trace returns)")]
    NotGzip,
    /// The first line is not a trace header.
    #[error("not a Vigil trace: the first line is not a trace header ({0})")]
    BadHeader(String),
    /// A version this build does not read.
    #[error(
        "trace format version {found} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    Version {
        /// The file's version.
        found: u32,
    },
    /// A line is not a record.
    #[error("line {line} of the trace is not a valid record: {detail}")]
    BadRecord {
        /// 1-based, counting the header.
        line: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// A line exceeds [`MAX_LINE_BYTES`].
    #[error("line {line} of the trace is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// 1-based, counting the header.
        line: u64,
    },
    /// The file ends before the `end` record: cut short while copying, or
    /// the host was killed while recording.
    #[error("the trace is truncated after {records} records ({detail}); pass --partial to replay what is there")]
    Truncated {
        /// Call records read intact.
        records: u64,
        /// Where it broke.
        detail: String,
    },
    /// Something follows the `end` record.
    #[error("line {line} of the trace follows its end record")]
    AfterEnd {
        /// 1-based, counting the header.
        line: u64,
    },
}

/// Reads a trace record by record, checking it as it goes.
pub struct TraceReader {
    lines: Lines,
    header: TraceHeader,
    records: u64,
    ended: Option<String>,
    allow_truncated: bool,
}

impl fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceReader")
            .field("header", &self.header)
            .field("line", &self.lines.number)
            .finish_non_exhaustive()
    }
}

impl TraceReader {
    /// Opens a trace file and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Self::new(File::open(path)?)
    }

    /// Reads a trace from any byte source (gzip-compressed, as written).
    pub fn new(source: impl Read + Send + 'static) -> Result<Self, TraceError> {
        let mut compressed = BufReader::new(source);
        let magic = compressed.fill_buf()?;
        if magic.len() < 2 || magic[..2] != [0x1f, 0x8b] {
            return Err(TraceError::NotGzip);
        }
        let mut lines = Lines {
            source: Box::new(BufReader::new(MultiGzDecoder::new(compressed))),
            number: 0,
        };
        let first = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => return Err(TraceError::BadHeader("the file is empty".to_owned())),
            Err(LineError::Broken(detail)) => return Err(TraceError::BadHeader(detail)),
            Err(LineError::Trace(error)) => return Err(error),
        };
        let version = serde_json::from_slice::<serde_json::Value>(&first)
            .ok()
            .and_then(|value| value.get("vigil_trace").and_then(|v| v.as_u64()));
        match version {
            None => {
                return Err(TraceError::BadHeader(
                    "it has no `vigil_trace` version".to_owned(),
                ))
            }
            Some(found) if found != u64::from(FORMAT_VERSION) => {
                return Err(TraceError::Version {
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                })
            }
            Some(_) => {}
        }
        let header = serde_json::from_slice(&first)
            .map_err(|error| TraceError::BadHeader(error.to_string()))?;
        Ok(TraceReader {
            lines,
            header,
            records: 0,
            ended: None,
            allow_truncated: false,
        })
    }

    /// Accept a trace that ends without its `end` record, or whose
    /// compressed stream is cut: reading then stops quietly where the
    /// intact records end. [`TraceReader::ended`] says whether it did.
    pub fn allow_truncated(mut self, allow: bool) -> Self {
        self.allow_truncated = allow;
        self
    }

    /// The header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Why the recording stopped, once the `end` record has been read.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// The next call record; `None` after the `end` record (or where a
    /// truncated trace stops, when that is allowed).
    pub fn next_record(&mut self) -> Result<Option<TraceRecord>, TraceError> {
        loop {
            let line = match self.lines.next() {
                Ok(Some(line)) => line,
                Ok(None) if self.ended.is_some() => return Ok(None),
                Ok(None) => {
                    return self.truncated("the file ends without its end record".to_owned())
                }
                Err(LineError::Broken(detail)) => return self.truncated(detail),
                Err(LineError::Trace(error)) => return Err(error),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let number = self.lines.number;
            if self.ended.is_some() {
                return Err(TraceError::AfterEnd { line: number });
            }
            let record: TraceRecord =
                serde_json::from_slice(&line).map_err(|error| TraceError::BadRecord {
                    line: number,
                    detail: error.to_string(),
                })?;
            if let TraceRecord::End { reason, .. } = record {
                self.ended = Some(reason);
                continue;
            }
            self.records += 1;
            return Ok(Some(record));
        }
    }

    fn truncated(&self, detail: String) -> Result<Option<TraceRecord>, TraceError> {
        if self.allow_truncated {
            Ok(None)
        } else {
            Err(TraceError::Truncated {
                records: self.records,
                detail,
            })
        }
    }
}

/// The decompressed lines of a trace, counted.
struct Lines {
    source: Box<dyn BufRead + Send>,
    /// Lines read so far (1-based number of the last one).
    number: u64,
}

/// Why a line could not be read.
enum LineError {
    /// The compressed stream breaks off or is corrupt here.
    Broken(String),
    /// Anything else.
    Trace(TraceError),
}

impl Lines {
    /// One line without its newline, at most [`MAX_LINE_BYTES`]; `None` at
    /// the end of the stream.
    fn next(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        let mut line = Vec::new();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.source)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|error| match error.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput => {
                    LineError::Broken(format!("the compressed data breaks off: {error}"))
                }
                io::ErrorKind::InvalidData => {
                    LineError::Broken(format!("the compressed data is corrupt: {error}"))
                }
                _ => LineError::Trace(TraceError::Io(error)),
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES {
            return Err(LineError::Trace(TraceError::LineTooLong {
                line: self.number,
            }));
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use vigil_policy_sdk::{Action, EventKind, Tier};

    use super::*;

    /// A header for tests of this module and the recorder's.
    pub(crate) fn header() -> TraceHeader {
        TraceHeader {
            vigil_trace: FORMAT_VERSION,
            vigil_version: "test".to_owned(),
            started_unix_ms: 1,
            policy: RecordedPolicy {
                name: "p".to_owned(),
                sha256: "00".to_owned(),
                config_json: "{}".to_owned(),
            },
            sessions_at_start: 0,
            host_config: serde_json::json!({}),
            max_duration_ms: 1_000,
            max_bytes: 1_000,
        }
    }

    fn records() -> Vec<TraceRecord> {
        vec![
            TraceRecord::OnEvents {
                events: vec![Event {
                    at_ms: 5,
                    kind: EventKind::Connected {
                        session: 1,
                        client_class: "bot".to_owned(),
                    },
                }],
            },
            TraceRecord::Assess {
                now_ms: 10,
                sessions: vec![SessionFacts::new(1, "bot")],
                verdicts: vec![Verdict {
                    session: 1,
                    health: 100,
                    tier: Tier::KeepAlive,
                    action: Action::Keep,
                    reassess_in_ms: 100,
                }],
                source: "plugin".to_owned(),
            },
        ]
    }

    fn gzip(lines: &[String]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        for line in lines {
            let _ = writeln!(encoder, "{line}");
        }
        encoder.finish().unwrap_or_default()
    }

    fn trace_lines(end: bool) -> Vec<String> {
        let mut lines = vec![serde_json::to_string(&header()).unwrap_or_default()];
        for record in records() {
            lines.push(serde_json::to_string(&record).unwrap_or_default());
        }
        if end {
            let end = TraceRecord::End {
                reason: "stopped".to_owned(),
                records: 2,
            };
            lines.push(serde_json::to_string(&end).unwrap_or_default());
        }
        lines
    }

    fn read_all(bytes: Vec<u8>) -> Result<Vec<TraceRecord>, TraceError> {
        let mut reader = TraceReader::new(io::Cursor::new(bytes))?;
        let mut all = Vec::new();
        while let Some(record) = reader.next_record()? {
            all.push(record);
        }
        Ok(all)
    }

    #[test]
    fn a_trace_reads_back_as_written() {
        let read = read_all(gzip(&trace_lines(true)));
        assert!(matches!(&read, Ok(all) if *all == records()), "{read:?}");
    }

    #[test]
    fn what_is_not_a_trace_is_named() {
        let plain = b"{\"vigil_trace\": 1}\n".to_vec();
        assert!(matches!(read_all(plain), Err(TraceError::NotGzip)));
        let other = gzip(&["{\"hello\": 1}".to_owned()]);
        assert!(matches!(read_all(other), Err(TraceError::BadHeader(_))));
        let future = gzip(&["{\"vigil_trace\": 99}".to_owned()]);
        assert!(matches!(
            read_all(future),
            Err(TraceError::Version { found: 99 })
        ));
        let mut lines = trace_lines(true);
        lines.insert(2, "{\"call\": \"assess\", \"now_ms\": \"soon\"}".to_owned());
        assert!(matches!(
            read_all(gzip(&lines)),
            Err(TraceError::BadRecord { line: 3, .. })
        ));
        let mut lines = trace_lines(true);
        lines.push(lines[1].clone());
        assert!(matches!(
            read_all(gzip(&lines)),
            Err(TraceError::AfterEnd { .. })
        ));
    }

    #[test]
    fn a_cut_trace_is_truncated_unless_partial_reading_is_allowed() {
        let without_end = gzip(&trace_lines(false));
        assert!(matches!(
            read_all(without_end.clone()),
            Err(TraceError::Truncated { records: 2, .. })
        ));
        let mut whole = gzip(&trace_lines(true));
        whole.truncate(whole.len() - 12);
        assert!(matches!(
            read_all(whole.clone()),
            Err(TraceError::Truncated { .. })
        ));
        let mut reader = match TraceReader::new(io::Cursor::new(without_end)) {
            Ok(reader) => reader.allow_truncated(true),
            Err(error) => panic!("{error}"),
        };
        let mut read = 0;
        while let Ok(Some(_)) = reader.next_record() {
            read += 1;
        }
        assert_eq!(read, 2);
        assert_eq!(reader.ended(), None);
    }
}

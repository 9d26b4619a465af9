//! Where a plugin's words go: its `log` import and its WASI stdout/stderr
//! (a panicking Rust guest prints its message there) both end up in the
//! host's `tracing` log, tagged with the plugin's name and capped in size so
//! a chatty or hostile plugin cannot flood the log or the host's memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept; the rest of a longer line is cut.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Bytes of output a plugin may emit per window before the rest is dropped.
const BUDGET_BYTES: usize = 64 * 1024;
/// The window the budget refills over.
const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// The level a plugin line is logged at.
#[derive(Debug, Clone, Copy)]
pub enum PluginLevel {
    /// Verbose diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation, and stdout.
    Info,
    /// Something the operator should look at.
    Warn,
    /// Something failed, and stderr (panic messages).
    Error,
}

/// One plugin's output budget and partial lines, shared by its log import
/// and its stdout/stderr streams (the guest may open those many times).
#[derive(Clone)]
pub struct PluginOutput {
    plugin: Arc<str>,
    state: Arc<Mutex<OutputState>>,
}

struct OutputState {
    window_started: Instant,
    used_bytes: usize,
    dropped_bytes: usize,
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
}

impl PluginOutput {
    /// Output tagged with `plugin` (its file name or `default-policy`).
    pub fn new(plugin: Arc<str>) -> Self {
        PluginOutput {
            plugin,
            state: Arc::new(Mutex::new(OutputState {
                window_started: Instant::now(),
                used_bytes: 0,
                dropped_bytes: 0,
                stdout_line: Vec::new(),
                stderr_line: Vec::new(),
            })),
        }
    }

    /// Logs one message from the plugin's `log` import.
    pub fn log(&self, level: PluginLevel, message: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.charge(message.len()) {
            emit(&self.plugin, "log", level, truncate(message.as_bytes()));
        }
    }

    /// The stream the guest's stdout writes to.
    pub fn stdout(&self) -> PluginStream {
        PluginStream {
            output: self.clone(),
            kind: StreamKind::Stdout,
        }
    }

    /// The stream the guest's stderr writes to.
    pub fn stderr(&self) -> PluginStream {
        PluginStream {
            output: self.clone(),
            kind: StreamKind::Stderr,
        }
    }

    /// Logs whatever partial lines are buffered, e.g. a panic message whose
    /// trailing newline never came because the guest trapped right after.
    pub fn flush_partial_lines(&self) {
        for kind in [StreamKind::Stdout, StreamKind::Stderr] {
            let line = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::take(state.line(kind))
            };
            if !line.is_empty() {
                emit(&self.plugin, kind.name(), kind.level(), truncate(&line));
            }
        }
    }

    fn write(&self, kind: StreamKind, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.charge(bytes.len()) {
                return;
            }
            let buffer = state.line(kind);
            for &byte in bytes {
                if byte == b'\n' {
                    lines.push(std::mem::take(buffer));
                } else if buffer.len() < MAX_LINE_BYTES {
                    buffer.push(byte);
                }
            }
        }
        for line in lines {
            emit(&self.plugin, kind.name(), kind.level(), truncate(&line));
        }
    }
}

impl OutputState {
    /// Takes `bytes` from the budget; false (and counted) when over it.
    fn charge(&mut self, bytes: usize) -> bool {
        if self.window_started.elapsed() >= BUDGET_WINDOW {
            if self.dropped_bytes > 0 {
                tracing::warn!(
                    dropped_bytes = self.dropped_bytes,
                    "plugin output over budget was dropped"
                );
            }
            self.window_started = Instant::now();
            self.used_bytes = 0;
            self.dropped_bytes = 0;
        }
        if self.used_bytes.saturating_add(bytes) > BUDGET_BYTES {
            self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
            return false;
        }
        self.used_bytes += bytes;
        true
    }

    fn line(&mut self, kind: StreamKind) -> &mut Vec<u8> {
        match kind {
            StreamKind::Stdout => &mut self.stdout_line,
            StreamKind::Stderr => &mut self.stderr_line,
        }
    }
}

fn truncate(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE_BYTES)]).into_owned()
}

fn emit(plugin: &str, stream: &str, level: PluginLevel, message: String) {
    match level {
        PluginLevel::Trace => tracing::trace!(plugin, stream, "{message}"),
        PluginLevel::Debug => tracing::debug!(plugin, stream, "{message}"),
        PluginLevel::Info => tracing::info!(plugin, stream, "{message}"),
        PluginLevel::Warn => tracing::warn!(plugin, stream, "{message}"),
        PluginLevel::Error => tracing::error!(plugin, stream, "{message}"),
    }
}

#[derive(Clone, Copy)]
enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }

    fn level(self) -> PluginLevel {
        match self {
            StreamKind::Stdout => PluginLevel::Info,
            StreamKind::Stderr => PluginLevel::Error,
        }
    }
}

/// A guest's stdout or stderr. Writes complete synchronously (into the log),
/// so nothing is left in flight when a call ends or traps.
pub struct PluginStream {
    output: PluginOutput,
    kind: StreamKind,
}

impl IsTerminal for PluginStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(PluginStream {
            output: self.output.clone(),
            kind: self.kind,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(PluginStream {
            output: self.output.clone(),
            kind: self.kind,
        })
    }
}

impl OutputStream for PluginStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.kind, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for PluginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.write(self.kind, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

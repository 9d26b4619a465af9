//! Scripted clients: real TCP connections to the host, driven frame by
//! frame by a task of their own, that behave the way dead and dying
//! clients do. Change a client's behaviour at any point of a test:
//!
//! - [`Client::answer_pings`]`(false)`: keeps reading messages, never
//!   answers a ping (a broken client library, a half-dead process);
//! - [`Client::stop_reading`]: never reads again, so what the host sends
//!   backs up (a slow or stuck consumer), while it may still send;
//! - [`Client::freeze`] / [`Client::thaw`]: neither reads nor writes, like
//!   a `SIGSTOP`ped process; the kernel still holds the connection open;
//! - [`Client::send_every`]: sends a text message at a fixed rate;
//! - [`Client::close`]: a close frame with a code and reason;
//! - [`Client::drop_connection`]: closes the socket without a close frame
//!   (a process that exits); [`Client::reset`]: an abortive close (RST).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use vigil::sdk::SessionId;

use crate::error::KitError;
use crate::frames::{self, client_frame, close_payload, Incoming, Masks};
use crate::wait::bounded;

/// How a client's connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The host sent a close frame with this code and reason.
    Closed {
        /// The close code (4000 and up: the policy's own).
        code: u16,
        /// The reason (the eviction reason, for an eviction).
        reason: String,
    },
    /// The connection ended without a close frame.
    ConnectionLost(String),
    /// The test ended it ([`Client::drop_connection`], [`Client::reset`]).
    DroppedByTest,
}

#[derive(Debug)]
enum Command {
    AnswerPings(bool),
    Reading(bool),
    Frozen(bool),
    SendEvery(Option<Duration>, String),
    SendText(String),
    Close(u16, String),
    Drop { reset: bool },
}

/// What the client's task has seen, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    texts: Mutex<Vec<String>>,
    pings: AtomicU64,
    sent: AtomicU64,
    ending: Mutex<Option<Ending>>,
    ended: AtomicBool,
    changed: Notify,
}

impl Seen {
    fn end(&self, ending: Ending) {
        let mut slot = self.ending.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(ending);
        self.ended.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// A scripted client connected to a [`crate::TestHost`].
#[derive(Debug)]
pub struct Client {
    session: SessionId,
    local: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    seen: Arc<Seen>,
    timeout: Duration,
}

impl Client {
    /// Starts the client's task over an upgraded connection.
    pub(crate) fn spawn(
        session: SessionId,
        stream: tokio::net::TcpStream,
        already_read: Vec<u8>,
        timeout: Duration,
    ) -> Result<Client, KitError> {
        let local = stream
            .local_addr()
            .map_err(KitError::io("reading the client's address"))?;
        let (reader, writer) = stream.into_split();
        let (commands, inbox) = mpsc::unbounded_channel();
        let seen = Arc::new(Seen::default());
        let script = Script {
            reader: Some(reader),
            writer: Some(writer),
            buffer: already_read,
            answer_pings: true,
            reading: true,
            frozen: false,
            send_every: None,
            masks: Masks::new(u32::from(local.port()).wrapping_mul(2_654_435_761)),
            seen: Arc::clone(&seen),
        };
        tokio::spawn(script.run(inbox));
        Ok(Client {
            session,
            local,
            commands,
            seen,
            timeout,
        })
    }

    /// The session's id on the host.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// The client's own address (the session's peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn send(&self, command: Command) -> Result<(), KitError> {
        if self.seen.ended.load(Ordering::SeqCst) {
            return Err(KitError::Disconnected);
        }
        self.commands
            .send(command)
            .map_err(|_| KitError::Disconnected)
    }

    /// Whether pings are answered (the default) or left unanswered.
    pub fn answer_pings(&self, answer: bool) -> Result<(), KitError> {
        self.send(Command::AnswerPings(answer))
    }

    /// Never reads from the connection again (until [`Client::read_again`]).
    pub fn stop_reading(&self) -> Result<(), KitError> {
        self.send(Command::Reading(false))
    }

    /// Reads again after [`Client::stop_reading`].
    pub fn read_again(&self) -> Result<(), KitError> {
        self.send(Command::Reading(true))
    }

    /// Neither reads nor writes, as if the process were stopped.
    pub fn freeze(&self) -> Result<(), KitError> {
        self.send(Command::Frozen(true))
    }

    /// Carries on after [`Client::freeze`].
    pub fn thaw(&self) -> Result<(), KitError> {
        self.send(Command::Frozen(false))
    }

    /// Sends `text` every `interval` (the first at once); `None` stops.
    pub fn send_every(&self, interval: Option<Duration>, text: &str) -> Result<(), KitError> {
        self.send(Command::SendEvery(interval, text.to_owned()))
    }

    /// Sends one text message.
    pub fn send_text(&self, text: &str) -> Result<(), KitError> {
        self.send(Command::SendText(text.to_owned()))
    }

    /// Sends a close frame and stops sending; the host's answer ends it.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), KitError> {
        self.send(Command::Close(code, reason.to_owned()))
    }

    /// Closes the socket without a close frame (FIN), like a process that
    /// exits without saying goodbye.
    pub fn drop_connection(&self) -> Result<(), KitError> {
        self.send(Command::Drop { reset: false })
    }

    /// Resets the connection (RST), like a crashed host or a cut network
    /// that the kernel notices.
    pub fn reset(&self) -> Result<(), KitError> {
        self.send(Command::Drop { reset: true })
    }

    /// Text messages received so far.
    pub fn received(&self) -> Vec<String> {
        self.seen
            .texts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Pings received so far (answered or not).
    pub fn pings(&self) -> u64 {
        self.seen.pings.load(Ordering::Relaxed)
    }

    /// Text messages sent so far.
    pub fn sent(&self) -> u64 {
        self.seen.sent.load(Ordering::Relaxed)
    }

    /// How the connection ended, if it has.
    pub fn ending(&self) -> Option<Ending> {
        self.seen
            .ending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the connection ends; how it did.
    pub async fn until_closed(&self) -> Result<Ending, KitError> {
        bounded(
            self.timeout,
            "the client's connection to end",
            || self.ending(),
            &self.seen.changed,
        )
        .await
    }

    /// Waits until at least `count` text messages have arrived.
    pub async fn until_received(&self, count: usize) -> Result<Vec<String>, KitError> {
        let what = format!("{count} messages to arrive");
        bounded(
            self.timeout,
            &what,
            || {
                let texts = self.received();
                (texts.len() >= count).then_some(texts)
            },
            &self.seen.changed,
        )
        .await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Drop { reset: false });
    }
}

/// The client's task: the socket and the behaviour in force.
struct Script {
    reader: Option<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    buffer: Vec<u8>,
    answer_pings: bool,
    reading: bool,
    frozen: bool,
    send_every: Option<(tokio::time::Interval, String)>,
    masks: Masks,
    seen: Arc<Seen>,
}

impl Script {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        if let Err(ending) = self.handle_buffered().await {
            self.seen.end(ending);
            return;
        }
        loop {
            let can_read = self.reading && !self.frozen && self.reader.is_some();
            let can_send = !self.frozen && self.send_every.is_some();
            let step = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.obey(command).await,
                    // The test dropped the client.
                    None => Err(Ending::DroppedByTest),
                },
                read = read_some(self.reader.as_mut(), &mut self.buffer), if can_read => match read {
                    Ok(0) => Err(Ending::ConnectionLost("the host closed the TCP connection".to_owned())),
                    Ok(_) => self.handle_buffered().await,
                    Err(error) => Err(Ending::ConnectionLost(error.to_string())),
                },
                _ = tick(self.send_every.as_mut()), if can_send => {
                    let text = self.send_every.as_ref().map(|(_, text)| text.clone()).unwrap_or_default();
                    self.send_text(text).await
                },
            };
            if let Err(ending) = step {
                self.seen.end(ending);
                return;
            }
        }
    }

    async fn obey(&mut self, command: Command) -> Result<(), Ending> {
        match command {
            Command::AnswerPings(answer) => self.answer_pings = answer,
            Command::Reading(reading) => self.reading = reading,
            Command::Frozen(frozen) => self.frozen = frozen,
            Command::SendEvery(None, _) => self.send_every = None,
            Command::SendEvery(Some(interval), text) => {
                let mut ticker = tokio::time::interval_at(Instant::now(), interval);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                self.send_every = Some((ticker, text));
            }
            Command::SendText(text) => self.send_text(text).await?,
            Command::Close(code, reason) => {
                self.send_every = None;
                let payload = close_payload(code, &reason);
                self.write(OpCode::Control(Control::Close), payload).await?;
            }
            Command::Drop { reset } => {
                if reset {
                    if let Some(reader) = &self.reader {
                        let _ = socket2::SockRef::from(reader.as_ref())
                            .set_linger(Some(Duration::ZERO));
                    }
                }
                self.reader = None;
                self.writer = None;
                return Err(Ending::DroppedByTest);
            }
        }
        Ok(())
    }

    async fn send_text(&mut self, text: String) -> Result<(), Ending> {
        self.write(OpCode::Data(Data::Text), text.into_bytes())
            .await?;
        self.seen.sent.fetch_add(1, Ordering::Relaxed);
        self.seen.changed.notify_waiters();
        Ok(())
    }

    async fn write(&mut self, opcode: OpCode, payload: Vec<u8>) -> Result<(), Ending> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let frame = client_frame(opcode, payload, self.masks.next());
        writer
            .write_all(&frame)
            .await
            .map_err(|error| Ending::ConnectionLost(error.to_string()))
    }

    /// Acts on every whole frame in the buffer.
    async fn handle_buffered(&mut self) -> Result<(), Ending> {
        loop {
            let frame = frames::next_frame(&mut self.buffer)
                .map_err(|error| Ending::ConnectionLost(error.to_string()))?;
            let Some(frame) = frame else {
                return Ok(());
            };
            match frame {
                Incoming::Text(text) => {
                    self.seen
                        .texts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(text);
                    self.seen.changed.notify_waiters();
                }
                Incoming::Binary(_) | Incoming::Pong => {}
                Incoming::Ping(payload) => {
                    self.seen.pings.fetch_add(1, Ordering::Relaxed);
                    self.seen.changed.notify_waiters();
                    if self.answer_pings {
                        self.write(OpCode::Control(Control::Pong), payload).await?;
                    }
                }
                Incoming::Close(code, reason) => {
                    // Answer the close, as a client does, then stop.
                    let payload = close_payload(code, "");
                    let _ = self.write(OpCode::Control(Control::Close), payload).await;
                    return Err(Ending::Closed { code, reason });
                }
            }
        }
    }
}

async fn read_some(
    reader: Option<&mut OwnedReadHalf>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match reader {
        Some(reader) => reader.read_buf(buffer).await,
        None => std::future::pending().await,
    }
}

async fn tick(sending: Option<&mut (tokio::time::Interval, String)>) {
    match sending {
        Some((ticker, _)) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

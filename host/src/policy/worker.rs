//! The policy thread. Guest calls are synchronous CPU work, and the WASI
//! bindings block on a runtime of their own, so the plugin lives on a plain
//! thread that owns its [`Supervisor`] and is fed batches over a channel. The
//! async host talks to it through a [`PolicyHandle`].

use std::sync::{mpsc, Arc};
use std::thread;

use tokio::sync::oneshot;
use vigil_policy_sdk::{Event, SessionFacts, SessionId};

use super::supervisor::{AssessOutcome, PolicyState, PolicyStats, Supervisor};

/// The policy thread has stopped (it only does when every handle is gone, or
/// if it panicked, which the supervisor is there to prevent).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the policy thread has stopped")]
pub struct WorkerGone;

enum Request {
    Assess {
        now_ms: u64,
        sessions: Vec<SessionFacts>,
        reply: oneshot::Sender<AssessOutcome>,
    },
    Events(Vec<Event>),
    SelectEvictions {
        now_ms: u64,
        sessions: Vec<SessionFacts>,
        excess: u32,
        reply: oneshot::Sender<Option<Vec<SessionId>>>,
    },
}

/// What the host knows about the plugin without asking the policy thread.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// File name or `default-policy`.
    pub name: Arc<str>,
    /// Hex SHA-256 of the component.
    pub sha256: String,
}

/// A cheap, cloneable handle to the policy thread.
#[derive(Clone)]
pub struct PolicyHandle {
    requests: mpsc::Sender<Request>,
    stats: Arc<PolicyStats>,
    info: Arc<PluginInfo>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PolicyHandle {
    /// Moves the supervisor onto its own thread, which runs until every
    /// handle is dropped.
    pub fn spawn(mut supervisor: Supervisor) -> std::io::Result<Self> {
        let stats = supervisor.stats();
        let info = Arc::new(PluginInfo {
            name: Arc::clone(supervisor.sandbox().name()),
            sha256: supervisor.sandbox().sha256().to_owned(),
        });
        let (requests, inbox) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("vigil-policy".to_owned())
            .spawn(move || {
                for request in inbox {
                    match request {
                        Request::Assess {
                            now_ms,
                            sessions,
                            reply,
                        } => {
                            let _ = reply.send(supervisor.assess(now_ms, &sessions));
                        }
                        Request::Events(events) => supervisor.on_events(&events),
                        Request::SelectEvictions {
                            now_ms,
                            sessions,
                            excess,
                            reply,
                        } => {
                            let _ =
                                reply.send(supervisor.select_evictions(now_ms, &sessions, excess));
                        }
                    }
                }
            })?;
        Ok(PolicyHandle {
            requests,
            stats,
            info,
        })
    }

    /// Queues an assessment; the answer comes on the returned receiver.
    fn request_assess(
        &self,
        now_ms: u64,
        sessions: Vec<SessionFacts>,
    ) -> Result<oneshot::Receiver<AssessOutcome>, WorkerGone> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Assess {
                now_ms,
                sessions,
                reply,
            })
            .map_err(|_| WorkerGone)?;
        Ok(answer)
    }

    /// Verdicts for a batch (the plugin's, or the fallback's on a fault).
    pub async fn assess(
        &self,
        now_ms: u64,
        sessions: Vec<SessionFacts>,
    ) -> Result<AssessOutcome, WorkerGone> {
        let answer = self.request_assess(now_ms, sessions)?;
        answer.await.map_err(|_| WorkerGone)
    }

    /// [`PolicyHandle::assess`] for code outside an async runtime.
    pub fn assess_blocking(
        &self,
        now_ms: u64,
        sessions: Vec<SessionFacts>,
    ) -> Result<AssessOutcome, WorkerGone> {
        let answer = self.request_assess(now_ms, sessions)?;
        answer.blocking_recv().map_err(|_| WorkerGone)
    }

    /// Queues events for the plugin; does not wait.
    pub fn send_events(&self, events: Vec<Event>) -> Result<(), WorkerGone> {
        self.requests
            .send(Request::Events(events))
            .map_err(|_| WorkerGone)
    }

    /// Which sessions to drop under capacity pressure; `None` when the plugin
    /// could not say (the host then refuses new connections).
    pub async fn select_evictions(
        &self,
        now_ms: u64,
        sessions: Vec<SessionFacts>,
        excess: u32,
    ) -> Result<Option<Vec<SessionId>>, WorkerGone> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::SelectEvictions {
                now_ms,
                sessions,
                excess,
                reply,
            })
            .map_err(|_| WorkerGone)?;
        answer.await.map_err(|_| WorkerGone)
    }

    /// Call and fault counters.
    pub fn stats(&self) -> &PolicyStats {
        &self.stats
    }

    /// Active or disabled.
    pub fn state(&self) -> PolicyState {
        self.stats.state()
    }

    /// The plugin's name and hash.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }
}

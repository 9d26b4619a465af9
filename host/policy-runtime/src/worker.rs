//! The policy thread. Guest calls are synchronous CPU work, and the WASI
//! bindings block on a runtime of their own, so the plugins live on a plain
//! thread that owns them and is fed requests over a channel. The async host
//! talks to it through a [`PolicyHandle`].
//!
//! Because one thread takes one request at a time, a swap is atomic by
//! construction: every batch is assessed entirely by the policy that was
//! active when the batch's turn came, and a swap waits for the batch in
//! progress to finish on the old instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use vigil_policy_sdk::{Event, SessionId};

use super::columns::SessionColumns;

use super::recorder::{Recording, RecordingCaps, RecordingTap};
use super::shadow::Shadow;
use super::supervisor::{AssessOutcome, PolicyState, PolicyStats, Supervisor, VerdictSource};
use super::trace::{RecordedPolicy, TraceHeader, TraceRecord};

/// The policy thread has stopped (it only does when every handle is gone, or
/// if it panicked, which the supervisor is there to prevent).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the policy thread has stopped")]
pub struct WorkerGone;

/// Why a change of policy was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// Rollback with nothing to roll back to.
    #[error("there is no previous policy to roll back to")]
    NoPrevious,
    /// Promote with no shadow.
    #[error("there is no shadow policy to promote")]
    NoShadow,
    /// The thread is gone.
    #[error(transparent)]
    Gone(#[from] WorkerGone),
}

/// One plugin as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// File name, `default-policy`, or the name given over the API.
    pub name: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    /// A path, `embedded`, `admin-api`.
    pub source: String,
    /// The contract interface it exports (`vigil:policy/policy@0.3.0`, or
    /// an older one, `@0.2.0` or `@0.1.0`), so an operator can see which
    /// plugins to rebuild.
    pub contract: &'static str,
    /// Unix time in ms.
    pub loaded_at: u64,
    /// Guest calls made.
    pub calls: u64,
    /// Faults of every kind.
    pub faults: u64,
    /// `active` or `disabled`.
    pub state: &'static str,
    /// True when the built-in fallback decides instead (the plugin is
    /// disabled, or its last batch faulted).
    pub fallback_in_use: bool,
    /// The limits it runs under (its own, or `[policy.limits]`).
    pub limits: crate::SandboxLimits,
    /// Sessions one `assess` call carries at most now.
    pub sessions_per_call: usize,
    /// Its measured cost per session in `assess`, µs, once a call was
    /// large enough to tell.
    pub cost_us_per_session: Option<f64>,
}

impl PluginReport {
    fn of(supervisor: &Supervisor) -> Self {
        let sandbox = supervisor.sandbox();
        let stats = supervisor.stats();
        PluginReport {
            name: sandbox.name().to_string(),
            sha256: sandbox.sha256().to_owned(),
            source: sandbox.origin().to_owned(),
            contract: sandbox.contract(),
            loaded_at: sandbox.loaded_at_unix_ms(),
            calls: stats.calls(),
            faults: stats.total_faults(),
            state: stats.state().as_str(),
            fallback_in_use: stats.state() == PolicyState::Disabled
                || supervisor.last_batch_fell_back(),
            limits: sandbox.limits().clone(),
            sessions_per_call: sandbox.batch_cap().sessions_per_call(),
            cost_us_per_session: sandbox
                .batch_cap()
                .cost_per_session()
                .map(|cost| cost.as_secs_f64() * 1e6),
        }
    }
}

/// Active, previous and shadow policies, as `GET /admin/policy` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyOverview {
    /// The policy whose verdicts are carried out.
    pub active: PluginReport,
    /// What rollback would return to.
    pub previous: Option<PluginReport>,
    /// The candidate in shadow, with its disagreement count.
    pub shadow: Option<ShadowSummary>,
}

/// A shadow candidate in the overview.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowSummary {
    /// The candidate.
    #[serde(flatten)]
    pub plugin: PluginReport,
    /// Sessions it judged differently from the active policy.
    pub disagreements: u64,
}

enum Request {
    Assess {
        now_ms: u64,
        sessions: SessionColumns,
        reply: oneshot::Sender<AssessOutcome>,
    },
    Events(Vec<Event>),
    SelectEvictions {
        now_ms: u64,
        sessions: SessionColumns,
        excess: u32,
        reply: oneshot::Sender<Option<Vec<SessionId>>>,
    },
    Swap {
        candidate: Box<Supervisor>,
        reply: oneshot::Sender<PluginReport>,
    },
    Rollback {
        reply: oneshot::Sender<Result<PluginReport, ChangeError>>,
    },
    SetShadow {
        shadow: Option<Box<Shadow>>,
        reply: oneshot::Sender<()>,
    },
    Promote {
        reply: oneshot::Sender<Result<PluginReport, ChangeError>>,
    },
    Overview {
        reply: oneshot::Sender<PolicyOverview>,
    },
    ShadowReport {
        reply: oneshot::Sender<Option<Value>>,
    },
    Record {
        header: Box<TraceHeader>,
        caps: RecordingCaps,
        dir: std::path::PathBuf,
        reply: oneshot::Sender<std::io::Result<Recording>>,
    },
}

/// What the host knows about the active plugin without asking the policy
/// thread; replaced on every swap.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// File name or `default-policy`.
    pub name: Arc<str>,
    /// Hex SHA-256 of the component.
    pub sha256: String,
}

struct Active {
    info: PluginInfo,
    stats: Arc<PolicyStats>,
}

impl Active {
    fn of(supervisor: &Supervisor) -> Self {
        Active {
            info: PluginInfo {
                name: Arc::clone(supervisor.sandbox().name()),
                sha256: supervisor.sandbox().sha256().to_owned(),
            },
            stats: supervisor.stats(),
        }
    }
}

/// A cheap, cloneable handle to the policy thread.
#[derive(Clone)]
pub struct PolicyHandle {
    requests: mpsc::Sender<Request>,
    active: Arc<ArcSwap<Active>>,
    shadow_disagreements: Arc<AtomicU64>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("active", &self.info())
            .finish_non_exhaustive()
    }
}

/// The policy thread's own state.
struct PolicyThread {
    shadow_disagreements: Arc<AtomicU64>,
    active: Supervisor,
    previous: Option<Supervisor>,
    shadow: Option<Shadow>,
    published: Arc<ArcSwap<Active>>,
    recording: Option<RecordingTap>,
}

impl PolicyThread {
    fn serve(mut self, inbox: mpsc::Receiver<Request>) {
        for request in inbox {
            match request {
                Request::Assess {
                    now_ms,
                    sessions,
                    reply,
                } => {
                    let outcome = self.active.assess(now_ms, &sessions);
                    // The caller gets its verdicts before the shadow runs, so
                    // a candidate never slows the host down.
                    let watched = self.shadow.is_some() || self.recording.is_some();
                    let answered = watched.then(|| (outcome.verdicts.clone(), outcome.source));
                    let _ = reply.send(outcome);
                    let Some((verdicts, source)) = answered else {
                        continue;
                    };
                    if let Some(shadow) = self.shadow.as_mut() {
                        let before = shadow.disagreements();
                        shadow.observe(now_ms, &sessions, &verdicts);
                        self.shadow_disagreements
                            .fetch_add(shadow.disagreements() - before, Ordering::Relaxed);
                    }
                    self.record(|| TraceRecord::Assess {
                        now_ms,
                        sessions: sessions.to_rows(),
                        verdicts: verdicts.to_rows(),
                        source: source_name(source),
                    });
                }
                Request::Events(events) => {
                    self.active.on_events(&events);
                    if let Some(shadow) = self.shadow.as_mut() {
                        shadow.on_events(&events);
                    }
                    self.record(|| TraceRecord::OnEvents { events });
                }
                Request::SelectEvictions {
                    now_ms,
                    sessions,
                    excess,
                    reply,
                } => {
                    let chosen = self.active.select_evictions(now_ms, &sessions, excess);
                    let recorded = self.recording.is_some().then(|| chosen.clone());
                    let _ = reply.send(chosen);
                    if let Some(chosen) = recorded {
                        self.record(|| TraceRecord::SelectEvictions {
                            now_ms,
                            excess,
                            sessions: sessions.to_rows(),
                            chosen,
                        });
                    }
                }
                Request::Swap { candidate, reply } => {
                    self.end_recording("policy-changed");
                    let old = std::mem::replace(&mut self.active, *candidate);
                    let retired = self.previous.replace(old);
                    self.publish();
                    let _ = reply.send(PluginReport::of(&self.active));
                    // Dropping an instance unmaps its memory: do it after the
                    // caller has its answer.
                    drop(retired);
                }
                Request::Rollback { reply } => {
                    let result = match self.previous.take() {
                        Some(previous) => {
                            self.end_recording("policy-changed");
                            let newer = std::mem::replace(&mut self.active, previous);
                            self.previous = Some(newer);
                            self.publish();
                            Ok(PluginReport::of(&self.active))
                        }
                        None => Err(ChangeError::NoPrevious),
                    };
                    let _ = reply.send(result);
                }
                Request::SetShadow { shadow, reply } => {
                    self.shadow = shadow.map(|shadow| *shadow);
                    let _ = reply.send(());
                }
                Request::Promote { reply } => {
                    let (result, retired) = match self.shadow.take() {
                        Some(shadow) => {
                            self.end_recording("policy-changed");
                            let old = std::mem::replace(&mut self.active, shadow.into_supervisor());
                            let retired = self.previous.replace(old);
                            self.publish();
                            (Ok(PluginReport::of(&self.active)), retired)
                        }
                        None => (Err(ChangeError::NoShadow), None),
                    };
                    let _ = reply.send(result);
                    drop(retired);
                }
                Request::Overview { reply } => {
                    let _ = reply.send(PolicyOverview {
                        active: PluginReport::of(&self.active),
                        previous: self.previous.as_ref().map(PluginReport::of),
                        shadow: self.shadow.as_ref().map(|shadow| ShadowSummary {
                            plugin: PluginReport::of(shadow.supervisor()),
                            disagreements: shadow.disagreements(),
                        }),
                    });
                }
                Request::ShadowReport { reply } => {
                    let _ = reply.send(self.shadow.as_ref().map(Shadow::report));
                }
                Request::Record {
                    mut header,
                    caps,
                    dir,
                    reply,
                } => {
                    // The policy named in the header is the one whose
                    // answers follow: both are read on this thread.
                    self.end_recording("stopped");
                    let sandbox = self.active.sandbox();
                    header.policy = RecordedPolicy {
                        name: sandbox.name().to_string(),
                        sha256: sandbox.sha256().to_owned(),
                        config_json: sandbox.config_json().to_owned(),
                    };
                    let started = Recording::start(*header, caps, &dir).map(|(recording, tap)| {
                        self.recording = Some(tap);
                        recording
                    });
                    let _ = reply.send(started);
                }
            }
        }
        self.end_recording("host-stopped");
    }

    /// Hands a record to the recording, if one is running; the record is
    /// only built when it is wanted.
    fn record(&mut self, record: impl FnOnce() -> TraceRecord) {
        let Some(tap) = self.recording.as_ref() else {
            return;
        };
        if !tap.record(record()) {
            self.recording = None;
        }
    }

    fn end_recording(&mut self, reason: &str) {
        if let Some(tap) = self.recording.take() {
            tap.end(reason);
        }
    }

    fn publish(&self) {
        self.published.store(Arc::new(Active::of(&self.active)));
    }
}

impl PolicyHandle {
    /// Moves the supervisor onto its own thread, which runs until every
    /// handle is dropped.
    pub fn spawn(supervisor: Supervisor) -> std::io::Result<Self> {
        let active = Arc::new(ArcSwap::from_pointee(Active::of(&supervisor)));
        let shadow_disagreements = Arc::new(AtomicU64::new(0));
        let (requests, inbox) = mpsc::channel::<Request>();
        let policy_thread = PolicyThread {
            active: supervisor,
            previous: None,
            shadow: None,
            published: Arc::clone(&active),
            shadow_disagreements: Arc::clone(&shadow_disagreements),
            recording: None,
        };
        thread::Builder::new()
            .name("vigil-policy".to_owned())
            .spawn(move || policy_thread.serve(inbox))?;
        Ok(PolicyHandle {
            requests,
            active,
            shadow_disagreements,
        })
    }

    fn send(&self, request: Request) -> Result<(), WorkerGone> {
        self.requests.send(request).map_err(|_| WorkerGone)
    }

    /// Sends a request built around a reply channel and awaits the answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, WorkerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(request(reply))?;
        answer.await.map_err(|_| WorkerGone)
    }

    /// Verdicts for a batch (the plugin's, or the fallback's on a fault).
    pub async fn assess(
        &self,
        now_ms: u64,
        sessions: SessionColumns,
    ) -> Result<AssessOutcome, WorkerGone> {
        self.ask(|reply| Request::Assess {
            now_ms,
            sessions,
            reply,
        })
        .await
    }

    /// Queues events for the plugin; does not wait.
    pub fn send_events(&self, events: Vec<Event>) -> Result<(), WorkerGone> {
        self.send(Request::Events(events))
    }

    /// Which sessions to drop under capacity pressure; `None` when the plugin
    /// could not say (the host then refuses new connections).
    pub async fn select_evictions(
        &self,
        now_ms: u64,
        sessions: SessionColumns,
        excess: u32,
    ) -> Result<Option<Vec<SessionId>>, WorkerGone> {
        self.ask(|reply| Request::SelectEvictions {
            now_ms,
            sessions,
            excess,
            reply,
        })
        .await
    }

    /// Makes `candidate` (already validated) the active policy once the batch
    /// in progress, if any, is done; the old one becomes `previous`.
    pub async fn swap(&self, candidate: Supervisor) -> Result<PluginReport, WorkerGone> {
        self.ask(|reply| Request::Swap {
            candidate: Box::new(candidate),
            reply,
        })
        .await
    }

    /// Returns to the previous policy (which becomes previous in turn).
    pub async fn rollback(&self) -> Result<PluginReport, ChangeError> {
        self.ask(|reply| Request::Rollback { reply }).await?
    }

    /// Runs `shadow` beside the active policy, or stops shadowing (`None`).
    pub async fn set_shadow(&self, shadow: Option<Shadow>) -> Result<(), WorkerGone> {
        self.ask(|reply| Request::SetShadow {
            shadow: shadow.map(Box::new),
            reply,
        })
        .await
    }

    /// Makes the shadow candidate active.
    pub async fn promote(&self) -> Result<PluginReport, ChangeError> {
        self.ask(|reply| Request::Promote { reply }).await?
    }

    /// Active, previous and shadow.
    pub async fn overview(&self) -> Result<PolicyOverview, WorkerGone> {
        self.ask(|reply| Request::Overview { reply }).await
    }

    /// The shadow's disagreement report; `None` without a shadow.
    pub async fn shadow_report(&self) -> Result<Option<Value>, WorkerGone> {
        self.ask(|reply| Request::ShadowReport { reply }).await
    }

    /// Starts recording the active policy's calls into a trace file in
    /// `dir` (see [`crate::recorder`]); a recording in progress ends first.
    /// `header.policy` is filled in with the active policy.
    pub async fn record(
        &self,
        header: TraceHeader,
        caps: RecordingCaps,
        dir: std::path::PathBuf,
    ) -> Result<std::io::Result<Recording>, WorkerGone> {
        self.ask(|reply| Request::Record {
            header: Box::new(header),
            caps,
            dir,
            reply,
        })
        .await
    }

    /// Call and fault counters of the active plugin.
    pub fn stats(&self) -> Arc<PolicyStats> {
        Arc::clone(&self.active.load().stats)
    }

    /// Active or disabled.
    pub fn state(&self) -> PolicyState {
        self.stats().state()
    }

    /// Sessions any shadow candidate judged differently from the active
    /// policy, over the life of the process.
    pub fn shadow_disagreements(&self) -> u64 {
        self.shadow_disagreements.load(Ordering::Relaxed)
    }

    /// The active plugin's name and hash.
    pub fn info(&self) -> PluginInfo {
        self.active.load().info.clone()
    }
}

/// How a trace names who answered a batch.
fn source_name(source: VerdictSource) -> String {
    match source {
        VerdictSource::Plugin => "plugin".to_owned(),
        VerdictSource::Fallback(kind) => format!("fallback:{kind}"),
        VerdictSource::Disabled => "disabled".to_owned(),
    }
}

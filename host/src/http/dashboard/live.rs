//! What keeps the dashboard live: a sampler that records one [`Sample`] a
//! second into the [`History`], and, while at least one page is watching,
//! builds one frame a second — the census, the policy, the shadow report,
//! new removals — once for every page, handed out through a `watch`
//! channel. Each page's stream starts with the history, then sends every
//! frame; a page too slow for a frame gets the newest one next, never a
//! backlog.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::watch;
use vigil_policy_runtime::FaultKind;

use crate::cluster::ClusterNode;
use crate::core::SessionHost;
use crate::http::dashboard::history::{History, Sample, Totals};

/// How often a sample (and, while watched, a frame) is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Removals a frame or the history carries at most.
pub const REMOVALS_PER_FRAME: usize = 50;

/// The dashboard's shared state: the host it shows, its history, the newest
/// frame, and how many pages watch.
pub struct Dashboard {
    host: SessionHost,
    cluster: Option<ClusterNode>,
    history: Mutex<History>,
    frames: watch::Sender<Option<Arc<str>>>,
    watchers: AtomicUsize,
    /// Turns true at shutdown: every page's stream ends, so the admin
    /// listener's graceful shutdown is not held open by a browser tab.
    stop: watch::Receiver<bool>,
}

impl Dashboard {
    /// A dashboard over `host` (and its cluster, for the per-node view)
    /// until `stop` turns true.
    pub fn new(
        host: SessionHost,
        cluster: Option<ClusterNode>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Dashboard {
            host,
            cluster,
            history: Mutex::new(History::default()),
            frames: watch::Sender::new(None),
            watchers: AtomicUsize::new(0),
            stop,
        })
    }

    /// The host shown.
    pub fn host(&self) -> &SessionHost {
        &self.host
    }

    /// Samples every [`SAMPLE_EVERY`] until the dashboard's stop.
    pub async fn run_sampler(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while crate::core::tick::next_tick(&mut every, &mut stop).await {
            let sample = self.sample();
            if self.watchers.load(Ordering::Relaxed) > 0 {
                let frame = self.frame(sample).await;
                self.frames.send_replace(Some(Arc::from(frame.to_string())));
            }
        }
    }

    /// Records this second's sample.
    fn sample(&self) -> Sample {
        let host = &self.host;
        let metrics = host.metrics();
        let stats = host.policy().stats();
        let (batches, batch_time) = metrics.assess_totals();
        let totals = Totals {
            evicted: host.removals().by_reason(),
            calls: stats.calls(),
            batches,
            batch_seconds: batch_time.as_secs_f64(),
            faults: stats.total_faults(),
        };
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(
                vigil_policy_runtime::clock::unix_ms_now(),
                host.session_count() as u64,
                metrics.suspect_session_growth.get() != 0,
                totals,
            )
    }

    /// The frame of this second: the sample, the census, the policy, the
    /// shadow report, the newest removals, the nodes. Every frame carries
    /// the newest [`REMOVALS_PER_FRAME`] removals (the page keeps those it
    /// has not seen, by `seq`), so a page that missed frames misses no
    /// removal that is still among the newest.
    async fn frame(&self, sample: Sample) -> Value {
        let host = &self.host;
        let policy = host.policy();
        let stats = policy.stats();
        let faults: serde_json::Map<String, Value> = FaultKind::ALL
            .iter()
            .map(|kind| (kind.as_str().to_owned(), json!(stats.faults(*kind))))
            .collect();
        let overview = policy.overview().await.ok();
        let shadow_report = match overview.as_ref().and_then(|o| o.shadow.as_ref()) {
            Some(_) => policy.shadow_report().await.ok().flatten(),
            None => None,
        };
        let nodes = self.cluster.as_ref().map(|cluster| {
            cluster
                .node_sessions()
                .into_iter()
                .map(|(node, sessions)| json!({ "node": node, "sessions": sessions }))
                .collect::<Vec<_>>()
        });
        json!({
            "sample": sample,
            "census": host.census(),
            "policy": {
                "overview": overview,
                "state": policy.state().as_str(),
                "fallback_batches": stats.fallback_batches(),
                "faults": faults,
            },
            "shadow_report": shadow_report,
            "removals": host.removals().after(0, REMOVALS_PER_FRAME),
            "nodes": nodes,
            "shutting_down": host.is_shutting_down(),
        })
    }

    /// A page's stream: `history` first (the samples and the last
    /// removals), then a `frame` event each second while it stays open.
    pub fn stream(self: &Arc<Self>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let history = json!({
            "samples": self
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .samples(),
            "removals": self.host.removals().after(0, REMOVALS_PER_FRAME),
            "every_ms": SAMPLE_EVERY.as_millis() as u64,
        });
        let first = Event::default().event("history").data(history.to_string());
        let mut frames = self.frames.subscribe();
        // The frame already there is older than the history just sent.
        frames.mark_unchanged();
        let watching = Watching::start(Arc::clone(self));
        let state = (Some(first), frames, watching);
        let events = stream::unfold(state, |(first, mut frames, watching)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (None, frames, watching)));
            }
            let mut stop = watching.0.stop.clone();
            tokio::select! {
                changed = frames.changed() => changed.ok()?,
                _ = stop.wait_for(|stop| *stop) => return None,
            }
            let frame = frames.borrow_and_update().clone();
            let event = match frame {
                Some(frame) => Event::default().event("frame").data(&*frame),
                None => Event::default().comment("no frame yet"),
            };
            Some((Ok(event), (None, frames, watching)))
        });
        Sse::new(events).keep_alive(KeepAlive::default())
    }
}

/// One page watching: counted while its stream lives, so frames are only
/// built while somebody looks.
struct Watching(Arc<Dashboard>);

impl Watching {
    fn start(dashboard: Arc<Dashboard>) -> Self {
        dashboard.watchers.fetch_add(1, Ordering::Relaxed);
        Watching(dashboard)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

//! Write Vigil policy plugins in plain Rust.
//!
//! A policy is a type implementing [`Policy`]; `export_policy!(MyPolicy)` turns
//! it into a `vigil:policy/policy-plugin` component when the crate is built for
//! `wasm32-wasip2`. The same type also compiles natively, so its logic can be
//! unit-tested with `cargo test` and, for the default policy, linked into the
//! host as its fallback.
//!
//! Plugin state lives in the [`Policy`] value and is lost whenever the host
//! swaps the plugin, re-instantiates it after a fault, or restarts: a policy
//! must be able to decide from [`SessionFacts`] alone.

// Lets the generated bindings name this crate by its public path, which is
// also how they are reached from plugin crates through `export_policy!`.
extern crate self as vigil_policy_sdk;

pub mod batch;
pub mod types;

pub use batch::{FactBatch, FactColumns, FactRow, Facts, VerdictWriter};
pub use types::*;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// A session liveness policy: the decisions behind Vigil's heartbeats.
///
/// The host calls these methods in batches, never once per session, under a
/// deadline (20 ms per call by default) and a memory cap (64 MiB by default).
pub trait Policy {
    /// Applies the operator's JSON configuration (`{}` when none). Called once
    /// per instance, before anything else. An `Err` refuses the plugin, so say
    /// which setting is wrong and why.
    fn configure(&mut self, config: &str) -> Result<(), String>;

    /// Events since the previous call, oldest first; ignore them if the policy
    /// keeps no history.
    fn on_events(&mut self, events: &[Event]) {
        let _ = events;
    }

    /// Exactly one verdict per session in `sessions`.
    fn assess(&mut self, now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict>;

    /// The same decisions as [`Policy::assess`], for a batch as the host
    /// sends it (columns) and written into `verdicts`: what a wasm plugin's
    /// `assess` calls. Implementing it is optional: the default turns every
    /// session into a [`SessionFacts`], calls `assess` and writes what it
    /// returns. A policy whose logic reads [`Facts`] can implement it by
    /// deciding on each of `sessions.rows()` and calling
    /// [`VerdictWriter::push`], and so skip both copies (the default policy
    /// does; see [`batch`] for what that saves).
    fn assess_batch(
        &mut self,
        now_ms: u64,
        sessions: FactColumns<'_>,
        verdicts: &mut VerdictWriter,
    ) {
        let sessions = sessions.to_rows();
        for verdict in &self.assess(now_ms, &sessions) {
            verdicts.push_verdict(verdict);
        }
    }

    /// At most `excess` ids from `sessions` to drop because the host is over
    /// its session limit.
    fn select_evictions(
        &mut self,
        now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId>;
}

/// The `excess` sessions that rank first by `rank` (lowest first; ties go
/// to the lower id, so the choice is deterministic): the usual shape of
/// [`Policy::select_evictions`].
pub fn first_by_rank<K: Ord>(
    sessions: &[SessionFacts],
    excess: u32,
    rank: impl Fn(&SessionFacts) -> K,
) -> Vec<SessionId> {
    let mut ranked: Vec<(K, SessionId)> = sessions
        .iter()
        .map(|facts| (rank(facts), facts.id))
        .collect();
    ranked.sort_unstable();
    ranked
        .into_iter()
        .take(excess as usize)
        .map(|(_, id)| id)
        .collect()
}

/// Writes a line to the host's log, tagged with the plugin's name.
///
/// In a native build (the host's fallback, unit tests) there is no host to
/// write to and the line is discarded.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Exports a [`Policy`] type (which must implement `Default`) as the
/// component's `vigil:policy/policy` interface.
///
/// Does nothing outside `wasm32`, so a plugin crate builds and tests natively.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static POLICY: ::core::cell::RefCell<$policy> =
                    ::core::cell::RefCell::new(<$policy as ::core::default::Default>::default());
            }

            struct VigilPolicyExport;

            impl $crate::guest::Guest for VigilPolicyExport {
                fn configure(config: String) -> Result<(), String> {
                    POLICY.with_borrow_mut(|policy| $crate::Policy::configure(policy, &config))
                }

                fn on_events(events: Vec<$crate::guest::WitEvent>) {
                    let events = $crate::guest::events_from_wit(events);
                    POLICY.with_borrow_mut(|policy| $crate::Policy::on_events(policy, &events))
                }

                fn assess(
                    now_ms: u64,
                    batch: $crate::guest::WitSessionBatch,
                ) -> $crate::guest::WitVerdictBatch {
                    POLICY.with_borrow_mut(|policy| $crate::guest::assess(policy, now_ms, batch))
                }

                fn select_evictions(
                    now_ms: u64,
                    batch: $crate::guest::WitSessionBatch,
                    excess: u32,
                ) -> Vec<u64> {
                    let sessions = $crate::guest::facts_from_wit(batch);
                    POLICY.with_borrow_mut(|policy| {
                        $crate::Policy::select_evictions(policy, now_ms, &sessions, excess)
                    })
                }
            }

            $crate::guest::bindings::export_bindings!(VigilPolicyExport with_types_in $crate::guest::bindings);
        };
    };
}

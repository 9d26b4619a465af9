//! A policy that reads what WASI gives it — the wall clock, the monotonic
//! clock and both random sources — and reports the readings in its
//! verdicts, so the host's tests can check that a plugin sees the call's
//! `now-ms` as time and seeded randomness: the same batch, the same verdicts.
//!
//! Each verdict keeps the session, with `reassess-in-ms` set to the wall
//! clock's milliseconds and `health` to a random byte (mod 101); its first
//! session is evicted with the readings spelled out in the reason
//! (`wall=… mono=… random=… insecure=…`, close code 4999).

use vigil_policy_sdk::{Action, Eviction, Policy, SessionFacts, SessionId, Tier, Verdict};

#[derive(Default)]
struct ClockReader;

/// Wall-clock milliseconds since the Unix epoch, as WASI reports them.
fn wall_ms() -> u64 {
    let now = wasi::clocks::wall_clock::now();
    now.seconds * 1_000 + u64::from(now.nanoseconds) / 1_000_000
}

impl Policy for ClockReader {
    fn configure(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        let wall = wall_ms();
        let mono_ms = wasi::clocks::monotonic_clock::now() / 1_000_000;
        sessions
            .iter()
            .enumerate()
            .map(|(index, facts)| {
                let random = wasi::random::random::get_random_u64();
                let insecure = wasi::random::insecure::get_insecure_random_u64();
                let action = if index == 0 {
                    Action::Evict(Eviction {
                        reason: format!(
                            "wall={wall} mono={mono_ms} random={random} insecure={insecure}"
                        )
                        .into(),
                        close_code: 4999,
                    })
                } else {
                    Action::Keep
                };
                Verdict {
                    session: facts.id,
                    health: (random % 101) as u8,
                    tier: Tier::Regular,
                    action,
                    reassess_in_ms: wall.min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect()
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId> {
        vigil_policy_sdk::first_by_rank(sessions, excess, |facts| facts.id)
    }
}

vigil_policy_sdk::export_policy!(ClockReader);

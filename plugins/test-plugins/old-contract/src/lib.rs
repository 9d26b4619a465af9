//! A policy built against `vigil:policy@0.1.0`, the contract as first
//! published (`wit/archive/0.1.0`), so that the host's support for it can
//! be tested: it evicts sessions whose pong is overdue (`pong-timeout`,
//! 4000), keeps the others at the health given as `{"stamp": N}` (100 by
//! default), names the first `excess` sessions when asked to choose, and
//! logs through the 0.1.0 `log` import when configured.

wit_bindgen::generate!({ path: "../../../wit/archive/0.1.0", world: "policy-plugin" });

use std::cell::Cell;

use exports::vigil::policy::policy::Guest;
use vigil::policy::log::{log, Level};
use vigil::policy::types::{Action, Event, Eviction, SessionBatch, Tier, Verdict};

thread_local! {
    static STAMP: Cell<u8> = const { Cell::new(100) };
}

struct OldContract;

impl Guest for OldContract {
    fn configure(config: String) -> Result<(), String> {
        let stamp = config
            .split("\"stamp\":")
            .nth(1)
            .map(|rest| {
                rest.trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .map(|digits| digits.parse::<u8>().map_err(|e| format!("bad stamp: {e}")))
            .transpose()?
            .unwrap_or(100);
        STAMP.set(stamp);
        log(Level::Info, "old-contract policy configured");
        Ok(())
    }

    fn on_events(_events: Vec<Event>) {}

    fn assess(_now_ms: u64, batch: SessionBatch) -> Vec<Verdict> {
        batch
            .id
            .iter()
            .zip(&batch.pong_overdue)
            .map(|(&session, &overdue)| Verdict {
                session,
                health: if overdue { 0 } else { STAMP.get() },
                tier: if overdue { Tier::Fast } else { Tier::Regular },
                action: if overdue {
                    Action::Evict(Eviction {
                        reason: "pong-timeout".to_owned(),
                        close_code: 4000,
                    })
                } else {
                    Action::Keep
                },
                reassess_in_ms: 1_000,
            })
            .collect()
    }

    fn select_evictions(_now_ms: u64, batch: SessionBatch, excess: u32) -> Vec<u64> {
        batch.id.into_iter().take(excess as usize).collect()
    }
}

export!(OldContract);

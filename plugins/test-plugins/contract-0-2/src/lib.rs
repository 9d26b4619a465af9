//! A policy built against `vigil:policy@0.2.0` (`wit/archive/0.2.0`), the
//! contract whose `tier`, `action` and `pong-overdue` columns were enums and
//! booleans, so that the host's support for it can be tested. It decides as
//! `old-contract` does: evicts sessions whose pong is overdue
//! (`pong-timeout`, 4000, in `fast`), keeps the others in `regular` at the
//! health given as `{"stamp": N}` (100 by default), names the first
//! `excess` sessions when asked to choose, and logs through the 0.2.0 `log`
//! import when configured.

wit_bindgen::generate!({ path: "../../../wit/archive/0.2.0", world: "policy-plugin" });

use std::cell::Cell;

use exports::vigil::policy::policy::Guest;
use vigil::policy::log::{log, Level};
use vigil::policy::types::{Action, Event, SessionBatch, Tier, VerdictBatch};

thread_local! {
    static STAMP: Cell<u8> = const { Cell::new(100) };
}

struct Contract02;

impl Guest for Contract02 {
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
        log(Level::Info, "0.2.0 policy configured");
        Ok(())
    }

    fn on_events(_events: Vec<Event>) {}

    fn assess(_now_ms: u64, batch: SessionBatch) -> VerdictBatch {
        let overdue = &batch.pong_overdue;
        VerdictBatch {
            reasons: vec!["pong-timeout".to_owned()],
            health: pick(overdue, 0, STAMP.get()),
            tier: pick(overdue, Tier::Fast, Tier::Regular),
            action: pick(overdue, Action::Evict, Action::Keep),
            reason_index: vec![0; overdue.len()],
            close_code: pick(overdue, 4000, 0),
            reassess_in_ms: vec![1_000; overdue.len()],
            session: batch.id,
        }
    }

    fn select_evictions(_now_ms: u64, batch: SessionBatch, excess: u32) -> Vec<u64> {
        batch.id.into_iter().take(excess as usize).collect()
    }
}

/// A column with `if_overdue` where the pong is overdue, `otherwise` elsewhere.
fn pick<T: Copy>(overdue: &[bool], if_overdue: T, otherwise: T) -> Vec<T> {
    overdue
        .iter()
        .map(|&late| if late { if_overdue } else { otherwise })
        .collect()
}

export!(Contract02);

//! The SDK's contract codes and its batch read and written in place
//! (`plugins/sdk/src/batch.rs`), checked natively. (The SDK is its own
//! workspace's crate, built for wasm; its behaviour is tested here, where
//! `cargo test --workspace` runs it.)

use std::sync::Arc;

use vigil::sdk::{
    Action, Eviction, FactBatch, Facts, SessionFacts, TcpFacts, Tier, Verdict, VerdictWriter,
};

#[test]
fn every_tier_round_trips_through_its_code_and_no_other_code_is_a_tier() {
    for tier in [Tier::Fast, Tier::Regular, Tier::KeepAlive] {
        assert_eq!(Tier::from_code(tier.code()), Some(tier));
    }
    assert_eq!(
        [Tier::Fast, Tier::Regular, Tier::KeepAlive].map(Tier::code),
        [0, 1, 2],
        "the codes the WIT documents"
    );
    assert!((3..=u8::MAX).all(|code| Tier::from_code(code).is_none()));
}

#[test]
fn actions_have_the_codes_the_wit_documents() {
    let evict = Action::Evict(Eviction::new("idle", 4003));
    assert_eq!(
        [Action::Keep.code(), Action::Ping.code(), evict.code()],
        [0, 1, 2]
    );
}

/// Two classes; one session with every optional fact known.
fn sessions() -> Vec<SessionFacts> {
    let mut known = SessionFacts::new(7, "onebot");
    known.since_pong_ms = Some(1_200);
    known.outstanding_pings = 2;
    known.oldest_ping_ms = Some(6_000);
    known.pong_overdue = true;
    known.last_rtt_ms = Some(3);
    known.tier = Tier::KeepAlive;
    known.tcp = Some(TcpFacts {
        rtt_us: 80,
        rttvar_us: 20,
        total_retransmits: 1,
        unacked: 2,
        last_data_recv_ms: 900,
    });
    vec![
        SessionFacts::new(5, "default"),
        known,
        SessionFacts::new(9, "default"),
    ]
}

#[test]
fn a_row_read_in_place_says_what_its_record_says() {
    let facts = sessions();
    let batch = FactBatch::from_rows(&facts);
    let columns = batch.columns();
    assert_eq!(columns.len(), 3);
    assert_eq!(columns.to_rows(), facts);
    for (row, record) in columns.rows().zip(&facts) {
        assert_eq!(row.id(), record.id());
        assert_eq!(row.client_class(), record.client_class());
        assert_eq!(row.since_pong_ms(), record.since_pong_ms());
        assert_eq!(row.oldest_ping_ms(), record.oldest_ping_ms());
        assert_eq!(row.pong_overdue(), record.pong_overdue());
        assert_eq!(row.last_rtt_ms(), record.last_rtt_ms());
        assert_eq!(row.tier(), record.tier());
        assert_eq!(row.tcp(), record.tcp());
    }
}

#[test]
fn the_writer_reads_back_what_was_written_with_equal_reasons_shared() {
    let verdicts = [
        Verdict {
            session: 1,
            health: 10,
            tier: Tier::Fast,
            action: Action::Evict(Eviction::new("idle", 4003)),
            reassess_in_ms: 1_000,
        },
        Verdict {
            session: 2,
            health: 100,
            tier: Tier::KeepAlive,
            action: Action::Ping,
            reassess_in_ms: 30_000,
        },
        Verdict {
            session: 3,
            health: 0,
            tier: Tier::Fast,
            // An equal reason in a string of its own.
            action: Action::Evict(Eviction::new("idle", 4004)),
            reassess_in_ms: 1_000,
        },
    ];
    let mut writer = VerdictWriter::with_capacity(3);
    for verdict in &verdicts {
        writer.push_verdict(verdict);
    }
    assert_eq!(writer.len(), 3);
    let read = writer.to_rows();
    assert_eq!(read, verdicts);
    let (Action::Evict(first), Action::Evict(third)) = (&read[0].action, &read[2].action) else {
        panic!("sessions 1 and 3 are evicted: {read:?}");
    };
    assert!(
        Arc::ptr_eq(&first.reason, &third.reason),
        "the answer holds the reason once"
    );
}

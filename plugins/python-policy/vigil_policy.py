"""A small helper for Vigil policies written in Python.

The host hands `assess` and `select_evictions` a batch as columns (one list
per fact, element i of each describing session i), because columns cross
the component boundary far faster than records. Authors usually want one
record per session; `sessions(batch)` gives exactly that, like the Rust
SDK's `SessionFacts`, without copying the columns.

The answer goes back as columns too (the WIT's `verdict-batch`). Authors
build one `verdict(...)` per session, with `KEEP`, `PING` or
`evict(reason, close_code)` as its action, and return
`verdict_batch(verdicts)`, which writes the columns and lists each eviction
reason once. Also here: `first_by_rank` picks sessions for
`select_evictions`, and `log` writes to the host's log.
"""

from collections import namedtuple
from enum import IntEnum

from wit_world.imports import types
from wit_world.imports import log as _log

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


class Tier(IntEnum):
    """How closely the host watches a session. The contract carries tiers
    as these integer codes (`tier-code` in the WIT), so a column of them
    crosses the boundary in one copy."""

    FAST = 0
    REGULAR = 1
    KEEP_ALIVE = 2


_TIERS = tuple(Tier)

# The contract's `action-code`s: keep, ping, and evict (which `evict(...)`
# builds, with its reason and close code).
KEEP = 0
PING = 1
_EVICT = 2

# The batch's columns, in the order a `Session` holds them. Three may be
# unknown; their raw columns end in `_raw` and a property gives `None`.
_COLUMNS = (
    "id",
    "client_class",
    "age_ms",
    "idle_ms",
    "app_idle_ms",
    "since_pong_ms_raw",
    "outstanding_pings",
    "oldest_ping_ms",
    "pong_overdue",
    "last_rtt_ms_raw",
    "send_errors",
    "transport_errors",
    "queued_bytes",
    "queued_frames",
    "backlog_ms",
    "dropped_frames",
    "tier",
    "tcp_rtt_us_raw",
    "tcp_rttvar_us",
    "tcp_total_retransmits",
    "tcp_unacked",
    "tcp_last_data_recv_ms",
)


class Session(namedtuple("SessionColumns", _COLUMNS)):
    """One session of a batch, every fact a field (`s.age_ms`,
    `s.pong_overdue`, `s.client_class`, ...). The WIT spells "unknown" as
    the type's maximum; `since_pong_ms`, `last_rtt_ms` and `tcp_rtt_us`
    give `None` for it."""

    __slots__ = ()

    @property
    def since_pong_ms(self):
        return None if self.since_pong_ms_raw == U64_MAX else self.since_pong_ms_raw

    @property
    def last_rtt_ms(self):
        return None if self.last_rtt_ms_raw == U32_MAX else self.last_rtt_ms_raw

    @property
    def tcp_rtt_us(self):
        return None if self.tcp_rtt_us_raw == U32_MAX else self.tcp_rtt_us_raw


def sessions(batch):
    """One `Session` per session of the batch, in the batch's order. Built
    by zipping the columns, so it costs a tuple per session, not a call per
    fact."""
    classes = batch.classes
    client_class = [classes[index] for index in batch.class_index]
    rows = zip(
        batch.id,
        client_class,
        batch.age_ms,
        batch.idle_ms,
        batch.app_idle_ms,
        batch.since_pong_ms,
        batch.outstanding_pings,
        batch.oldest_ping_ms,
        map(bool, batch.pong_overdue),
        batch.last_rtt_ms,
        batch.send_errors,
        batch.transport_errors,
        batch.queued_bytes,
        batch.queued_frames,
        batch.backlog_ms,
        batch.dropped_frames,
        [_TIERS[code] for code in batch.tier],
        batch.tcp_rtt_us,
        batch.tcp_rttvar_us,
        batch.tcp_total_retransmits,
        batch.tcp_unacked,
        batch.tcp_last_data_recv_ms,
    )
    return list(map(Session._make, rows))


Eviction = namedtuple("Eviction", ("reason", "close_code"))
Eviction.__doc__ = """The action that closes a session: `reason` (1-123 bytes,
a metrics label and close-frame reason) and a WebSocket `close_code`."""

Verdict = namedtuple("Verdict", ("session", "health", "tier", "action", "reassess_in_ms"))
Verdict.__doc__ = """The decision about one session, as `verdict` builds it."""


def evict(reason, close_code):
    """The action that closes a session with `reason` and `close_code`."""
    return Eviction(reason, close_code)


def verdict(session, health, tier, action, reassess_in_ms):
    """The verdict for `session`: health 0-100, its tier, what to do (`KEEP`,
    `PING` or `evict(...)`), and when to assess it again at the latest."""
    return Verdict(
        session.id,
        max(0, min(100, int(health))),
        tier,
        action,
        int(reassess_in_ms),
    )


def verdict_batch(verdicts):
    """The WIT's `verdict-batch` for a list of `verdict(...)`s: one column
    per field, each eviction reason written once."""
    reasons = {}
    action = []
    reason_index = []
    close_code = []
    for v in verdicts:
        if isinstance(v.action, Eviction):
            action.append(_EVICT)
            reason_index.append(reasons.setdefault(v.action.reason, len(reasons)))
            close_code.append(v.action.close_code)
        else:
            action.append(v.action)
            reason_index.append(0)
            close_code.append(0)
    return types.VerdictBatch(
        reasons=list(reasons),
        session=[v.session for v in verdicts],
        health=bytes(v.health for v in verdicts),
        # componentize-py takes `bytes` for a `list<u8>` but a list for the
        # `list<tier-code>` and `list<action-code>` aliases.
        tier=[int(v.tier) for v in verdicts],
        action=action,
        reason_index=reason_index,
        close_code=close_code,
        reassess_in_ms=[v.reassess_in_ms for v in verdicts],
    )


def first_by_rank(batch, excess, rank):
    """The ids of the `excess` sessions with the lowest `rank(session)`;
    ties go to the lower id, so the choice is deterministic."""
    ranked = sorted(sessions(batch), key=lambda session: (rank(session), session.id))
    return [session.id for session in ranked[:excess]]


def log(message, level=_log.Level.INFO):
    """A line in the host's log, tagged with the plugin's name."""
    _log.log(level, message)

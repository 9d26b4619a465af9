"""A Vigil liveness policy in Python: the default policy's rules, readable.

Evicts on an overdue pong, on repeated send failures, on a lasting outbound
backlog or an overflowing queue, and (optionally) on long silence; probes
sessions that look unwell; under capacity pressure drops the least healthy
sessions first. Every threshold comes from the JSON configuration the host
hands to `configure`, with the defaults below.
"""

import json

from wit_world import exports
from componentize_py_types import Err

from vigil_policy import KEEP, PING, Tier, evict, first_by_rank, log, sessions, verdict, verdict_batch

# Close codes, one per reason, in the private range (as the Rust default).
PONG_TIMEOUT = 4000
SEND_FAILURES = 4001
BACKLOG = 4002
IDLE = 4003

DEFAULTS = {
    "new_session_ms": 10_000,
    "fast_below_health": 60,
    "probe_below_health": 40,
    "keep_alive_after_ms": 120_000,
    "idle_evict_ms": 600_000,
    "overdue_pings_to_evict": 1,
    "send_failures_to_evict": 3,
    "dropped_frames_to_evict": 1,
    "backlog_evict_ms": 10_000,
    "slow_rtt_ms": 1_000,
    "reassess_ms": {"fast": 1_000, "regular": 5_000, "keep-alive": 30_000},
}


def load_settings(text):
    """The settings from a JSON object: known keys only, non-negative
    integers (reassess_ms an object of them)."""
    try:
        given = json.loads(text or "{}")
    except ValueError as error:
        raise Err(f"config is not JSON: {error}")
    if not isinstance(given, dict):
        raise Err("config must be a JSON object")
    settings = dict(DEFAULTS)
    for key, value in given.items():
        if key not in DEFAULTS:
            raise Err(f"unknown setting `{key}`; known: {', '.join(sorted(DEFAULTS))}")
        if key == "reassess_ms":
            if not isinstance(value, dict) or any(
                tier not in DEFAULTS["reassess_ms"] or not _is_count(ms) or ms == 0
                for tier, ms in value.items()
            ):
                raise Err("`reassess_ms` must map fast, regular and keep-alive to ms above 0")
            settings[key] = {**DEFAULTS["reassess_ms"], **value}
        elif not _is_count(value):
            raise Err(f"`{key}` must be a non-negative integer, not {value!r}")
        else:
            settings[key] = value
    if settings["backlog_evict_ms"] == 0:
        raise Err("`backlog_evict_ms` must be above 0")
    return settings


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


TIER_NAMES = {Tier.FAST: "fast", Tier.REGULAR: "regular", Tier.KEEP_ALIVE: "keep-alive"}

# The instance's state lives in the module: componentize-py may make a new
# `Policy` object for each call, so nothing is kept on `self`.
SETTINGS = dict(DEFAULTS)


class Policy(exports.Policy):
    @property
    def settings(self):
        return SETTINGS

    def configure(self, config):
        global SETTINGS
        SETTINGS = load_settings(config)
        log(f"python policy configured: {json.dumps(SETTINGS, sort_keys=True)}")

    def on_events(self, events):
        # Every decision works from the facts alone.
        pass

    def health(self, s):
        """0-100 from the heartbeat, error history, queue and round trips."""
        lost = 0
        if s.pong_overdue:
            lost += 60
        lost += min(10 * max(s.outstanding_pings - 1, 0), 30)
        lost += min(15 * s.send_errors, 45)
        lost += min(10 * s.transport_errors, 30)
        lost += min(5 * s.dropped_frames, 20)
        if s.backlog_ms > 0:
            limit = self.settings["backlog_evict_ms"]
            lost += max(min(s.backlog_ms, limit) * 30 // limit, 1)
        rtt = s.last_rtt_ms
        if rtt is not None and rtt > self.settings["slow_rtt_ms"]:
            lost += 20
        if s.app_idle_ms >= self.settings["keep_alive_after_ms"]:
            lost += 5
        return max(100 - lost, 0)

    def tier(self, s, health):
        if s.age_ms < self.settings["new_session_ms"] or health < self.settings["fast_below_health"]:
            return Tier.FAST
        if s.app_idle_ms >= self.settings["keep_alive_after_ms"]:
            return Tier.KEEP_ALIVE
        return Tier.REGULAR

    def action(self, s, tier, health):
        """The first rule that fires, most certain evidence of death first."""
        settings = self.settings
        if s.pong_overdue and s.outstanding_pings >= settings["overdue_pings_to_evict"]:
            return evict("pong-timeout", PONG_TIMEOUT)
        if settings["send_failures_to_evict"] and s.send_errors >= settings["send_failures_to_evict"]:
            return evict("send-failures", SEND_FAILURES)
        if settings["dropped_frames_to_evict"] and s.dropped_frames >= settings["dropped_frames_to_evict"]:
            return evict("backlog-overflow", BACKLOG)
        if s.backlog_ms >= settings["backlog_evict_ms"]:
            return evict("backlog", BACKLOG)
        if tier == Tier.KEEP_ALIVE and settings["idle_evict_ms"] and s.app_idle_ms >= settings["idle_evict_ms"]:
            return evict("idle", IDLE)
        if s.outstanding_pings == 0 and (s.backlog_ms > 0 or health < settings["probe_below_health"]):
            return PING
        return KEEP

    def assess(self, now_ms, batch):
        reassess = self.settings["reassess_ms"]
        verdicts = []
        for s in sessions(batch):
            health = self.health(s)
            tier = self.tier(s, health)
            verdicts.append(verdict(s, health, tier, self.action(s, tier, health), reassess[TIER_NAMES[tier]]))
        return verdict_batch(verdicts)

    def select_evictions(self, now_ms, batch, excess):
        # Least healthy first; among equals the longest silent.
        return first_by_rank(batch, excess, lambda s: (self.health(s), -s.app_idle_ms))

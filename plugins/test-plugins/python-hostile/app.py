"""A Python policy that misbehaves on request, for the sandbox tests.

Config: {"misbehave": "loop" | "memory" | "trap" | "none", "in": "assess" |
"configure", "trigger_class": "..."}. `loop` never returns, `memory`
allocates until it is stopped, `trap` raises (an uncaught exception in an
export is a trap). With `trigger_class`, `assess` misbehaves only on
batches holding a session of that class; with `batch_above`, only on
batches of more sessions than that. Otherwise every session is kept.
"""

import json

from wit_world import exports
from wit_world.imports import types


def misbehave(how):
    if how == "loop":
        while True:
            pass
    if how == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if how == "trap":
        raise RuntimeError("this plugin raises on purpose")


# Module state: componentize-py may make a new `Policy` for each call.
SETTINGS = {}


class Policy(exports.Policy):
    def configure(self, config):
        SETTINGS.clear()
        SETTINGS.update(json.loads(config or "{}"))
        if SETTINGS.get("in", "assess") == "configure":
            misbehave(SETTINGS.get("misbehave", "none"))

    def on_events(self, events):
        pass

    def assess(self, now_ms, batch):
        trigger = SETTINGS.get("trigger_class")
        above = SETTINGS.get("batch_above", -1)
        if (
            SETTINGS.get("in", "assess") == "assess"
            and (trigger is None or trigger in batch.classes)
            and len(batch.id) > above
        ):
            misbehave(SETTINGS.get("misbehave", "none"))
        count = len(batch.id)
        return types.VerdictBatch(
            reasons=[],
            session=list(batch.id),
            health=bytes([100] * count),
            tier=[1] * count,
            action=[0] * count,
            reason_index=[0] * count,
            close_code=[0] * count,
            reassess_in_ms=[5000] * count,
        )

    def select_evictions(self, now_ms, batch, excess):
        return list(batch.id[:excess])

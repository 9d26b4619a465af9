// A JavaScript policy that misbehaves on request, for the sandbox tests.
//
// Config: {"misbehave": "loop" | "memory" | "trap" | "none", "in": "assess"
// | "configure", "trigger_class": "..."}. `loop` never returns, `memory`
// allocates until it is stopped, `trap` throws (an exception out of an
// export that returns no result is a trap). With `trigger_class`, `assess`
// misbehaves only on batches holding a session of that class. Otherwise
// every session is kept.

let how = 'none';
let where = 'assess';
let trigger = null;

function misbehave() {
    if (how === 'loop') {
        for (;;) { /* forever */ }
    }
    if (how === 'memory') {
        const hoard = [];
        for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    if (how === 'trap') {
        throw new Error('this plugin throws on purpose');
    }
}

export const policy = {
    configure(config) {
        const settings = JSON.parse(config || '{}');
        how = settings.misbehave ?? 'none';
        where = settings.in ?? 'assess';
        trigger = settings.trigger_class ?? null;
        if (where === 'configure') misbehave();
    },
    onEvents(_events) {},
    assess(_nowMs, batch) {
        if (where === 'assess' && (trigger === null || batch.classes.includes(trigger))) misbehave();
        const count = batch.id.length;
        return {
            reasons: [],
            session: BigUint64Array.from(batch.id),
            health: new Uint8Array(count).fill(100),
            tier: new Uint8Array(count).fill(1),
            action: new Uint8Array(count).fill(0),
            reasonIndex: new Uint32Array(count),
            closeCode: new Uint16Array(count),
            reassessInMs: new Uint32Array(count).fill(5000),
        };
    },
    selectEvictions(_nowMs, batch, excess) {
        return batch.id.slice(0, excess);
    },
};

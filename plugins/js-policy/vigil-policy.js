// A small helper for Vigil policies written in JavaScript.
//
// The host hands `assess` and `selectEvictions` a batch as columns (one
// typed array per fact, element i of each describing session i), because
// columns cross the component boundary far faster than records. Authors
// usually want one record per session; `sessions(batch)` gives exactly
// that, like the Rust SDK's `SessionFacts`: plain numbers for every fact
// (u64 columns arrive as BigInt and are converted), the id kept as the
// BigInt the host wants back, `null` for the facts the WIT marks unknown.
//
// The answer goes back as columns too (the WIT's `verdict-batch`). Authors
// build one `verdict(...)` per session, with `KEEP`, `PING` or
// `evict(reason, closeCode)` as its action, and return
// `verdictBatch(verdicts)`, which writes the columns (typed arrays) and
// lists each eviction reason once. Also here: `firstByRank` picks sessions
// for `selectEvictions`, and `log` writes to the host's log.

import { log as hostLog } from 'vigil:policy/log@0.3.0';

const U64_MAX = 0xffffffffffffffffn;
const U32_MAX = 0xffffffff;

// The contract carries tiers and actions as integer codes (`tier-code`,
// `action-code` in the WIT), so their columns cross the boundary in one
// copy; policies here name them as words.
const TIERS = ['fast', 'regular', 'keep-alive'];
const TIER_CODES = { fast: 0, regular: 1, 'keep-alive': 2 };
const ACTION_CODES = { keep: 0, ping: 1, evict: 2 };

export const KEEP = { tag: 'keep' };
export const PING = { tag: 'ping' };

/** The action that closes a session with `reason` (1-123 bytes, a metrics
 * label and close-frame reason) and a WebSocket `closeCode`. */
export function evict(reason, closeCode) {
    return { tag: 'evict', reason, closeCode };
}

/** One record per session of the batch, in the batch's order. */
export function sessions(batch) {
    const count = batch.id.length;
    const out = new Array(count);
    for (let i = 0; i < count; i++) {
        const sincePong = batch.sincePongMs[i];
        const lastRtt = batch.lastRttMs[i];
        const tcpRtt = batch.tcpRttUs[i];
        out[i] = {
            id: batch.id[i],
            clientClass: batch.classes[batch.classIndex[i]],
            ageMs: Number(batch.ageMs[i]),
            idleMs: Number(batch.idleMs[i]),
            appIdleMs: Number(batch.appIdleMs[i]),
            sincePongMs: sincePong === U64_MAX ? null : Number(sincePong),
            outstandingPings: batch.outstandingPings[i],
            oldestPingMs: Number(batch.oldestPingMs[i]),
            pongOverdue: batch.pongOverdue[i] !== 0,
            lastRttMs: lastRtt === U32_MAX ? null : lastRtt,
            sendErrors: batch.sendErrors[i],
            transportErrors: batch.transportErrors[i],
            queuedBytes: Number(batch.queuedBytes[i]),
            queuedFrames: batch.queuedFrames[i],
            backlogMs: Number(batch.backlogMs[i]),
            droppedFrames: batch.droppedFrames[i],
            tier: TIERS[batch.tier[i]],
            tcpRttUs: tcpRtt === U32_MAX ? null : tcpRtt,
            tcpTotalRetransmits: batch.tcpTotalRetransmits[i],
        };
    }
    return out;
}

/** The verdict for `session`: health 0-100, its tier ('fast', 'regular',
 * 'keep-alive'), what to do, and when to assess it again at the latest. */
export function verdict(session, health, tier, action, reassessInMs) {
    return {
        session: session.id,
        health: Math.max(0, Math.min(100, Math.round(health))),
        tier,
        action,
        reassessInMs,
    };
}

/** The WIT's `verdict-batch` for an array of `verdict(...)`s: one column
 * per field, each eviction reason written once. */
export function verdictBatch(verdicts) {
    const count = verdicts.length;
    const reasons = new Map();
    const batch = {
        reasons: [],
        session: new BigUint64Array(count),
        health: new Uint8Array(count),
        tier: new Uint8Array(count),
        action: new Uint8Array(count),
        reasonIndex: new Uint32Array(count),
        closeCode: new Uint16Array(count),
        reassessInMs: new Uint32Array(count),
    };
    for (let i = 0; i < count; i++) {
        const v = verdicts[i];
        batch.session[i] = v.session;
        batch.health[i] = v.health;
        const tier = TIER_CODES[v.tier];
        const action = ACTION_CODES[v.action.tag];
        if (tier === undefined || action === undefined) {
            throw new Error(`verdict for session ${v.session}: tier must be 'fast', 'regular' or 'keep-alive' (got ${v.tier}) and action KEEP, PING or evict(...)`);
        }
        batch.tier[i] = tier;
        batch.action[i] = action;
        batch.reassessInMs[i] = v.reassessInMs;
        if (v.action.tag === 'evict') {
            let index = reasons.get(v.action.reason);
            if (index === undefined) {
                index = reasons.size;
                reasons.set(v.action.reason, index);
            }
            batch.reasonIndex[i] = index;
            batch.closeCode[i] = v.action.closeCode;
        }
    }
    batch.reasons = Array.from(reasons.keys());
    return batch;
}

/** The ids of the `excess` sessions with the lowest `rank(session)` (an
 * array compared element by element); ties go to the lower id. */
export function firstByRank(batch, excess, rank) {
    const ranked = sessions(batch).map((session) => [rank(session), session]);
    ranked.sort(([a, s], [b, t]) => {
        for (let k = 0; k < a.length; k++) {
            if (a[k] !== b[k]) return a[k] < b[k] ? -1 : 1;
        }
        return s.id < t.id ? -1 : s.id > t.id ? 1 : 0;
    });
    return BigUint64Array.from(ranked.slice(0, excess).map(([, session]) => session.id));
}

/** A line in the host's log, tagged with the plugin's name. */
export function log(message, level = 'info') {
    hostLog(level, message);
}

// A Vigil liveness policy in JavaScript: the default policy's rules,
// readable.
//
// Evicts on an overdue pong, on repeated send failures, on a lasting
// outbound backlog or an overflowing queue, and (optionally) on long
// silence; probes sessions that look unwell; under capacity pressure drops
// the least healthy sessions first. Every threshold comes from the JSON
// configuration the host hands to `configure`, with the defaults below.

import { KEEP, PING, evict, firstByRank, log, sessions, verdict, verdictBatch } from './vigil-policy.js';

// Close codes, one per reason, in the private range (as the Rust default).
const PONG_TIMEOUT = 4000;
const SEND_FAILURES = 4001;
const BACKLOG = 4002;
const IDLE = 4003;

const DEFAULTS = {
    new_session_ms: 10000,
    fast_below_health: 60,
    probe_below_health: 40,
    keep_alive_after_ms: 120000,
    idle_evict_ms: 600000,
    overdue_pings_to_evict: 1,
    send_failures_to_evict: 3,
    dropped_frames_to_evict: 1,
    backlog_evict_ms: 10000,
    slow_rtt_ms: 1000,
    reassess_ms: { fast: 1000, regular: 5000, 'keep-alive': 30000 },
};

const isCount = (value) => Number.isInteger(value) && value >= 0;

/** The settings from a JSON object: known keys only, non-negative integers
 * (reassess_ms an object of them). Throws the message the host shows. */
function loadSettings(text) {
    let given;
    try {
        given = JSON.parse(text || '{}');
    } catch (error) {
        throw `config is not JSON: ${error.message}`;
    }
    if (given === null || typeof given !== 'object' || Array.isArray(given)) {
        throw 'config must be a JSON object';
    }
    const settings = { ...DEFAULTS, reassess_ms: { ...DEFAULTS.reassess_ms } };
    for (const [key, value] of Object.entries(given)) {
        if (!(key in DEFAULTS)) {
            throw `unknown setting \`${key}\`; known: ${Object.keys(DEFAULTS).sort().join(', ')}`;
        }
        if (key === 'reassess_ms') {
            if (value === null || typeof value !== 'object'
                || Object.entries(value).some(([tier, ms]) => !(tier in DEFAULTS.reassess_ms) || !isCount(ms) || ms === 0)) {
                throw '`reassess_ms` must map fast, regular and keep-alive to ms above 0';
            }
            Object.assign(settings.reassess_ms, value);
        } else if (!isCount(value)) {
            throw `\`${key}\` must be a non-negative integer, not ${JSON.stringify(value)}`;
        } else {
            settings[key] = value;
        }
    }
    if (settings.backlog_evict_ms === 0) {
        throw '`backlog_evict_ms` must be above 0';
    }
    return settings;
}

let settings = loadSettings('{}');

/** 0-100 from the heartbeat, error history, queue and round trips. */
function health(s) {
    let lost = 0;
    if (s.pongOverdue) lost += 60;
    lost += Math.min(10 * Math.max(s.outstandingPings - 1, 0), 30);
    lost += Math.min(15 * s.sendErrors, 45);
    lost += Math.min(10 * s.transportErrors, 30);
    lost += Math.min(5 * s.droppedFrames, 20);
    if (s.backlogMs > 0) {
        const limit = settings.backlog_evict_ms;
        lost += Math.max(Math.floor(Math.min(s.backlogMs, limit) * 30 / limit), 1);
    }
    if (s.lastRttMs !== null && s.lastRttMs > settings.slow_rtt_ms) lost += 20;
    if (s.appIdleMs >= settings.keep_alive_after_ms) lost += 5;
    return Math.max(100 - lost, 0);
}

function tierOf(s, score) {
    if (s.ageMs < settings.new_session_ms || score < settings.fast_below_health) return 'fast';
    if (s.appIdleMs >= settings.keep_alive_after_ms) return 'keep-alive';
    return 'regular';
}

/** The first rule that fires, most certain evidence of death first. */
function actionOf(s, tier, score) {
    if (s.pongOverdue && s.outstandingPings >= settings.overdue_pings_to_evict) {
        return evict('pong-timeout', PONG_TIMEOUT);
    }
    if (settings.send_failures_to_evict && s.sendErrors >= settings.send_failures_to_evict) {
        return evict('send-failures', SEND_FAILURES);
    }
    if (settings.dropped_frames_to_evict && s.droppedFrames >= settings.dropped_frames_to_evict) {
        return evict('backlog-overflow', BACKLOG);
    }
    if (s.backlogMs >= settings.backlog_evict_ms) return evict('backlog', BACKLOG);
    if (tier === 'keep-alive' && settings.idle_evict_ms && s.appIdleMs >= settings.idle_evict_ms) {
        return evict('idle', IDLE);
    }
    if (s.outstandingPings === 0 && (s.backlogMs > 0 || score < settings.probe_below_health)) {
        return PING;
    }
    return KEEP;
}

export const policy = {
    configure(config) {
        settings = loadSettings(config);
        log(`js policy configured: ${JSON.stringify(settings)}`);
    },

    onEvents(_events) {
        // Every decision works from the facts alone.
    },

    assess(_nowMs, batch) {
        const verdicts = sessions(batch).map((s) => {
            const score = health(s);
            const tier = tierOf(s, score);
            return verdict(s, score, tier, actionOf(s, tier, score), settings.reassess_ms[tier]);
        });
        return verdictBatch(verdicts);
    },

    selectEvictions(_nowMs, batch, excess) {
        // Least healthy first; among equals the longest silent.
        return firstByRank(batch, excess, (s) => [health(s), -s.appIdleMs]);
    },
};

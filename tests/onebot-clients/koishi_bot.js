#!/usr/bin/env node
// Koishi app with koishi-plugin-adapter-onebot in forward-WebSocket (`ws`) mode,
// used by Vigil's OneBot tests. No loader, config file, database, console or
// other plugin: just the HTTP client service and the OneBot adapter.
//
// Run with the npm prefix made by setup.sh:
//   VIGIL_URL=ws://127.0.0.1:PORT/ VIGIL_TOKEN=secret VIGIL_SELF_ID=3651396264 \
//   VIGIL_NPM_PREFIX=target/onebot-clients/npm VIGIL_WORKDIR=/tmp/x \
//       node tests/onebot-clients/koishi_bot.js
//
// Environment:
//   VIGIL_URL         forward WebSocket URL (required), e.g. ws://127.0.0.1:PORT/
//   VIGIL_TOKEN       access token, sent as `Authorization: Bearer <token>` (optional)
//   VIGIL_SELF_ID     the bot account id Koishi is told about (required by the adapter)
//   VIGIL_NPM_PREFIX  npm prefix holding node_modules (default: <repo>/target/onebot-clients/npm)
//   VIGIL_WORKDIR     directory to chdir into (created if missing; default: a fresh temp dir)
//   VIGIL_RESPONSE_TIMEOUT_MS  per-action response timeout (default 60000, as the adapter)
//   VIGIL_LOG_LEVEL   Koishi log level 0..3 (default 2 = info; 3 = debug, which logs
//                     every received event and every request/response); logs go to stderr
//
// Protocol lines on stdout (one per event):
//   VIGIL online                    bot status became ONLINE (get_login_info and
//                                   get_guild_service_profile were answered)
//   VIGIL heartbeat good=<bool>     a heartbeat meta event arrived, with its status.good
//   VIGIL message <text>            a message event arrived
//   VIGIL replied                   the answer to `vigil-ping` was sent and acknowledged
//   VIGIL reply-failed <error>      sending it failed
//   VIGIL reconnecting              bot status became RECONNECT (a retry is scheduled)
//   VIGIL offline <error|->         bot status became OFFLINE
//   VIGIL socket-error <message>    the WebSocket failed, e.g. `Unexpected server response: 401`
//   VIGIL socket-closed code=<n>    an opened WebSocket closed
//
// Real-client behaviour worth knowing (koishi-plugin-adapter-onebot 6.9.4 with
// @satorijs/core 4.x): after an established socket closes, the adapter's close
// handler marks the bot OFFLINE, which cancels the scheduled retry, so Koishi
// does NOT reconnect. Refused upgrades (401/403) are retried forever: every
// retryInterval for the first retryTimes attempts, then every retryLazy.
'use strict'

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { createRequire } = require('node:module')

function say(line) {
  // Writes to pipes and files are synchronous in Node on Linux.
  process.stdout.write(line + '\n')
}

const url = process.env.VIGIL_URL
const selfId = process.env.VIGIL_SELF_ID
if (!url || !selfId) {
  process.stderr.write('koishi_bot.js: VIGIL_URL and VIGIL_SELF_ID must be set\n')
  process.exit(2)
}
const token = process.env.VIGIL_TOKEN || undefined
const prefix = path.resolve(
  process.env.VIGIL_NPM_PREFIX || path.join(__dirname, '..', '..', 'target', 'onebot-clients', 'npm'),
)
const workdir = process.env.VIGIL_WORKDIR || fs.mkdtempSync(path.join(os.tmpdir(), 'vigil-koishi-'))
fs.mkdirSync(workdir, { recursive: true })
process.chdir(workdir)

// Resolve packages from <prefix>/node_modules, as if required from <prefix>.
const load = createRequire(path.join(prefix, 'package.json'))
const { Context, HTTP, Logger, Universal } = load('koishi')
const onebot = load('koishi-plugin-adapter-onebot')

// Koishi's logger prints to stdout by default, and cordis falls back to
// console.info when no logger service is listening; stdout is reserved for
// VIGIL lines, so send both to stderr.
globalThis.console = new console.Console({ stdout: process.stderr, stderr: process.stderr })
Logger.targets.splice(0, Logger.targets.length, {
  colors: 0,
  showTime: 'yyyy-MM-dd hh:mm:ss',
  print: (text) => process.stderr.write(text + '\n'),
})
Logger.levels.base = Number(process.env.VIGIL_LOG_LEVEL ?? 2)

// The adapter exposes no hook for meta events (adaptSession() drops them, so no
// session is dispatched). Tap the socket instead: WsClient.accept(socket) runs
// once per opened socket, before the adapter's own listeners are attached.
const prepare = onebot.WsClient.prototype.prepare
onebot.WsClient.prototype.prepare = function () {
  const socket = prepare.call(this)
  // e.g. "Unexpected server response: 401" when the upgrade is refused.
  socket.addEventListener('error', (event) => {
    say(`VIGIL socket-error ${String(event.message || event.error || 'error').replace(/\s+/g, ' ')}`)
  })
  return socket
}
const accept = onebot.WsClient.prototype.accept
onebot.WsClient.prototype.accept = function (socket) {
  socket.addEventListener('message', (event) => {
    let parsed
    try {
      parsed = JSON.parse(event.data.toString())
    } catch {
      return
    }
    if (parsed && parsed.post_type === 'meta_event' && parsed.meta_event_type === 'heartbeat') {
      const good = parsed.status && parsed.status.good
      say(`VIGIL heartbeat good=${good === true}`)
    }
  })
  socket.addEventListener('close', (event) => {
    say(`VIGIL socket-closed code=${event.code}`)
  })
  return accept.call(this, socket)
}

const app = new Context()
app.plugin(HTTP)

app.on('message', (session) => {
  const text = String(session.content || '').trim()
  say(`VIGIL message ${text}`)
  if (text !== 'vigil-ping') return
  session.send('vigil-pong').then(
    () => say('VIGIL replied'),
    (error) => say(`VIGIL reply-failed ${String(error && error.message || error).replace(/\s+/g, ' ')}`),
  )
})

let lastStatus
app.on('bot-status-updated', (bot) => {
  if (bot.platform !== 'onebot' || bot.status === lastStatus) return
  lastStatus = bot.status
  if (bot.status === Universal.Status.ONLINE) {
    say('VIGIL online')
  } else if (bot.status === Universal.Status.RECONNECT) {
    say('VIGIL reconnecting')
  } else if (bot.status === Universal.Status.OFFLINE) {
    say(`VIGIL offline ${bot.error ? String(bot.error.message || bot.error).replace(/\s+/g, ' ') : '-'}`)
  }
})

app.plugin(onebot.OneBotBot, {
  protocol: 'ws',
  endpoint: url,
  token,
  selfId,
  // How long each action waits for its response (adapter default: 60 s).
  responseTimeout: Number(process.env.VIGIL_RESPONSE_TIMEOUT_MS || 60000),
  // Vigil runs on loopback; retry the first connection quickly, a few times.
  retryTimes: 6,
  retryInterval: 1000,
  retryLazy: 1000,
})

// Stop the bot (Koishi sends an empty Close frame, seen by the server as 1005,
// and does not reconnect), wait for the close handshake, exit. app.stop() is
// avoided: disposing the whole app makes @satorijs/core's Bot.dispose() throw
// once the satori service is gone.
let stopping = false
async function shutdown() {
  if (stopping) process.exit(1)
  stopping = true
  setTimeout(() => process.exit(0), 3000).unref()
  const bots = app.bots.filter((bot) => bot.platform === 'onebot')
  const closed = bots
    .map((bot) => bot.adapter && bot.adapter.socket)
    .filter((socket) => socket && socket.readyState !== 3)
    .map((socket) => new Promise((resolve) => socket.addEventListener('close', resolve)))
  for (const bot of bots) {
    await bot.stop().catch(() => {})
  }
  await Promise.race([Promise.all(closed), new Promise((resolve) => setTimeout(resolve, 2000))])
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)

app.start().catch((error) => {
  process.stderr.write(`koishi_bot.js: start failed: ${error && error.stack || error}\n`)
  process.exit(1)
})

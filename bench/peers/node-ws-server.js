'use strict';
// Peer server for the session-host benchmarks: Node.js with the npm `ws`
// package, liveness done exactly as the ws README's "How to detect and close
// broken connections?" heartbeat. Same interface as every peer:
//
//   PORT              WebSocket (ws://127.0.0.1:PORT/ws, any path) + HTTP
//   CONTROL_PORT      control HTTP; may equal PORT (then one http.Server)
//   PING_INTERVAL_MS  P: the heartbeat interval
//   PONG_TIMEOUT_MS   T: accepted, unused. The README pattern has no separate
//                     pong deadline: a client is terminated at the first tick
//                     on which its previous ping went unanswered, so a dead
//                     peer is detected within up to 2P (between P and 2P).
//   PEERS_NPM_PREFIX  npm prefix that holds ws (bench/peers/setup.sh)
//
// Control API: GET /sessions[?limit=0], POST /publish (raw text body,
// broadcast as one text message); anything else 404. Prints `listening` once
// both ports accept connections. No per-message logging.

const http = require('node:http');
const path = require('node:path');
const { createRequire } = require('node:module');

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    if (fallback === undefined) {
      console.error(`node-ws-server: ${name} is required`);
      process.exit(2);
    }
    return fallback;
  }
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`node-ws-server: ${name} must be a non-negative integer, got ${raw}`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT');
const CONTROL_PORT = intEnv('CONTROL_PORT', PORT);
const PING_INTERVAL_MS = intEnv('PING_INTERVAL_MS');
// eslint-disable-next-line no-unused-vars
const PONG_TIMEOUT_MS = intEnv('PONG_TIMEOUT_MS'); // unused, see above
const HOST = '127.0.0.1';

const prefix = process.env.PEERS_NPM_PREFIX;
if (!prefix) {
  console.error('node-ws-server: PEERS_NPM_PREFIX is required (the npm prefix from bench/peers/setup.sh)');
  process.exit(2);
}
const { WebSocketServer, WebSocket } = createRequire(path.join(prefix, 'package.json'))('ws');

// --- WebSocket ---------------------------------------------------------------

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: true });

function heartbeat() {
  this.isAlive = true;
}

wss.on('connection', (ws, req) => {
  ws.isAlive = true;
  ws.on('pong', heartbeat);
  ws.on('error', () => {}); // no logging; 'close' follows
  ws.on('message', () => {}); // client messages are read and dropped
  // The peer as this server sees it, kept while the socket is still open.
  ws.peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
});

const interval = setInterval(function ping() {
  wss.clients.forEach(function each(ws) {
    if (ws.isAlive === false) return ws.terminate();

    ws.isAlive = false;
    ws.ping();
  });
}, PING_INTERVAL_MS);

wss.on('close', function close() {
  clearInterval(interval);
});

// --- Control HTTP --------------------------------------------------------------

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function control(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/sessions') {
    const count = wss.clients.size;
    const sessions = [];
    if (url.searchParams.get('limit') !== '0') {
      const limitRaw = url.searchParams.get('limit');
      const limit = limitRaw === null ? Infinity : Number(limitRaw);
      for (const ws of wss.clients) {
        if (sessions.length >= limit) break;
        sessions.push({ peer: ws.peer });
      }
    }
    return send(res, 200, { count, sessions });
  }
  if (req.method === 'POST' && url.pathname === '/publish') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let delivered = 0;
      // As the ws README's broadcast: every open client, sent as text; send()
      // queues and returns without waiting for the flush.
      wss.clients.forEach((ws) => {
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(text, { binary: false });
          delivered += 1;
        }
      });
      send(res, 200, { delivered });
    });
    return undefined;
  }
  res.writeHead(404, { 'content-length': 0 });
  return res.end();
}

function upgrade(req, socket, head) {
  socket.on('error', () => {});
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
}

const servers = [];
const wsServer = http.createServer(CONTROL_PORT === PORT ? control : (req, res) => {
  res.writeHead(404, { 'content-length': 0 });
  res.end();
});
wsServer.on('upgrade', upgrade);
wsServer.on('clientError', (err, socket) => socket.destroy());
servers.push([wsServer, PORT]);
if (CONTROL_PORT !== PORT) {
  const controlServer = http.createServer(control);
  controlServer.on('clientError', (err, socket) => socket.destroy());
  servers.push([controlServer, CONTROL_PORT]);
}

Promise.all(
  servers.map(
    ([server, port]) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: HOST, port, backlog: 4096 }, resolve);
      }),
  ),
).then(
  () => process.stdout.write('listening\n'),
  (err) => {
    console.error(`node-ws-server: cannot listen: ${err.message}`);
    process.exit(1);
  },
);

function shutdown() {
  clearInterval(interval);
  for (const ws of wss.clients) ws.terminate();
  for (const [server] of servers) server.close();
  // Some sockets (HTTP keep-alive) may keep the loop alive; do not wait.
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

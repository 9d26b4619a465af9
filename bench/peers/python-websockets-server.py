"""Peer server for the session-host benchmarks: Python `websockets` 15 on its
asyncio API, with the library's own keepalive (ping_interval / ping_timeout).
Same interface as every peer:

  PORT              WebSocket (ws://127.0.0.1:PORT/ws, any path)
  CONTROL_PORT      control HTTP; must differ from PORT here, because the
                    websockets HTTP parser handles only GET upgrades
  PING_INTERVAL_MS  P: ping_interval = P / 1000
  PONG_TIMEOUT_MS   T: ping_timeout = T / 1000; a peer that stops answering
                    is failed within up to P + T (its socket lingers up to
                    close_timeout, 10 s, longer; see /sessions below)

Control API (a minimal HTTP/1.1 server on asyncio.start_server, one request
per connection, Connection: close): GET /sessions[?limit=0], POST /publish
(raw text body, broadcast as one text message with websockets' broadcast());
anything else 404. Prints `listening` once both ports accept connections.
Default asyncio event loop; no per-message logging.
"""

import asyncio
import json
import os
import signal
import sys
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import broadcast, serve
from websockets.protocol import State

HOST = "127.0.0.1"


def int_env(name, default=None):
    raw = os.environ.get(name, "")
    if raw == "":
        if default is None:
            sys.exit(f"python-websockets-server: {name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        sys.exit(f"python-websockets-server: {name} must be a non-negative integer, got {raw}")
    return value


PORT = int_env("PORT")
CONTROL_PORT = int_env("CONTROL_PORT")
PING_INTERVAL_MS = int_env("PING_INTERVAL_MS")
PONG_TIMEOUT_MS = int_env("PONG_TIMEOUT_MS")
if CONTROL_PORT == PORT:
    sys.exit("python-websockets-server: CONTROL_PORT must differ from PORT")

# Open connections, as the websockets docs keep them for broadcast().
CONNECTIONS = set()


async def handler(websocket):
    CONNECTIONS.add(websocket)
    try:
        async for _ in websocket:
            pass
    except Exception:  # noqa: BLE001 - a broken connection just ends
        pass
    finally:
        CONNECTIONS.discard(websocket)


def peer_of(websocket):
    addr = websocket.remote_address
    return f"{addr[0]}:{addr[1]}"


# --- Control HTTP ------------------------------------------------------------

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}
MAX_BODY = 64 * 1024 * 1024


def response(status, body=None):
    payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = f"HTTP/1.1 {status} {REASONS[status]}\r\nConnection: close\r\nContent-Length: {len(payload)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return head.encode("latin-1") + b"\r\n" + payload


def route(method, target, body):
    url = urlsplit(target)
    if method == "GET" and url.path == "/sessions":
        # Only OPEN connections count as sessions. When a keepalive ping goes
        # unanswered for ping_timeout, websockets fails the connection (state
        # CLOSING) at once, but the handler and the TCP connection only end
        # after close_timeout (10 s by default) more if the peer never answers
        # the close; the library has given up on it by then, and broadcast()
        # skips it, so it is not listed.
        limit = parse_qs(url.query).get("limit", [None])[0]
        limit = None if limit is None or not limit.isdigit() else int(limit)
        if limit == 0:
            count = sum(1 for ws in CONNECTIONS if ws.protocol.state is State.OPEN)
            return response(200, {"count": count, "sessions": []})
        count = 0
        sessions = []
        for ws in CONNECTIONS:
            if ws.protocol.state is State.OPEN:
                count += 1
                if limit is None or len(sessions) < limit:
                    sessions.append({"peer": peer_of(ws)})
        return response(200, {"count": count, "sessions": sessions})
    if method == "POST" and url.path == "/publish":
        text = body.decode("utf-8", errors="replace")
        # broadcast() skips connections that are not open and does not wait
        # for the write; count the ones it hands the message to.
        delivered = sum(1 for ws in CONNECTIONS if ws.protocol.state is State.OPEN)
        broadcast(CONNECTIONS, text)
        return response(200, {"delivered": delivered})
    return response(404)


async def control(reader, writer):
    try:
        request_line = await reader.readline()
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            writer.write(response(400))
            return
        method, target, _version = parts
        length = 0
        expect_continue = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "expect" and value.strip().lower() == "100-continue":
                expect_continue = True
        if length < 0 or length > MAX_BODY:
            writer.write(response(400))
            return
        if expect_continue and length:
            # curl asks before sending a large body; answer as Node's http does.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length) if length else b""
        writer.write(route(method, target, body))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_signal():
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    async with serve(
        handler,
        HOST,
        PORT,
        ping_interval=PING_INTERVAL_MS / 1000,
        ping_timeout=PONG_TIMEOUT_MS / 1000,
        compression=None,
        backlog=4096,
    ):
        control_server = await asyncio.start_server(control, HOST, CONTROL_PORT, backlog=4096)
        print("listening", flush=True)
        await stop
        control_server.close()
        # Drop every session at once rather than a closing handshake each;
        # leaving the `async with` then closes the listener and waits for
        # the handlers, which end as their transports go.
        for ws in list(CONNECTIONS):
            ws.transport.abort()


if __name__ == "__main__":
    asyncio.run(main())

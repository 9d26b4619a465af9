#!/usr/bin/env python3
"""NoneBot2 OneBot v11 bot in forward-WebSocket mode, used by Vigil's OneBot tests.

Run with the venv made by setup.sh:
    VIGIL_URL=ws://127.0.0.1:PORT/ VIGIL_TOKEN=secret \
        target/onebot-clients/venv/bin/python tests/onebot-clients/nonebot_bot.py

Environment:
    VIGIL_URL        forward WebSocket URL (required), e.g. ws://127.0.0.1:PORT/
    VIGIL_TOKEN      access token, sent as `Authorization: Bearer <token>` (optional)
    VIGIL_WORKDIR    directory to chdir into before NoneBot reads config (created if
                     missing; a fresh temp dir otherwise), so no stray .env is read
    VIGIL_LOG_LEVEL  NoneBot log level (default INFO); logs go to stderr

Protocol lines on stdout (one per event, flushed):
    VIGIL connected self_id=<id> login=<json>
    VIGIL heartbeat interval=<ms> good=<bool>
    VIGIL login-failed self_id=<id> <error>
    VIGIL replied
    VIGIL reply-failed <error>
    VIGIL disconnected self_id=<id>
"""

import json
import os
import sys
import tempfile


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


url = os.environ.get("VIGIL_URL")
if not url:
    sys.stderr.write("nonebot_bot.py: VIGIL_URL is not set\n")
    sys.exit(2)
token = os.environ.get("VIGIL_TOKEN") or None
log_level = os.environ.get("VIGIL_LOG_LEVEL", "INFO")

# NoneBot's Env() reads ./.env (for ENVIRONMENT) no matter what is passed to
# init(), so run from a directory we control. Config files are disabled below.
workdir = os.environ.get("VIGIL_WORKDIR") or tempfile.mkdtemp(prefix="vigil-nonebot-")
os.makedirs(workdir, exist_ok=True)
os.chdir(workdir)

# The websockets driver connects with proxy=True (system proxy from the
# environment). The only peer is Vigil on loopback: never use a proxy.
for var in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy"):
    os.environ.pop(var, None)
    os.environ.pop(var.upper(), None)
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"

# NoneBot folds every environment variable that matches a config key into its
# config, and the adapter prefers the ONEBOT_V11_* aliases over init() kwargs.
for var in list(os.environ):
    if var.upper().startswith("ONEBOT_") or var.upper() in ("DRIVER", "ENVIRONMENT"):
        del os.environ[var]

import nonebot  # noqa: E402
from nonebot.log import default_filter, default_format, logger, logger_id  # noqa: E402

# NoneBot logs to stdout by default; stdout is reserved for the VIGIL lines.
logger.remove(logger_id)
logger.add(sys.stderr, level=0, diagnose=False, colorize=False,
           filter=default_filter, format=default_format)

nonebot.init(
    _env_file=(),  # no .env / .env.prod
    driver="~websockets",
    log_level=log_level,
    onebot_ws_urls=[url],
    onebot_access_token=token,
    # Environment variables could otherwise leak in (NoneBot reads any
    # matching env var); pin what matters.
    onebot_api_roots={},
    onebot_secret=None,
    command_start={"/"},
    api_timeout=30.0,
)

from nonebot import on_message, on_metaevent  # noqa: E402
from nonebot.adapters.onebot.v11 import (  # noqa: E402
    Adapter,
    Bot,
    HeartbeatMetaEvent,
    MessageEvent,
)
from nonebot.matcher import Matcher  # noqa: E402

driver = nonebot.get_driver()
driver.register_adapter(Adapter)


@driver.on_bot_connect
async def _on_connect(bot: Bot) -> None:
    try:
        login = await bot.get_login_info()
    except Exception as e:  # noqa: BLE001
        say(f"VIGIL login-failed self_id={bot.self_id} {e!r}")
        return
    say(f"VIGIL connected self_id={bot.self_id} login={json.dumps(login, sort_keys=True)}")


@driver.on_bot_disconnect
async def _on_disconnect(bot: Bot) -> None:
    say(f"VIGIL disconnected self_id={bot.self_id}")


async def _is_heartbeat(event: HeartbeatMetaEvent) -> bool:
    return True


heartbeat = on_metaevent(rule=_is_heartbeat, priority=1, block=True)


@heartbeat.handle()
async def _on_heartbeat(event: HeartbeatMetaEvent) -> None:
    say(f"VIGIL heartbeat interval={event.interval} good={event.status.good}")


async def _is_vigil_ping(event: MessageEvent) -> bool:
    return event.get_plaintext().strip() == "vigil-ping"


ping = on_message(rule=_is_vigil_ping, priority=1, block=True)


@ping.handle()
async def _on_ping(matcher: Matcher) -> None:
    try:
        await matcher.send("vigil-pong")
    except Exception as e:  # noqa: BLE001
        say(f"VIGIL reply-failed {e!r}")
        return
    say("VIGIL replied")


if __name__ == "__main__":
    nonebot.run()

"""Serving the gallery with uvicorn: inside another asyncio program (the bot) or on its own.

`start_web_server` binds the port itself first, so a port in use is an `OSError` the caller can put in
words, not uvicorn's `sys.exit`; the server then runs as a task on the caller's event loop and leaves
signal handling to the host program.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass

import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .app import create_app
from .config import DEFAULT_RATE_LIMIT

log = logging.getLogger("web")


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the host program owns SIGINT/SIGTERM
        yield


@dataclass
class WebServer:
    server: uvicorn.Server
    task: asyncio.Task
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); OSError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # without it a keep-alive response written in two parts waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def start_web_server(
    sessions: async_sessionmaker[AsyncSession],
    *,
    host: str,
    port: int,
    base_url: str | None = None,
    rate_limit: str = DEFAULT_RATE_LIMIT,
) -> WebServer:
    """Serve the gallery on host:port from this event loop; returns once it accepts connections."""
    sock = bind(host, port)
    app = create_app(sessions, base_url=base_url, rate_limit=rate_limit)
    # A bounded graceful shutdown: open keep-alive connections or a slow client never hold up the host's exit.
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, server_header=False, timeout_graceful_shutdown=5
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="web-gallery")
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise OSError(f"the gallery could not start on {host}:{port}")
        await asyncio.sleep(0.01)
    bound_port = sock.getsockname()[1]
    log.info("event=web_ready address=http://%s:%d", host, bound_port)
    return WebServer(server, task, bound_port)

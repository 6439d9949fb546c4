"""The HTTP side of `serve --listen`: `/metrics`, `/healthz` and `/api/status`, an ASGI app
(Starlette) served by uvicorn on serve's own event loop — the Python ecosystem's convention,
and the stack the web UI builds on. Imported only with `--listen`, so `backup` and the other
one-shot commands never load it.

What the endpoints say comes from a `Status` (cli/serving.py's Service); nothing here
touches disk or the network: every answer is built from what the service already holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

# Prometheus' text format, version 0.0.4.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Status(Protocol):
    """What the endpoints report."""

    def metrics_text(self) -> str:
        """Every metric, in Prometheus' text format."""
        ...

    def healthy(self) -> bool:
        """Is the scheduler loop alive (it beats every few seconds)?"""
        ...

    def status(self) -> dict[str, Any]:
        """The scheduled tasks, their last results, next runs, and the jobs running now."""
        ...


def make_app(source: Status, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """The ASGI app answering from `source`; `extra`: the web UI's routes, with --web."""

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(source.metrics_text(), media_type=METRICS_TYPE)

    async def healthz(_: Request) -> Response:
        if source.healthy():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("the scheduler loop is not running\n", status_code=503)

    async def status(_: Request) -> Response:
        return JSONResponse(source.status())

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/api/status", status),
            *extra,
        ]
    )


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for loopback); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, like 127.0.0.1:9187; got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class Listener:
    """uvicorn on the running event loop, without uvicorn's own signal handling (serve's
    handlers stop everything); `start()`, then `stop()`."""

    def __init__(self, source: Status, host: str, port: int, app: Any = None) -> None:
        """`app`: what to serve instead of make_app(source) (the web UI wraps it)."""
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app if app is not None else make_app(source),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
        )
        self._server = Quiet(config)
        self._task: Any = None

    async def start(self) -> None:
        """Listen (the socket is ours: a bind error is an OSError here, not uvicorn's exit);
        connections wait in its backlog until uvicorn takes them."""
        import asyncio
        import socket

        config = self._server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind((config.host, config.port))
            listening.listen(64)
        except OSError:
            listening.close()
            raise
        listening.setblocking(False)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[listening]))

    @property
    def address(self) -> str:
        config = self._server.config
        return f"{config.host}:{config.port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task

"""The web UI of `serve --web`: the dashboard, a page per job, the live runs and the "run
now" action, on the same listener as /metrics. Server-rendered (Jinja2 templates) so every
page reads without JavaScript; htmx (vendored from the npm package htmx.org 2.0.11, its
licence beside it in static/) only refreshes the live runs. Needs the `web` extra (Jinja2):
`pip install 'db-backup[web]'`.

It only shows what serve already knows (views.py turns it into rows) and acts through the
service, so "run now" goes through the same scheduler and limits as a scheduled run.
Security (logins, CSRF, headers): security.py. No secret is ever rendered: the pages show
job names, servers, databases, sizes, times, checks and error texts, which are redacted
where they are made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from importlib.resources import files
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from db_backup.catalog import Archive
from db_backup.config.schema import Config
from db_backup.schedule import Schedule
from db_backup.units import format_bytes, format_duration, format_rate
from db_backup.web.security import SECURITY_HEADERS, Guard
from db_backup.web.views import (
    NOTHING,
    SORTS,
    Attempted,
    filtered,
    job_page,
    job_rows,
    sorted_by,
    totals,
)

MISSING_EXTRA = "the web UI needs Jinja2: pip install 'db-backup[web]'"
MAX_FORM_BYTES = 4096  # the one form holds a CSRF token
# Without a login the UI answers only to these names (with any port): a page of another site
# whose name was made to resolve to 127.0.0.1 (DNS rebinding) names its own host.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass
class WebState:
    """A snapshot of what serve knows, for one page."""

    config: Config
    archives: Sequence[Archive]
    schedules: Mapping[str, tuple[Schedule, datetime]]  # backup → (schedule, next start)
    running: Mapping[str, Mapping[str, Any]]  # job → its progress (see Service.track)
    attempts: Mapping[str, Attempted]
    failures: Mapping[str, Sequence[tuple[datetime, str]]]  # job → its last failures
    tasks: Sequence[Mapping[str, Any]]  # the scheduled tasks, as /api/status lists them
    zone: tzinfo
    now: datetime
    queued: Sequence[str] = ()  # jobs of runs in progress, waiting for a slot
    finished: Sequence[Mapping[str, Any]] = ()  # the last jobs to finish, newest first
    notes: list[str] = field(default_factory=list)


class WebSource(Protocol):
    def web_state(self) -> WebState: ...

    def run_now(self, job: str) -> str:
        """Start a backup of `job` now (as its schedule would); what happened, in words."""
        ...

    def verify_now(self, job: str) -> str:
        """Start a restore test of `job`'s newest backup now; what happened, in words."""
        ...

    async def prune_preview(self) -> Sequence[Any]:
        """What `prune --dry-run` would keep and delete (prune.PruneVerdict each)."""
        ...


def web_available() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


def web_routes(source: WebSource, guard: Guard) -> list[BaseRoute]:
    """The UI's routes (mounted beside /metrics, /healthz and /api/status)."""
    import jinja2

    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("db_backup.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )

    def render(name: str, state: WebState, note: str | None, **values: Any) -> HTMLResponse:
        page = templates.get_template(name).render(
            zone=str(state.zone), csrf=guard.csrf, read_only=guard.read_only, note=note, **values
        )
        return HTMLResponse(page)

    def rows_of(state: WebState) -> list[Any]:
        return job_rows(
            state.config,
            state.archives,
            state.schedules,
            set(state.running),
            state.attempts,
            state.zone,
            state.now,
        )

    async def dashboard(request: Request) -> Response:
        state = source.web_state()
        rows = rows_of(state)
        query = request.query_params.get("q", "")
        sort = request.query_params.get("sort", "status")
        return render(
            "dashboard.html",
            state,
            request.query_params.get("note"),
            rows=sorted_by(filtered(rows, query), sort),
            totals=totals(rows, state.archives),
            query=query,
            sort=sort if sort in SORTS else "status",
        )

    async def job(request: Request) -> Response:
        state = source.web_state()
        name = request.path_params["job"]
        row = next((r for r in rows_of(state) if r.job == name), None)
        if row is None:
            return HTMLResponse("no such job", status_code=404)
        page = job_page(row, state.archives, state.failures.get(name, ()), state.zone, state.now)
        return render("job.html", state, request.query_params.get("note"), page=page)

    def live_values(state: WebState) -> dict[str, Any]:
        running = []
        for progress in state.running.values():
            started = datetime.fromisoformat(progress["started_at"])
            seconds = max(0.001, (state.now - started).total_seconds())
            raw, expected = progress["raw_bytes"], progress.get("estimated_bytes")
            eta = NOTHING
            if expected and raw and expected > raw:
                eta = format_duration((expected - raw) * seconds / raw)
            running.append(
                {
                    "job": progress["job"],
                    "started": started.astimezone(state.zone).strftime("%H:%M:%S"),
                    "raw": format_bytes(raw),
                    "stored": format_bytes(progress["stored_bytes"]),
                    "rate": format_rate(raw, seconds),
                    "eta": eta,
                }
            )
        tasks = [
            {
                "name": f"{t['kind']} {t['task']}",
                "schedule": t["schedule"],
                "next_run": t["next_run"] or NOTHING,
                "finished": t["last_finished_at"] or NOTHING,
                "result": "running"
                if t["running"]
                else (t["last_error"] or ("OK" if t["last_finished_at"] else NOTHING)),
            }
            for t in state.tasks
        ]
        return {"running": running, "tasks": tasks, "queued": state.queued,
                "finished": state.finished}  # fmt: skip

    async def runs(request: Request) -> Response:
        state = source.web_state()
        return render("runs.html", state, request.query_params.get("note"), **live_values(state))

    async def runs_live(_: Request) -> Response:
        state = source.web_state()
        return render("runs_live.html", state, None, **live_values(state))

    async def act(request: Request, action: Callable[[str], str]) -> Response:
        """A POST action on a job: read-only and CSRF checked first."""
        if guard.read_only:
            return HTMLResponse("read-only: no actions", status_code=403)
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return HTMLResponse("form too large", status_code=413)
        # A urlencoded form holds one field; parsed here rather than by python-multipart.
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return HTMLResponse("form too large", status_code=413)
        fields = parse_qs(body.decode("utf-8", "replace"))
        sent = fields.get("csrf", [None])[0]
        if not guard.csrf_ok(sent):
            return HTMLResponse("missing or wrong CSRF token", status_code=403)
        said = action(request.path_params["job"])
        return RedirectResponse(f"/runs?{urlencode({'note': said})}", status_code=303)

    async def run_now(request: Request) -> Response:
        return await act(request, source.run_now)

    async def verify_now(request: Request) -> Response:
        return await act(request, source.verify_now)

    async def prune_preview(request: Request) -> Response:
        state = source.web_state()
        verdicts = await source.prune_preview()
        lines = [
            {
                "job": v.archive.job,
                "taken": v.archive.taken_at.astimezone(state.zone).strftime("%Y-%m-%d %H:%M %Z"),
                "target": v.archive.target,
                "file": v.archive.name,
                "keep": v.decision.keep,
                "why": ", ".join(v.decision.reasons),
            }
            for v in verdicts
        ]
        return render("prune.html", state, None, lines=lines)

    static = StaticFiles(directory=str(files("db_backup.web") / "static"))
    return [
        Route("/", dashboard),
        Route("/jobs/{job:path}/run", run_now, methods=["POST"]),
        Route("/jobs/{job:path}/verify", verify_now, methods=["POST"]),
        Route("/prune", prune_preview),
        Route("/jobs/{job:path}", job),
        Route("/runs", runs),
        Route("/runs/live", runs_live),
        Mount("/static", static, name="static"),
    ]


Asgi = Callable[[Any, Any, Any], Awaitable[None]]


def guarded(app: Asgi, guard: Guard, open_paths: Sequence[str] = ("/healthz",)) -> Asgi:
    """`app` behind the guard: a login where one is configured (401 asking for it), a POST
    from another origin refused, and the security headers on every answer."""

    checker = LoginCheck(guard)

    async def guarded_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = None
        if not guard.needs_login and not _local_host(headers.get("host")):
            refusal = Response("unknown host\n", status_code=403)
        elif scope["path"] not in open_paths and not await checker.allows(
            headers.get("authorization")
        ):
            refusal = Response(
                "login required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="db-backup", charset="UTF-8"'},
            )
        elif scope["method"] == "POST" and not _same_origin(headers):
            refusal = Response("cross-site request refused\n", status_code=403)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, with_headers)
        else:
            await app(scope, receive, with_headers)

    return guarded_app


class LoginCheck:
    """`Guard.allows`, off the event loop: a password check is scrypt (~0.1 s), so it runs on
    a worker thread, one at a time, and a header that passed is remembered for a while (a
    page, its assets and the live view's polling would each pay it otherwise)."""

    REMEMBER_SECONDS = 600.0
    REMEMBERED = 64

    def __init__(self, guard: Guard) -> None:
        import anyio

        self._guard = guard
        self._passed: dict[bytes, float] = {}
        self._one_at_a_time = anyio.Semaphore(1)

    async def allows(self, authorization: str | None) -> bool:
        import time

        import anyio.to_thread

        if not self._guard.needs_login:
            return True
        if authorization is None or not authorization.lower().startswith("basic "):
            return self._guard.allows(authorization)  # a bearer token: a cheap comparison
        key = hashlib.sha256(authorization.encode()).digest()
        now = time.monotonic()
        if self._passed.get(key, 0.0) > now:
            return True
        async with self._one_at_a_time:
            ok = await anyio.to_thread.run_sync(self._guard.allows, authorization)
        if ok:
            if len(self._passed) >= self.REMEMBERED:
                self._passed = {k: t for k, t in self._passed.items() if t > now}
            self._passed[key] = now + self.REMEMBER_SECONDS
        return ok


def _local_host(host: str | None) -> bool:
    """Is the Host header one of this machine's own names (any port)?"""
    if host is None:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOCAL_HOSTS


def _same_origin(headers: Mapping[str, str]) -> bool:
    """No Origin (a form from a non-browser client), or one naming this very host."""
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == headers.get("host")

"""Sending notices (notification.py) to the config's notifiers: Slack, email, webhooks,
healthchecks pings and Apprise URLs.

Notifying never breaks a run: every attempt is bounded by the notifier's `timeout` (connecting
included), a failure that may pass (no answer, a refused connection, HTTP 5xx or 429, an SMTP
4xx) is tried again `retries` times after 1 s, 2 s, ..., one that will not (HTTP 4xx, a refused
login or recipient, an untrusted certificate, an unknown URL) is not, notifiers are sent to at
once, and every outcome — whatever went wrong, a library's surprise included — is a `Delivery`
value: the caller prints a failed one as a warning, the exit code stays the run's. Errors are
worded here, once, without the URL (it holds the token) or any known secret.

Imported only when a config has notifiers: httpx and aiosmtplib cost ~0.3 s to import.
HTTP requests honour HTTP(S)_PROXY and NO_PROXY, as curl does (hosts that reach the world
only through a proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.utils
import importlib.util
import json as json_module
import logging
import os
import ssl
import sys
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial

import aiosmtplib
import httpx

from db_backup import __version__
from db_backup.config.schema import (
    AppriseNotifier,
    EmailNotifier,
    HealthchecksNotifier,
    NotifierConfig,
    SlackNotifier,
    WebhookNotifier,
)
from db_backup.credentials import password_of
from db_backup.errors import CredentialsError, NotifyError
from db_backup.notification import Delivery, Notice, wants
from db_backup.process import spawn
from db_backup.redact import MIN_SECRET_PART, mask_scheme, mask_url_path, redact_known, remember
from db_backup.report import problems_report
from db_backup.threads import in_thread

FIRST_RETRY_PAUSE = 1.0  # seconds; doubles with each further attempt
# A run stopped by a signal exits within interrupts.FORCED_EXIT_SECONDS: its notice gets one
# short attempt per notifier.
HURRIED_TIMEOUT = 2.0
USER_AGENT = f"db-backup/{__version__}"
ERROR_BODY_BYTES = 200  # of a refusal's body: Slack says why there ("invalid_token")

log = logging.getLogger(__name__)

# One attempt at sending to one notifier, given the seconds it may take.
Attempt = Callable[[float], Awaitable[None]]


class Notifications:
    """The notifications of one run. For a backup run, `start()` pings healthchecks checks at
    once, in the background (a slow service does not delay the dumps), and `finish()` sends
    the notice at the end; a check's end ping goes after its own start ping, so the service
    sees them in order, and nothing else waits for it."""

    def __init__(self, notifiers: Sequence[NotifierConfig]) -> None:
        self._notifiers = tuple(notifiers)
        self._run_id = str(uuid.uuid4())  # pairs a start ping with its end (healthchecks' rid)
        self._client: httpx.AsyncClient | None = None
        self._starts: dict[int, asyncio.Task[Delivery]] = {}
        self._apprise_delivered: set[str] = set()  # Apprise URLs told: a retry skips them
        # A signal stops the run: no more retries, and what runs gets HURRIED_TIMEOUT more.
        self._hurried = False
        self._hurry = asyncio.Event()
        self._deadlines: set[asyncio.Timeout] = set()
        for notifier in self._notifiers:
            for secret in notifier.secrets:  # httpx logs each request's URL at info
                remember(secret)

    def start(self) -> None:
        """Send `/start` to every healthchecks notifier, in the background."""
        for check in self._notifiers:
            if isinstance(check, HealthchecksNotifier):
                ping = partial(self._ping, check, "start", b"")
                self._starts[id(check)] = asyncio.create_task(self._deliver(check, ping))

    def hurry(self) -> None:
        """A signal stopped the run, which must exit within seconds: no more retries, start
        pings still on their way given up, and an attempt under way gets HURRIED_TIMEOUT
        more at most. (Call it from the event loop, as a signal handler runs.)"""
        self._hurried = True
        self._hurry.set()
        soon = asyncio.get_running_loop().time() + HURRIED_TIMEOUT
        for deadline in self._deadlines:
            when = deadline.when()
            if when is None or when > soon:
                deadline.reschedule(soon)

    async def finish(self, notice: Notice, *, hurry: bool = False) -> list[Delivery]:
        """Send `notice` to every notifier that wants it; returns every delivery, the start
        pings' failures included. `hurry`: see hurry()."""
        if hurry:
            self.hurry()
        try:
            outcomes = await asyncio.gather(
                *(self._end(notifier, notice) for notifier in self._notifiers)
            )
        finally:
            if self._client is not None:
                await self._client.aclose()
        return [delivery for found in outcomes for delivery in found]

    async def _end(self, notifier: NotifierConfig, notice: Notice) -> list[Delivery]:
        found = []
        start = self._starts.get(id(notifier))
        if start is not None:
            if self._hurried and not start.done():
                start.cancel()
            else:
                started = await start
                if not started.ok:
                    found.append(replace(started, notifier=f"{started.notifier} (/start)"))
        if wants(notifier, notice):
            found.append(await self._deliver(notifier, partial(self._send, notifier, notice)))
        return found

    async def _deliver(self, notifier: NotifierConfig, attempt: Attempt) -> Delivery:
        """Attempts bounded by the notifier's timeout, retried while the failure may pass."""
        attempts = 0
        while True:
            attempts += 1
            bound = min(notifier.timeout, HURRIED_TIMEOUT) if self._hurried else notifier.timeout
            try:
                async with asyncio.timeout(bound) as deadline:
                    self._deadlines.add(deadline)
                    try:
                        await attempt(bound)
                    finally:
                        self._deadlines.discard(deadline)
                return Delivery(notifier.label, ok=True, attempts=attempts)
            except TimeoutError:
                error, transient = f"no answer within {bound:g}s (timeout)", True
                if self._hurried and bound > HURRIED_TIMEOUT:
                    error = "given up: the run was stopped by a signal"
            except NotifyError as exc:
                error, transient = str(exc), exc.transient
            except Exception as exc:  # a library's surprise: a warning all the same, not a crash
                log.debug("sending to %s failed", notifier.label, exc_info=True)
                error, transient = f"{type(exc).__name__}: {exc}", False
            if transient and attempts <= notifier.retries and not self._hurried:
                pause = FIRST_RETRY_PAUSE * 2 ** (attempts - 1)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._hurry.wait()  # a signal ends the pause, and the retries
                if not self._hurried:
                    continue
            error = redact_known(error)
            return Delivery(notifier.label, ok=False, error=error, attempts=attempts)

    async def _send(self, notifier: NotifierConfig, notice: Notice, bound: float) -> None:
        if isinstance(notifier, HealthchecksNotifier):
            signal = "log" if notice.command == "notify-test" else "" if notice.ok else "fail"
            await self._ping(notifier, signal, notice.ping_body(), bound)
        elif isinstance(notifier, SlackNotifier):
            await self._post(notifier.webhook_url, bound, json=notice.slack())
        elif isinstance(notifier, WebhookNotifier):
            headers = httpx.Headers({"Content-Type": "application/json"})
            headers.update(notifier.headers)  # theirs win, whatever the case of the names
            document = notice.document or problems_report(notice)
            await self._post(notifier.url, bound, content=document, headers=headers)
        elif isinstance(notifier, AppriseNotifier):
            await self._send_apprise(notifier, notice)  # its child dies with the attempt
        else:
            await _send_mail(notifier, notice, bound)

    async def _ping(
        self, check: HealthchecksNotifier, signal: str, body: bytes, bound: float
    ) -> None:
        """POST to the check's URL, or its /start, /fail or /log, with this run's id."""
        parts = urllib.parse.urlsplit(check.url)
        path = f"{parts.path.rstrip('/')}/{signal}" if signal else parts.path
        query = f"{parts.query}&rid={self._run_id}" if parts.query else f"rid={self._run_id}"
        url = urllib.parse.urlunsplit(parts._replace(path=path, query=query))
        await self._post(url, bound, content=body)

    async def _post(
        self,
        url: str,
        bound: float,
        *,
        json: object = None,
        content: bytes | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        """POST and check the answer; every failure becomes a NotifyError without the URL.
        An error answer's body is read only in part and for a moment (a server that stalls
        there has said its status already), plain (Accept-Encoding: identity)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                limits=httpx.Limits(max_connections=None),  # every notifier at once
            )
        # httpx's own timeouts (per phase) a little beyond the attempt's `bound`, which is
        # the one to expire and say so
        request = self._client.build_request(
            "POST", url, json=json, content=content, headers=headers, timeout=bound + 1
        )
        for form in (str(request.url), request.url.raw_path.decode(errors="replace")):
            if len(form) >= MIN_SECRET_PART:
                remember(form)  # as httpx writes it in its log lines (re-encoded)
        try:
            answer = await self._client.send(request, stream=True)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise NotifyError("its URL is not a valid http(s) URL (is its ${VAR} set?)") from None
        except httpx.TimeoutException:
            raise NotifyError("timed out", transient=True) from None
        except httpx.LocalProtocolError:
            raise NotifyError("cannot send it: the request is invalid (its headers?)") from None
        except httpx.ProxyError as exc:  # the proxy (HTTPS_PROXY) refused: asking again won't do
            raise NotifyError(f"the proxy refused it: {exc}") from None
        except httpx.TransportError as exc:  # refused, reset, name not resolved, TLS
            why = f"cannot reach it: {exc or type(exc).__name__}"
            raise NotifyError(why, transient=not _caused_by_tls(exc)) from None
        try:
            said = b"" if answer.is_success else await _start_of(answer)
        finally:
            await answer.aclose()
        if answer.is_success:
            return
        text = "".join(c if c.isprintable() else " " for c in said.decode(errors="replace"))
        status = f"answered HTTP {answer.status_code} {answer.reason_phrase}"
        if answer.is_redirect:  # where to, without the token: the config wants that URL
            status += f" to {mask_url_path(answer.headers.get('Location', ''))}: use that URL"
        status += f": {' '.join(text.split())}" if text.strip() else ""
        raise NotifyError(status, transient=answer.status_code >= 500 or answer.status_code == 429)

    async def _send_apprise(self, notifier: AppriseNotifier, notice: Notice) -> None:
        """Every URL at once, each by a child process (Apprise blocks, and waits for its own
        threads at exit: a child can be killed when the attempt's time is up); a retry goes
        only to the URLs that failed."""
        if importlib.util.find_spec("apprise") is None:
            raise NotifyError("needs Apprise: pip install 'db-backup[apprise]'")
        order = {
            "title": notice.subject,
            "body": notice.text(),
            "kind": "success" if notice.ok else "failure",
        }
        pending = [url for url in notifier.urls if url not in self._apprise_delivered]
        codes = await asyncio.gather(*(_apprise_child({**order, "url": url}) for url in pending))
        problems, transient = [], False
        for url, code in zip(pending, codes, strict=True):
            if code == 0:
                self._apprise_delivered.add(url)
            elif code == APPRISE_UNKNOWN_URL:
                problems.append(f"Apprise does not know the URL {mask_scheme(url)}")
            else:
                problems.append(f"Apprise could not deliver to {mask_scheme(url)}")
                transient = True
        if problems:
            raise NotifyError("; ".join(problems), transient=transient)


# Run by `python -c` with the order (URL, title, body, kind) as JSON on stdin, never in argv.
APPRISE_UNKNOWN_URL = 3
_APPRISE_CHILD = f"""
import json, sys
import apprise
order = json.load(sys.stdin)
box = apprise.Apprise()
if not box.add(order["url"]):
    sys.exit({APPRISE_UNKNOWN_URL})
kind = apprise.NotifyType.SUCCESS if order["kind"] == "success" else apprise.NotifyType.FAILURE
sys.exit(0 if box.notify(body=order["body"], title=order["title"], notify_type=kind) else 1)
"""


async def _apprise_child(order: dict[str, str]) -> int:
    """Send one Apprise notification from a child; its exit code (0: delivered). Its
    stderr (Apprise's log, URLs in it) is kept from every output."""
    argv = [sys.executable, "-I", "-c", _APPRISE_CHILD]
    async with spawn(argv, os.environ, capture_stdout=False, feed_stdin=True) as child:
        await in_thread(child.write_stdin, json_module.dumps(order).encode())
        child.close_stdin()
        return await child.wait()


async def send_notice(notifiers: Sequence[NotifierConfig], notice: Notice) -> list[Delivery]:
    """Send the notice of a command that has no start (a failed `verify` or `prune`: to
    healthchecks, `/fail`; `notify-test`: `/log`, which changes no check's state)."""
    return await Notifications(notifiers).finish(notice)


async def _start_of(answer: httpx.Response) -> bytes:
    """The first ERROR_BODY_BYTES of an error answer, or what came within a second."""
    said = b""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(1.0):
            async for chunk in answer.aiter_raw():
                said += chunk
                if len(said) >= ERROR_BODY_BYTES:
                    break
    return said[:ERROR_BODY_BYTES]


def _caused_by_tls(error: BaseException) -> bool:
    """Did a TLS failure (an untrusted certificate, a server that speaks none) cause this?
    Trying again will not help."""
    seen: BaseException | None = error
    for _ in range(6):  # the library's wrappers: httpx → httpcore → ssl
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _send_mail(notifier: EmailNotifier, notice: Notice, bound: float) -> None:
    message = email.message.EmailMessage()
    message["From"] = notifier.sender
    message["To"] = ", ".join(notifier.to)
    message["Subject"] = notice.subject
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=notice.host or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(notice.text())
    try:
        context = ssl.create_default_context(cafile=notifier.ca_file)
    except OSError as exc:
        raise NotifyError(f"ca_file {notifier.ca_file}: {exc.strerror or exc}") from None
    try:
        await aiosmtplib.send(
            message,
            hostname=notifier.host,
            port=notifier.port,
            username=notifier.username or None,
            password=_password(notifier),
            use_tls=notifier.security == "tls",
            start_tls=notifier.security == "starttls",
            tls_context=None if notifier.security == "none" else context,
            timeout=bound + 1,  # the attempt's own bound expires first
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        said = "; ".join(
            f"{r.recipient}: {r.code} {' '.join(r.message.split())}" for r in exc.recipients
        )
        permanent = any(r.code >= 500 for r in exc.recipients)
        raise NotifyError(f"the server refused {said}", transient=not permanent) from None
    except aiosmtplib.SMTPResponseException as exc:  # the server said no: a 4xx may pass
        said = " ".join(exc.message.split())
        raise NotifyError(
            f"the server answered {exc.code}: {said}", transient=exc.code < 500
        ) from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        raise NotifyError(f"cannot send: {exc}", transient=not _caused_by_tls(exc)) from None
    except aiosmtplib.SMTPException as exc:  # no STARTTLS, no AUTH: asking again changes nothing
        raise NotifyError(f"cannot send: {exc}") from None


def _password(notifier: EmailNotifier) -> str | None:
    try:
        return password_of(notifier.password or None, notifier.password_file)
    except CredentialsError as exc:
        raise NotifyError(str(exc)) from None

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
"""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import logging
import ssl
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

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
from db_backup.errors import NotifyError
from db_backup.notification import Delivery, Notice, wants
from db_backup.redact import mask_scheme, redact_known, remember
from db_backup.report import problems_report
from db_backup.threads import start_in_thread

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
        # Apprise URLs: the calls still running (an attempt that timed out leaves its thread
        # going: the next attempt waits for it rather than send twice), those delivered.
        self._apprise_calls: dict[str, asyncio.Future[bool]] = {}
        self._apprise_delivered: set[str] = set()
        for notifier in self._notifiers:
            for secret in notifier.secrets:  # httpx logs each request's URL at info
                remember(secret)

    def start(self) -> None:
        """Send `/start` to every healthchecks notifier, in the background."""
        for check in self._notifiers:
            if isinstance(check, HealthchecksNotifier):
                ping = partial(self._ping, check, "start", b"")
                self._starts[id(check)] = asyncio.create_task(self._deliver(check, ping))

    async def finish(self, notice: Notice, *, hurry: bool = False) -> list[Delivery]:
        """Send `notice` to every notifier that wants it; returns every delivery, the start
        pings' failures included. `hurry`: a signal stopped the run, so one short attempt
        each (HURRIED_TIMEOUT), and start pings still on their way are given up."""
        try:
            outcomes = await asyncio.gather(
                *(self._end(notifier, notice, hurry) for notifier in self._notifiers)
            )
        finally:
            if self._client is not None:
                await self._client.aclose()
        return [delivery for found in outcomes for delivery in found]

    async def _end(self, notifier: NotifierConfig, notice: Notice, hurry: bool) -> list[Delivery]:
        found = []
        start = self._starts.get(id(notifier))
        if start is not None:
            if hurry and not start.done():
                start.cancel()
            else:
                started = await start
                if not started.ok:
                    found.append(replace(started, notifier=f"{started.notifier} (/start)"))
        if wants(notifier, notice):
            send = partial(self._send, notifier, notice)
            found.append(await self._deliver(notifier, send, hurry=hurry))
        return found

    async def _deliver(
        self, notifier: NotifierConfig, attempt: Attempt, *, hurry: bool = False
    ) -> Delivery:
        """Attempts bounded by the notifier's timeout, retried while the failure may pass."""
        timeout = min(notifier.timeout, HURRIED_TIMEOUT) if hurry else notifier.timeout
        retries = 0 if hurry else notifier.retries
        attempts = 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(timeout):
                    await attempt(timeout)
                return Delivery(notifier.label, ok=True, attempts=attempts)
            except TimeoutError:
                error, transient = f"no answer within {timeout:g}s (timeout)", True
            except NotifyError as exc:
                error, transient = str(exc), exc.transient
            except Exception as exc:  # a library's surprise: a warning all the same, not a crash
                log.debug("sending to %s failed", notifier.label, exc_info=True)
                error, transient = f"{type(exc).__name__}: {exc}", False
            if not transient or attempts > retries:
                return Delivery(
                    notifier.label, ok=False, error=redact_known(error), attempts=attempts
                )
            await asyncio.sleep(FIRST_RETRY_PAUSE * 2 ** (attempts - 1))

    async def _send(self, notifier: NotifierConfig, notice: Notice, bound: float) -> None:
        if isinstance(notifier, HealthchecksNotifier):
            signal = "log" if notice.command == "notify-test" else "" if notice.ok else "fail"
            await self._ping(notifier, signal, notice.ping_body(), bound)
        elif isinstance(notifier, SlackNotifier):
            await self._post(notifier.webhook_url, bound, json=notice.slack())
        elif isinstance(notifier, WebhookNotifier):
            headers = {"Content-Type": "application/json", **notifier.headers}
            document = notice.document or problems_report(notice)
            await self._post(notifier.url, bound, content=document, headers=headers)
        elif isinstance(notifier, AppriseNotifier):
            await self._send_apprise(notifier, notice)
        else:
            await _send_mail(notifier, notice, bound)

    async def _ping(
        self, check: HealthchecksNotifier, signal: str, body: bytes, bound: float
    ) -> None:
        """POST to the check's URL, or its /start, /fail or /log, with this run's id."""
        parts = urllib.parse.urlsplit(check.url)
        path = f"{parts.path.rstrip('/')}/{signal}" if signal else parts.path
        query = urllib.parse.parse_qsl(parts.query)
        with_id = urllib.parse.urlencode([*query, ("rid", self._run_id)])
        url = urllib.parse.urlunsplit(parts._replace(path=path, query=with_id))
        await self._post(url, bound, content=body)

    async def _post(
        self,
        url: str,
        bound: float,
        *,
        json: object = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """POST and check the answer; every failure becomes a NotifyError without the URL.
        The answer's body is read raw and only in part (never decoded: a server's broken
        gzip is no reason to fail, nor its size a reason to hold memory)."""
        if self._client is None:
            self._client = httpx.AsyncClient(headers={"User-Agent": USER_AGENT})
        # httpx's own timeouts (per phase) a little beyond the attempt's `bound`, which is
        # the one to expire and say so
        request = self._client.build_request(
            "POST", url, json=json, content=content, headers=headers, timeout=bound + 1
        )
        try:
            answer = await self._client.send(request, stream=True)
            try:
                said = b""
                if not answer.is_success:
                    async for chunk in answer.aiter_raw():
                        said += chunk
                        if len(said) >= ERROR_BODY_BYTES:
                            break
            finally:
                await answer.aclose()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise NotifyError("its URL is not a valid http(s) URL (is its ${VAR} set?)") from None
        except httpx.TimeoutException:
            raise NotifyError("timed out", transient=True) from None
        except httpx.LocalProtocolError:
            raise NotifyError("cannot send it: the request is invalid (its headers?)") from None
        except httpx.TransportError as exc:  # refused, reset, name not resolved, TLS
            tls = _caused_by_tls(exc)
            raise NotifyError(
                f"cannot reach it: {exc or type(exc).__name__}", transient=not tls
            ) from None
        if answer.is_success:
            return
        text = " ".join(said[:ERROR_BODY_BYTES].decode(errors="replace").split())
        status = f"answered HTTP {answer.status_code} {answer.reason_phrase}"
        status += f": {text}" if text else ""
        raise NotifyError(status, transient=answer.status_code >= 500 or answer.status_code == 429)

    async def _send_apprise(self, notifier: AppriseNotifier, notice: Notice) -> None:
        """Every URL at once, each on its own thread (Apprise blocks); a retry goes only to
        those that failed, and waits for a call still running rather than send twice."""
        try:
            import apprise
        except ImportError:
            raise NotifyError("needs Apprise: pip install 'db-backup[apprise]'") from None
        for chatty in ("apprise", "urllib3"):  # their debug lines show the URLs Apprise
            quiet = logging.getLogger(chatty)  # derives, tokens in them; unless asked for
            if quiet.level == logging.NOTSET:  # (--log-level apprise=debug)
                quiet.setLevel(logging.ERROR)
        kind = apprise.NotifyType.SUCCESS if notice.ok else apprise.NotifyType.FAILURE

        def send(url: str) -> bool:
            box = apprise.Apprise()
            if not box.add(url):
                raise NotifyError(f"Apprise does not know the URL {mask_scheme(url)}")
            return bool(box.notify(body=notice.text(), title=notice.subject, notify_type=kind))

        pending = [url for url in notifier.urls if url not in self._apprise_delivered]
        for url in pending:
            call = self._apprise_calls.get(url)
            if call is None or (
                call.done() and (call.cancelled() or call.exception() or not call.result())
            ):
                self._apprise_calls[url] = start_in_thread(send, url)
        outcomes = await asyncio.gather(
            *(asyncio.shield(self._apprise_calls[url]) for url in pending), return_exceptions=True
        )
        problems, transient = [], False
        for url, outcome in zip(pending, outcomes, strict=True):
            if outcome is True:
                self._apprise_delivered.add(url)
            elif isinstance(outcome, NotifyError):
                problems.append(str(outcome))
            else:
                problems.append(f"Apprise could not deliver to {mask_scheme(url)}")
                transient = True
        if problems:
            raise NotifyError("; ".join(problems), transient=transient)


async def send_notice(notifiers: Sequence[NotifierConfig], notice: Notice) -> list[Delivery]:
    """Send the notice of a command that has no start (a failed `verify` or `prune`: to
    healthchecks, `/fail`; `notify-test`: `/log`, which changes no check's state)."""
    return await Notifications(notifiers).finish(notice)


def _succeeded(call: asyncio.Future[bool]) -> bool:
    return not call.cancelled() and call.exception() is None and call.result()


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
    if notifier.password_file is None:
        return notifier.password or None
    try:
        password = Path(notifier.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise NotifyError(
            f"password_file {notifier.password_file}: {exc.strerror or exc}"
        ) from None
    remember(password)
    return password

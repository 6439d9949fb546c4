"""Sending notices (notification.py) to the config's notifiers: Slack, email, webhooks and
healthchecks pings.

Notifying never breaks a run: every attempt is bounded by the notifier's `timeout` (connecting
included), a failure that may pass (no answer, refused, a 5xx or 429, an SMTP 4xx) is tried
again `retries` times after 1 s, 2 s, ..., notifiers are sent to at once, and an outcome is a
`Delivery` value — the caller prints a failed one as a warning; the exit code stays the run's.
Errors are worded here, once, without the URL (it holds the token) or any known secret.

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
from db_backup.redact import redact_known, remember
from db_backup.report import problems_report
from db_backup.threads import in_thread

FIRST_RETRY_PAUSE = 1.0  # seconds; doubles with each further attempt
USER_AGENT = f"db-backup/{__version__}"
ERROR_BODY_CHARACTERS = 200  # of a refusal's body: Slack says why there ("invalid_token")


class Notifications:
    """The notifications of one run. For a backup run, `start()` pings healthchecks checks at
    once (in the background: a slow service does not delay the dumps) and `finish()` sends
    the notice at the end, after the start pings are done, so a service sees them in order."""

    def __init__(self, notifiers: Sequence[NotifierConfig]) -> None:
        self._notifiers = tuple(notifiers)
        self._run_id = str(uuid.uuid4())  # pairs a start ping with its end (healthchecks' rid)
        self._started: asyncio.Task[list[Delivery]] | None = None
        self._undelivered: dict[int, list[str]] = {}  # an Apprise notifier's URLs still to go

    def start(self) -> None:
        """Send `/start` to every healthchecks notifier, in the background."""
        checks = [n for n in self._notifiers if isinstance(n, HealthchecksNotifier)]
        if checks:
            self._started = asyncio.create_task(
                _deliver_all(checks, lambda n, client: self._ping(n, client, "start", b""))
            )

    def abandon(self) -> None:
        """The run was interrupted: send nothing more (the checks' grace time catches it)."""
        if self._started is not None:
            self._started.cancel()

    async def finish(self, notice: Notice | None) -> list[Delivery]:
        """Send `notice` to every notifier that wants it; returns the start pings' failures
        and every end delivery. None: the run had nothing to tell (every job `notify:
        false`), so only the checks pinged at the start hear that it ended."""
        deliveries = [d for d in await self._start_outcome() if not d.ok]
        chosen = [n for n in self._notifiers if notice is not None and wants(n, notice)]
        if notice is None:
            return deliveries
        return deliveries + await _deliver_all(chosen, lambda n, c: self._send(n, notice, c))

    async def _start_outcome(self) -> list[Delivery]:
        if self._started is None:
            return []
        return await self._started

    async def _send(
        self, notifier: NotifierConfig, notice: Notice, client: httpx.AsyncClient
    ) -> None:
        if isinstance(notifier, HealthchecksNotifier):
            if notice.command == "notify-test":
                await self._ping(notifier, client, "log", notice.ping_body())
            else:
                await self._ping(notifier, client, "" if notice.ok else "fail", notice.ping_body())
        elif isinstance(notifier, SlackNotifier):
            await _post(client, notifier.webhook_url, json=notice.slack())
        elif isinstance(notifier, WebhookNotifier):
            headers = {"Content-Type": "application/json", **notifier.headers}
            document = notice.document or problems_report(notice)
            await _post(client, notifier.url, content=document, headers=headers)
        elif isinstance(notifier, AppriseNotifier):
            await self._send_apprise(notifier, notice)
        else:
            await _send_mail(notifier, notice)

    async def _send_apprise(self, notifier: AppriseNotifier, notice: Notice) -> None:
        """Each URL on its own, so that a retry goes only to those that failed."""
        try:
            import apprise
        except ImportError:
            raise NotifyError("needs Apprise: pip install 'db-backup[apprise]'") from None
        undelivered = self._undelivered.setdefault(id(notifier), list(notifier.urls))
        kind = apprise.NotifyType.SUCCESS if notice.ok else apprise.NotifyType.FAILURE
        for chatty in ("apprise", "urllib3"):  # their debug lines show the URLs Apprise
            quiet = logging.getLogger(chatty)  # derives, tokens in them; unless asked for
            if quiet.level == logging.NOTSET:  # (--log-level apprise=debug)
                quiet.setLevel(logging.ERROR)

        def send(url: str) -> bool:
            box = apprise.Apprise()
            if not box.add(url):
                raise NotifyError(f"Apprise does not know the URL {url.partition(':')[0]}://***")
            return bool(box.notify(body=notice.text(), title=notice.subject, notify_type=kind))

        for url in list(undelivered):
            if await in_thread(send, url):  # blocking (requests): a daemon thread
                undelivered.remove(url)
        if undelivered:
            schemes = ", ".join(f"{url.partition(':')[0]}://***" for url in undelivered)
            raise NotifyError(f"Apprise could not deliver to {schemes}", transient=True)

    async def _ping(
        self, check: NotifierConfig, client: httpx.AsyncClient, signal: str, body: bytes
    ) -> None:
        """POST to the check's URL, or its /start, /fail or /log, with this run's id."""
        assert isinstance(check, HealthchecksNotifier)
        parts = urllib.parse.urlsplit(check.url)
        path = f"{parts.path.rstrip('/')}/{signal}" if signal else parts.path
        query = urllib.parse.urlencode(
            [*urllib.parse.parse_qsl(parts.query), ("rid", self._run_id)]
        )
        await _post(
            client, urllib.parse.urlunsplit(parts._replace(path=path, query=query)), content=body
        )


async def send_notice(notifiers: Sequence[NotifierConfig], notice: Notice) -> list[Delivery]:
    """Send the notice of a command that has no start (a failed `verify` or `prune`: to
    healthchecks, `/fail`; `notify-test`: `/log`, which changes no check's state)."""
    return await Notifications(notifiers).finish(notice)


Send = Callable[[NotifierConfig, httpx.AsyncClient], Awaitable[None]]


async def _deliver_all(notifiers: Sequence[NotifierConfig], send: Send) -> list[Delivery]:
    if not notifiers:
        return []
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as client:
        return list(await asyncio.gather(*(_deliver(n, send, client) for n in notifiers)))


async def _deliver(notifier: NotifierConfig, send: Send, client: httpx.AsyncClient) -> Delivery:
    """One notifier: attempts bounded by its timeout, retried while the failure may pass."""
    for secret in notifier.secrets:  # for log lines (httpx logs every request's URL)
        remember(secret)
    attempts, error = 0, ""
    while True:
        attempts += 1
        try:
            async with asyncio.timeout(notifier.timeout):
                await send(notifier, client)
            return Delivery(notifier.label, ok=True, attempts=attempts)
        except TimeoutError:
            error, transient = f"no answer within {notifier.timeout:g}s (timeout)", True
        except NotifyError as exc:
            error, transient = str(exc), exc.transient
        if not transient or attempts > notifier.retries:
            return Delivery(notifier.label, ok=False, error=redact_known(error), attempts=attempts)
        await asyncio.sleep(FIRST_RETRY_PAUSE * 2 ** (attempts - 1))


async def _post(
    client: httpx.AsyncClient,
    url: str,
    *,
    json: object = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """POST and check the answer; every failure becomes a NotifyError without the URL."""
    try:
        answer = await client.post(url, json=json, content=content, headers=headers)
    except httpx.TimeoutException:
        raise NotifyError("timed out", transient=True) from None
    except httpx.TransportError as exc:  # refused, reset, name not resolved, TLS
        raise NotifyError(f"cannot reach it: {exc or type(exc).__name__}", transient=True) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
        raise NotifyError("its URL is not a valid http(s) URL (is its ${VAR} set?)") from None
    if answer.is_success:
        return
    said = " ".join(answer.text.split())[:ERROR_BODY_CHARACTERS]
    status = f"answered HTTP {answer.status_code} {answer.reason_phrase}"
    status += f": {said}" if said else ""
    raise NotifyError(status, transient=answer.status_code >= 500 or answer.status_code == 429)


async def _send_mail(notifier: EmailNotifier, notice: Notice) -> None:
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
            timeout=notifier.timeout,
        )
    except aiosmtplib.SMTPResponseException as exc:  # the server said no: 4xx may pass
        said = " ".join(exc.message.split())
        raise NotifyError(
            f"the server answered {exc.code}: {said}", transient=exc.code < 500
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:  # connecting, TLS, a cut connection
        raise NotifyError(
            f"cannot send: {exc}", transient=not isinstance(exc, ssl.SSLError)
        ) from None


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

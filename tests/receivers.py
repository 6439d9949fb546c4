"""Real servers on loopback that notifications go to: an HTTP receiver standing in for Slack,
webhooks and healthchecks (it records every request, and can answer with an error or not at
all, on cue), and an SMTP server with AUTH (aiosmtpd), optionally with STARTTLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from db_backup.pgcluster import free_port

HANG = -1  # a status that means: never answer (until the receiver closes)
STALL = b"<stall>"  # a body that means: send the status and one byte of it, then nothing


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received: float  # time.monotonic() when it came in

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every request; `answer(path)` → (status, body) decides the reply."""

    answer: Callable[[str], tuple[int, bytes]] = lambda _path: (200, b"OK")
    requests: list[Request] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


@contextmanager
def http_receiver(
    answer: Callable[[str], tuple[int, bytes]] = lambda _path: (200, b"OK"),
    headers: dict[str, str] | None = None,
) -> Iterator[HttpReceiver]:
    """A receiver on a free loopback port; `headers` go with every answer."""
    receiver = HttpReceiver(answer)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urllib.parse.urlsplit(self.path)
            with lock:
                receiver.requests.append(
                    Request(
                        self.command,
                        parts.path,
                        dict(urllib.parse.parse_qsl(parts.query)),
                        {key.lower(): value for key, value in self.headers.items()},
                        self.rfile.read(length),
                        time.monotonic(),
                    )
                )
            status, body = receiver.answer(parts.path)
            if status == HANG:
                receiver.released.wait(60)
                return
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body == STALL:
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x")
                self.wfile.flush()
                receiver.released.wait(60)
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """An http URL nothing listens on: a notifier that is down."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class SmtpReceiver:
    """The mails an SMTP server accepted, and the logins it saw."""

    port: int
    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # recipients it answers 550 for
    recipients: list[str] = field(default_factory=list)  # every RCPT TO it was given

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        self.recipients.append(address)
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_receiver(
    username: str,
    password: str,
    *,
    certificate: tuple[Path, Path] | None = None,
    implicit_tls: bool = False,
    refused: Iterable[str] = (),
) -> Iterator[SmtpReceiver]:
    """An SMTP server on loopback that requires AUTH with these credentials; with a
    (certificate, key) pair it also requires STARTTLS before AUTH (or, `implicit_tls`,
    speaks TLS from the first byte, as on port 465)."""
    receiver = SmtpReceiver(free_port(), refused=set(refused))

    def authenticate(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> Any:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, given = data.login.decode(), data.password.decode()
        receiver.logins.append((login, given))
        return AuthResult(success=(login, given) == (username, password), handled=False)

    context = None
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*map(str, certificate))
    controller = Controller(
        receiver,
        hostname="127.0.0.1",
        port=receiver.port,
        authenticator=authenticate,
        auth_required=True,
        # aiosmtpd does not count implicit TLS as TLS for AUTH (it would not offer it)
        auth_require_tls=certificate is not None and not implicit_tls,
        require_starttls=certificate is not None and not implicit_tls,
        tls_context=None if implicit_tls else context,
        ssl_context=context if implicit_tls else None,
    )
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl (also the CA to trust)."""
    certificate, key = folder / "smtp.crt", folder / "smtp.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return certificate, key

"""Who may see and do what in the web UI, and the headers every page carries.

- On a loopback address the UI needs no login (whoever can reach it is on this machine); on
  any other address `serve --web` refuses to start unless `web:` names a login: a bearer
  token (`token_file`, sent as `Authorization: Bearer …`) or a username and a password hash
  (HTTP Basic, which every browser asks for by itself). A configured login is asked for on
  loopback too.
- Actions are POST forms carrying a CSRF token: one random value per process, written into
  each form. Another site cannot read it (the same-origin policy) and so cannot forge the
  POST; a POST whose Origin is another site is refused as well. GET never changes anything.
- Every answer says: no framing, no sniffing, no referrer, no caching, and a Content
  Security Policy without inline scripts (htmx is served from the package).

Password hashes are scrypt (hashlib's, no dependency): `scrypt$N$r$p$<salt hex>$<hash hex>`,
made by `db-backup hash-password`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from db_backup.config.schema import WebConfig
from db_backup.errors import BackupError

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer makes browsers send Origin: null
    "Cache-Control": "no-store",
}
_SCRYPT = (2**15, 8, 1)  # N, r, p: ~0.1 s and 32 MiB per check
_MAX_MEMORY = 64 * 1024 * 1024


class WebError(BackupError):
    """The web UI cannot start as configured (says why)."""

    kind = "web"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_password(password: str) -> str:
    """A `password_hash:` value for `password`."""
    salt = secrets.token_bytes(16)
    n, r, p = _SCRYPT
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    """Does `password` match the hash? (False for a malformed hash, too.)"""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAX_MEMORY,
        )
    except ValueError:
        return False
    return hmac.compare_digest(found.hex(), digest)


@dataclass(frozen=True)
class Guard:
    """What a request must show: nothing (loopback without a login), a bearer token, or a
    username and password; and the CSRF token of this process."""

    token: str | None
    username: str | None
    password_hash: str | None
    csrf: str
    read_only: bool

    @property
    def needs_login(self) -> bool:
        return self.token is not None or self.username is not None

    def allows(self, authorization: str | None) -> bool:
        """Is this Authorization header good enough?"""
        if not self.needs_login:
            return True
        if authorization is None:
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme.lower() == "basic" and self.username and self.password_hash:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            same_user = hmac.compare_digest(user.encode(), self.username.encode())
            return password_matches(password, self.password_hash) and same_user
        return False

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


def guard_for(settings: WebConfig, host: str) -> Guard:
    """The guard for serving `settings` on `host`; WebError when a non-loopback address has
    no login, or the login is half configured or unreadable."""
    if (settings.username is None) != (settings.password_hash is None):
        raise WebError("web: give username and password_hash together")
    token = None
    if settings.token_file is not None:
        try:
            token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise WebError(
                f"web.token_file {settings.token_file}: cannot read it ({exc})"
            ) from None
        if len(token) < 16:
            raise WebError(f"web.token_file {settings.token_file}: use at least 16 characters")
    guard = Guard(
        token=token,
        username=settings.username,
        password_hash=settings.password_hash,
        csrf=secrets.token_urlsafe(32),
        read_only=settings.read_only,
    )
    if not guard.needs_login and not is_loopback(host):
        raise WebError(
            f"--web on {host}, which is not a loopback address, needs a login: set "
            "web.token_file, or web.username and web.password_hash (db-backup hash-password)"
        )
    return guard

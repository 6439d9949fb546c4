"""Keeping secrets out of anything a person or a log may read.

Pure functions, and one registry: the secrets this process has come to know (passwords from
the config or a password_file, S3 secret keys and session tokens), which `SecretFilter` masks
in every log record — botocore at debug level logs request headers, session token included.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Sequence

MASK = "***"
# A URL's path or query shorter than this ("/", "/hook") is no token, and masking it would
# garble unrelated text.
MIN_SECRET_PART = 8
_SECRET_IN_CONNINFO = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` masked (a child or server might echo it)."""
    return text.replace(secret, MASK) if secret else text


def redact_url(url: str) -> str:
    """A URL fit to print: a password in it and its query (where tokens live) masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@")
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, MASK if parts.query else "", "")
    )


def mask_url_path(url: str) -> str:
    """A notifier's URL fit to print: only scheme and host. Its path and query are where
    services put the token (a Slack webhook, a healthchecks ping UUID), so both are masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed host or port: show none of it
        return f"{mask_scheme(url)}"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    masked = MASK if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}/{masked}" if parts.scheme else MASK


def mask_scheme(url: str) -> str:
    """`tgram://***`: only the service an (Apprise) URL names."""
    scheme, separator, _ = url.partition("://")
    return f"{scheme}://{MASK}" if separator and scheme.isalnum() else MASK


def url_forms(url: str) -> tuple[str, ...]:
    """The ways a URL with a token may show up in a log line or an error: as written, as an
    HTTP client normalises it (scheme and host in lower case), and its path or query alone
    (a server echoing the path; a ping URL with `/start` inserted before its query)."""
    forms = [url]
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return tuple(forms)
    forms.append(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.lower())))
    forms += [part for part in (parts.path, parts.query) if len(part) >= MIN_SECRET_PART]
    return tuple(dict.fromkeys(forms))


def mask_command(argv: Sequence[str]) -> str:
    """A loggable rendering of argv with any conninfo `password=` masked."""
    return " ".join(_SECRET_IN_CONNINFO.sub(rf"\1{MASK}", arg) for arg in argv)


_known: set[str] = set()


def remember(secret: str | None) -> None:
    """Keep `secret` out of every log line from now on (see SecretFilter)."""
    if secret:
        _known.add(secret)


def redact_known(text: str) -> str:
    """`text` with every remembered secret masked, longest first (one may contain another)."""
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class SecretFilter(logging.Filter):
    """Masks remembered secrets in a record's message (and its traceback), whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _known:
            message = record.getMessage()
            masked = redact_known(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact_known(record.exc_text)
        return True

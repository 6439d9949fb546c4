"""Secrets given in a config as a value or as a file: the one place a `password_file` is
read. What is read is remembered, so that no log line shows it (redact.py)."""

from __future__ import annotations

from pathlib import Path

from db_backup.errors import CredentialsError
from db_backup.redact import remember


def password_of(password: str | None, password_file: str | None) -> str | None:
    """`password`, or the first line of `password_file` when that is how it is given (its
    line break dropped); None when neither is. Raises CredentialsError naming the file."""
    if password_file is None:
        return password
    try:
        text = Path(password_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CredentialsError(f"password_file {password_file}: {why}") from None
    secret = text.rstrip("\r\n")
    remember(secret)
    return secret

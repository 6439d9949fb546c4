"""age keys: recipients (public keys a backup is encrypted to) and identities (the secret keys
that decrypt it), parsed by pyrage (the Rust `age` crate), never by hand. pyrage is imported
only where a config or a command uses encryption.

A recipient is `age1…` (X25519) or an SSH public key (`ssh-ed25519 AAAA… comment`, `ssh-rsa
…`). An identity file holds `AGE-SECRET-KEY-1…` lines (as age-keygen writes them, `#`
comments allowed) or is an unencrypted OpenSSH private key. No secret ever goes into a message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db_backup.errors import KeyFileError

if TYPE_CHECKING:
    import pyrage

IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
_SSH_KINDS = ("ssh-ed25519 ", "ssh-rsa ")
_SSH_PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"


def parse_recipient(text: str) -> pyrage.x25519.Recipient | pyrage.ssh.Recipient:
    """One recipient; ValueError saying what is wrong with it — never echoing it, as what
    was given by mistake may be a secret (an identity, a line of a private key file)."""
    import pyrage

    value = text.strip()
    if value.upper().startswith(IDENTITY_PREFIX):
        raise ValueError(
            "this is a secret key (an identity), not a recipient: give its public key "
            "(age-keygen -y FILE, or the one `db-backup keygen` printed)"
        )
    if value.startswith("-----BEGIN") or "PRIVATE KEY" in value:
        raise ValueError("this is a private key, not a recipient: give its public key (.pub)")
    try:
        if value.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(value)
        if value.startswith(_SSH_KINDS):
            return pyrage.ssh.Recipient.from_str(value)
    except pyrage.RecipientError as exc:
        raise ValueError(f"not a valid recipient ({exc})") from None
    raise ValueError(
        "not an age recipient (age1…) nor an SSH public key (ssh-ed25519 …, ssh-rsa …)"
    )


def recipient_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, recipient) for each line of a recipients file that holds one."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


@dataclass(frozen=True)
class Identities:
    """The identities of one identity file, ready for pyrage; `source` names the file."""

    source: str
    keys: tuple[Any, ...]  # pyrage identities (x25519 or ssh)

    def __repr__(self) -> str:
        return f"Identities({self.source!r}, {len(self.keys)} keys)"


def read_identities(path: Path) -> Identities:
    """The identities in the file at `path`; KeyFileError if there is none or it cannot be
    read. A file that group or others may read is warned about by `exposed_identity`."""
    import pyrage

    try:
        content = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"identity file {path}: {exc.strerror or exc}") from None
    if content.lstrip().startswith(_SSH_PRIVATE):
        try:
            return Identities(str(path), (pyrage.ssh.Identity.from_buffer(content),))
        except pyrage.IdentityError as exc:
            raise KeyFileError(
                f"identity file {path}: not a usable SSH private key ({exc}; keys with a "
                "passphrase are not supported)"
            ) from None
    keys = []
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            keys.append(pyrage.x25519.Identity.from_str(stripped))
        except pyrage.IdentityError:
            raise KeyFileError(
                f"identity file {path}, line {number}: not an age identity "
                f"({IDENTITY_PREFIX}…) nor an OpenSSH private key"
            ) from None
    if not keys:
        raise KeyFileError(f"identity file {path}: holds no identity")
    return Identities(str(path), tuple(keys))


def exposed_identity(path: Path) -> str | None:
    """A warning when the identity file at `path` may be read by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"identity file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
            f"chmod 600 it"
        )
    return None


def write_new_identity(path: Path | None) -> tuple[str, str]:
    """A new X25519 identity: written to `path` (0600, never over an existing file) when
    given; returns (the file's text, its public recipient)."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = f"# created by db-backup keygen\n# public key: {recipient}\n{identity}\n"
    if path is not None:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{path} exists already; not overwritten") from None
        except OSError as exc:
            raise KeyFileError(f"cannot create {path}: {exc.strerror or exc}") from None
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
    return text, recipient

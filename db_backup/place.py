"""Where a configured target really is: one identity for every spelling of one place; and
whether other users may write there.

Locks, leftovers and collision checks key on it, so that `/x/link` (a symlink to `/x/store`)
and `/x/store`, or `http://host:9000` and `http://HOST:9000/`, are one target: a run never
waits on its own lock, and one config's clean-up never mistakes another's upload for debris.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import assert_never
from urllib.parse import urlsplit

from db_backup.config.schema import (
    LocalStorage,
    ResticStorage,
    S3Storage,
    StorageConfig,
    is_local_repository,
)


def place_of(storage: StorageConfig) -> str:
    """Where a target really is, however it is spelled: a folder's real path (symlinks and
    `..` resolved), a bucket's normalised endpoint, name and folder. Targets with one place
    are one target: one lock, one set of files."""
    match storage:
        case LocalStorage():
            return f"local:{os.path.realpath(storage.path)}"
        case S3Storage():
            return f"s3:{_endpoint(storage.endpoint_url)}/{storage.bucket}/{storage.folder}"
        case ResticStorage():
            if is_local_repository(storage.repository):
                return f"restic:{os.path.realpath(storage.repository.removeprefix('local:'))}"
            return storage.label  # a password in a URL masked: the place is the same
        case _:
            assert_never(storage)


def _endpoint(url: str | None) -> str:
    """`HTTP://Host:80/` and `http://host` alike → `http://host:80`."""
    if url is None:
        return "aws"  # bucket names are global on AWS: the region does not matter
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # not a port number: validate reports it, keep the text
        return url.strip()
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path.rstrip('/')}"


def shared_folder_risk(directory: Path) -> tuple[bool, str] | None:
    """Whether other users may write to a folder: (refused, why), or None. Writable by every
    user without the sticky bit, anyone may delete or replace the backups in it: refused
    unless the target says `allow_world_writable: true`."""
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return None  # missing: created 0700
    if not mode & 0o022:
        return None
    bits = f"mode {stat.S_IMODE(mode):04o}"
    if mode & 0o002 and not mode & stat.S_ISVTX:
        return True, (
            f"storage folder {directory} is writable by every user without the sticky bit "
            f"({bits}): anyone could delete or replace backups in it"
        )
    who = "every user" if mode & 0o002 else "its group"
    return False, f"storage folder {directory} is writable by {who} ({bits})"

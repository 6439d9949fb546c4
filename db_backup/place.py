"""Where a configured target really is: one identity for every spelling of one place.

Locks, leftovers and collision checks key on it, so that `/x/link` (a symlink to `/x/store`)
and `/x/store`, or `http://host:9000` and `http://HOST:9000/`, are one target: a run never
waits on its own lock, and one config's clean-up never mistakes another's upload for debris.
"""

from __future__ import annotations

import os
from typing import assert_never
from urllib.parse import urlsplit

from db_backup.config.schema import LocalStorage, S3Storage, StorageConfig


def place_of(storage: StorageConfig) -> str:
    """Where a target really is, however it is spelled: a folder's real path (symlinks and
    `..` resolved), a bucket's normalised endpoint, name and folder. Targets with one place
    are one target: one lock, one set of files."""
    match storage:
        case LocalStorage():
            return f"local:{os.path.realpath(storage.path)}"
        case S3Storage():
            return f"s3:{_endpoint(storage.endpoint_url)}/{storage.bucket}/{storage.folder}"
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

"""How backup files are named, and how a job recognises its own. Pure; the bottom floor that
storage, catalog, locks and the planner all build on.

A backup file is `[<prefix>_]<job>_<UTC YYYYmmddTHHMMSSZ><ext>` (the prefix is what the target
puts in front, see each storage kind's `name_prefix`), its manifest `<file>.json`. One
timestamp per run, so a dry run shows the exact names. Names derived from database names
(for `database: "*"`) are made safe for file systems and cannot leave the storage folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime

from db_backup.config.schema import NAME_PATTERN, BackupConfig, StorageConfig
from db_backup.model import JobKind
from db_backup.stages import COMPRESSION_SUFFIXES, ENCRYPTED_SUFFIX

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_COMPONENT = 60
LONGEST_SAFE_NAME = _MAX_COMPONENT + 9  # and "-" and 8 hex digits of a hash
_STAMP_PATTERN = r"\d{8}T\d{6}Z\."
_PLAIN_SUFFIXES = (".dump", *(f".sql{suffix}" for suffix in COMPRESSION_SUFFIXES.values()))
# Every suffix a backup file can have (see `extension`).
BACKUP_SUFFIXES = (*_PLAIN_SUFFIXES, *(f"{suffix}{ENCRYPTED_SUFFIX}" for suffix in _PLAIN_SUFFIXES))


def timestamp(moment: datetime) -> str:
    """UTC `YYYYmmddTHHMMSSZ`, sortable and free of characters file systems dislike."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def safe_component(text: str) -> str:
    """A file-name-safe rendering of an arbitrary database or host name.

    Accents are folded, anything else outside [A-Za-z0-9._-] becomes `_`. When that changed the
    text, a short hash of the original is appended so distinct names never collide.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", folded).lstrip("._-")[:_MAX_COMPONENT]
    if cleaned == text and NAME_PATTERN.fullmatch(cleaned):
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else f"db-{digest}"


def extension(backup: BackupConfig, kind: JobKind = JobKind.DATABASE, *, raw: bool = False) -> str:
    """.sql.gz / .sql.zst / .sql for plain SQL (and globals); .dump for custom format; each
    with .age after it when encrypted. `raw`: for a target given the dump as the program
    wrote it (StorageConfig.takes_raw), .sql or .dump."""
    encrypted = ENCRYPTED_SUFFIX if backup.encryption is not None and not raw else ""
    if kind is JobKind.DATABASE and backup.format == "custom":
        return f".dump{encrypted}"
    compressed = "" if raw else COMPRESSION_SUFFIXES[backup.compression.algorithm]
    return f".sql{compressed}{encrypted}"


def format_of(name: str) -> str:
    """The dump format a stored file's name says (see `extension`)."""
    return "custom" if name.removesuffix(ENCRYPTED_SUFFIX).endswith(".dump") else "plain"


def file_prefix(storage: StorageConfig, job_name: str) -> str:
    """The start every file of this job shares on a target: `[<prefix>_]<job>_`."""
    return f"{storage.name_prefix}{job_name}_"


def is_own_file(name: str, job_file_prefix: str) -> bool:
    """Is `name` one of this job's files (dump, manifest or partial)? `<prefix>_shop_` must
    not claim job `shop_eu`'s files: the run timestamp follows the prefix directly."""
    return re.match(re.escape(job_file_prefix) + _STAMP_PATTERN, name) is not None


RESTORE_TEST_SUFFIX = ".verify.json"


def restore_test_name(name: str) -> str:
    """The restore-test record beside backup file `name` (manifest.RestoreTest)."""
    return f"{name}{RESTORE_TEST_SUFFIX}"


def run_stamp_of(name: str) -> str | None:
    """The run's timestamp in a backup's file name (every file of one run shares it)."""
    found = re.findall(r"_(\d{8}T\d{6}Z)\.", name)
    return found[-1] if found else None


def unusable_name(storage: StorageConfig, filename: str) -> str | None:
    """Why a backup file cannot have this name on this target (it would leave its folder,
    or be too long there), or None."""
    if os.path.basename(filename) != filename or filename.startswith("."):
        return f"file name {filename!r} would leave its storage folder"
    return storage.name_problem(filename)


def leftovers(names: Iterable[str], file_prefixes: Iterable[str]) -> set[str]:
    """Of the file names on a target, what interrupted runs of these jobs left: partial
    files, backup files whose manifest never came (a run killed between the two), and
    restore-test records whose backup is gone (deleted while a test ran). Under the
    target's lock nothing else is writing them, so they are safe to remove."""
    present = set(names)
    prefixes = tuple(file_prefixes)
    found = set()
    for name in present:
        if not any(is_own_file(name, prefix) for prefix in prefixes):
            continue
        orphan = name.endswith(BACKUP_SUFFIXES) and f"{name}.json" not in present
        tested = name.removesuffix(RESTORE_TEST_SUFFIX)
        stale_record = tested != name and tested not in present
        if name.endswith(".partial") or orphan or stale_record:
            found.add(name)
    return found


def globals_job_name(backup: BackupConfig) -> str:
    """The job that saves a server's globals (roles, tablespaces): one per server."""
    return f"globals-{safe_component(backup.host or 'local')}-{backup.port}"


def longest_file_names(backup: BackupConfig, storage: StorageConfig) -> list[str]:
    """The longest file names this backup's jobs can write to a target (for `validate`):
    a "*" backup's databases are known only at run time, so the longest name a database can
    be made (see safe_component) stands in for them."""
    stamp = timestamp(datetime(2000, 1, 1, tzinfo=UTC))
    job = f"{backup.name}.{'x' * LONGEST_SAFE_NAME}" if backup.is_wildcard else backup.name
    kinds = [(job, JobKind.DATABASE)]
    if backup.globals:
        kinds.append((globals_job_name(backup), JobKind.GLOBALS))
    return [f"{file_prefix(storage, name)}{stamp}{extension(backup, kind)}" for name, kind in kinds]

"""A restic repository as a target: restic cuts each dump into content-defined chunks and
keeps only the ones it does not hold yet, so a mostly unchanged database costs a fraction of a
full dump per night (and restic compresses and encrypts what it keeps).

Each file db-backup stores here is one restic snapshot of that one file, made by `restic
backup --stdin --stdin-filename <name>` under the fixed host `db-backup` and the tag
`db-backup` (so `restic snapshots` groups them the same from any machine). A dump's snapshot
is also tagged with its job, backup, database and db-backup's version (values
percent-encoded: restic splits tags at commas). A manifest or a restore-test record (small
JSON) is a snapshot of its own that carries its content twice: as the file, for people
(`restic dump latest /<name>.json`), and in a `content=` tag (zlib + base64url), so one
`restic snapshots` call lists every backup with its manifest — every other restic call costs
opening the repository's key (0.6-0.8 s here), and a list of 60 backups would take a minute.

Why two snapshots, not one: restic 0.14 takes a single file from stdin, and a manifest exists
only once the dump ended. A dump's snapshot without its manifest's is no backup (the catalog's
rule, as for a file without its `.json`) and is removed under the target's lock like any
leftover.

The commit rule meets restic's: `restic backup --stdin` makes its snapshot as soon as stdin
ends and cannot see the dump program's exit status. So an upload keeps restic's stdin open
until the job knows the dump is complete; `commit()` closes it and waits for the snapshot;
`abort()` interrupts restic (SIGINT: restic removes its lock and writes no snapshot), kills
it if it hangs, and then removes the stale lock (`restic unlock`, which removes only locks of
dead processes on this machine and locks not refreshed for 30 minutes — a live restic
refreshes its lock every 5). A runner that is SIGKILLed takes restic with it (the kernel's
death signal, process.py) within microseconds of its stdin ending: no snapshot in practice,
and if one were made it would lack a manifest and be removed.

Deleting is `restic forget` and then `restic prune`. Both need restic's exclusive lock, which
every running backup or read of ours holds shared, so deletions are collected and carried out
when this store is idle: at `tidy()`, or on a thread of their own once this process's last
upload or read ended. `restic check` only reads and runs without a lock, so that verifying
never stops a backup.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from db_backup import __version__
from db_backup.config.schema import ResticStorage
from db_backup.errors import StorageError, ToolNotFoundError
from db_backup.naming import leftovers
from db_backup.process import BlockingChild
from db_backup.redact import redact
from db_backup.units import format_duration

log = logging.getLogger(__name__)

HOST = "db-backup"
OWN_TAG = "db-backup"
CONTENT_TAG = "content="
# A file this small also travels in its snapshot's tags (see the module's docstring); the
# kernel takes 128 KiB per argument.
LARGEST_CONTENT_TAG = 32 * 1024
# How long an interrupted restic may take to remove its lock before it is killed.
INTERRUPT_WAIT_SECONDS = 10.0
# A listing is reused this long (then listed again: another machine may have written), and
# kept up to date meanwhile with what this store writes and deletes.
LISTING_SECONDS = 60.0
# restic 0.14 adds "Is there a repository at the following location?" to every failure to
# open a repository, a refused connection too; these say the repository is really not there.
_NOT_THERE = ("no such file or directory", "The specified key does not exist", "NoSuchKey")


@dataclass(frozen=True)
class Snapshot:
    """One of our snapshots: the file it holds, and that file's content if a tag carries it."""

    id: str
    name: str
    time: str
    content: bytes | None = None


def tag_value(value: str) -> str:
    """A tag's value as restic keeps it whole: no commas (it splits at them), no spaces."""
    return urllib.parse.quote(value, safe="")


def content_tag(data: bytes) -> str | None:
    """The tag carrying a small file's content, or None when it is too big for one."""
    packed = base64.urlsafe_b64encode(zlib.compress(data, 9)).decode("ascii").rstrip("=")
    return f"{CONTENT_TAG}{packed}" if len(packed) <= LARGEST_CONTENT_TAG else None


def _content_of(tags: list[str]) -> bytes | None:
    for tag in tags:
        if tag.startswith(CONTENT_TAG):
            packed = tag.removeprefix(CONTENT_TAG)
            with contextlib.suppress(ValueError, zlib.error):
                return zlib.decompress(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    return None


def parse_snapshots(listing: bytes) -> dict[str, list[Snapshot]]:
    """`restic snapshots --json` → our snapshots by file name, newest first (a name stored
    again — a restore-test record replaced — has several). Other tools' snapshots are left out."""
    found: dict[str, list[Snapshot]] = {}
    for entry in json.loads(listing) or []:
        tags = entry.get("tags") or []
        paths = entry.get("paths") or []
        if OWN_TAG not in tags or len(paths) != 1 or entry.get("hostname") != HOST:
            continue
        name = paths[0].lstrip("/")
        found.setdefault(name, []).append(
            Snapshot(entry["id"], name, entry["time"], _content_of(tags))
        )
    for versions in found.values():
        versions.sort(key=lambda snapshot: (snapshot.time, snapshot.id), reverse=True)
    return found


def is_missing_repository(stderr_tail: str) -> bool:
    """Whether restic failed because there is no repository (not: it could not reach it)."""
    fatal = [line for line in stderr_tail.split(" | ") if line.startswith("Fatal: unable to open")]
    return any(marker in line for line in fatal for marker in _NOT_THERE)


def restic_reason(stderr_tail: str) -> str:
    """What restic said went wrong, without its decoration: its `Fatal:` line(s) if any."""
    lines = [line.strip() for line in stderr_tail.split(" | ") if line.strip()]
    fatal = [line.removeprefix("Fatal: ") for line in lines if line.startswith("Fatal:")]
    chosen = fatal or lines[-3:]
    return "; ".join(chosen) or "no message"


class ResticStore:
    """See the module's docstring. Thread-safe: concurrent jobs share one store."""

    def __init__(self, config: ResticStorage) -> None:
        self.config = config
        self.label = config.label
        self._state = threading.Condition()
        self._listing: dict[str, list[Snapshot]] | None = None
        self._listed_at = 0.0
        self._generation = 0  # counts this store's writes and deletes (see _snapshots)
        self._busy = 0  # uploads and reads running (they hold restic's lock shared)
        self._exclusive = False  # forget/prune running (restic's exclusive lock)
        self._doomed: dict[str, str] = {}  # snapshot id → its file: deleted, not forgotten yet
        self._forget_when_idle = False
        self._repository_ready = not config.init
        self._init_lock = threading.Lock()

    # -- restic itself ------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """restic's environment: ours without RESTIC_* (this target says which repository
        and key), the target's `env` (its backend's credentials), repository and password.
        Neither the repository (a rest: URL may hold a password) nor the password is in argv."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(self.config.env)
        env["RESTIC_REPOSITORY"] = self.config.repository
        if self.config.password:
            env["RESTIC_PASSWORD"] = self.config.password
        elif self.config.password_file:
            env["RESTIC_PASSWORD_FILE"] = self.config.password_file
        return env

    def start(self, *arguments: str, stdin: bool = False, stream: bool = False) -> BlockingChild:
        """A restic child (`stream`: its stdout is read by the caller)."""
        program = shutil.which(self.config.restic_path)
        if program is None:
            raise StorageError(
                f"{self.label}: {self.config.restic_path} not found "
                "(install Debian's restic package, or set restic_path)"
            )
        try:
            return BlockingChild(
                [program, *arguments], self._environment(), stdin=stdin, collect_output=not stream
            )
        except (ToolNotFoundError, OSError) as exc:
            raise StorageError(f"{self.label}: cannot start restic: {exc}") from None

    def failure(self, child: BlockingChild, doing: str) -> StorageError:
        """The error for a restic command that failed, in restic's words (secrets masked)."""
        tail = child.stderr_tail()
        for secret in self.config.secrets:
            tail = redact(tail, secret)
        if is_missing_repository(tail):
            hint = "" if self.config.init else " (init: true creates it)"
            return _NoRepositoryError(f"{self.label}: no restic repository there{hint}")
        return StorageError(f"{self.label}: restic {doing} failed: {restic_reason(tail)}")

    def stop(self, child: BlockingChild) -> None:
        """End a restic that must not finish: SIGINT (restic removes its lock and, in a
        backup, writes no snapshot), SIGKILL if it is still there after a while, and then
        remove the lock a killed restic leaves."""
        if child.process.poll() is None:
            child.signal(signal.SIGINT)
            try:
                child.wait(INTERRUPT_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                self.unlock_stale()
        child.wait(None)

    def call(
        self, *arguments: str, data: bytes | None = None, timeout: float | None = None
    ) -> bytes:
        """Run one restic command to its end within `timeout` (the target's, by default);
        its stdout. `data` goes to its stdin from a thread of its own, so a restic that
        never reads still ends within the timeout."""
        limit = self.config.timeout if timeout is None else timeout
        child = self.start(*arguments, stdin=data is not None)
        try:
            if data is not None:
                threading.Thread(target=_feed, args=(child, data), daemon=True).start()
            code = child.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop(child)
            raise StorageError(
                f"{self.label}: restic {arguments[0]} did not finish within "
                f"{format_duration(limit)} (timeout: {limit:g}s)"
            ) from None
        except BaseException:
            self.stop(child)
            raise
        if code != 0:
            raise self.failure(child, arguments[0])
        return child.output()

    def _ensure_repository(self) -> None:
        """With `init: true`, create the repository the first time it is missing."""
        with self._init_lock:  # two jobs starting at once: one `restic init`
            if self._repository_ready:
                return
            try:
                self.call("cat", "config", "--no-lock")
            except _NoRepositoryError:
                log.info("%s: creating the restic repository (init: true)", self.label)
                self.call("init")
            self._repository_ready = True

    # -- restic's lock: shared by backups and reads, exclusive for forget and prune ------------

    def _enter(self) -> None:
        with self._state:
            while self._exclusive:
                self._state.wait()
            self._busy += 1

    def _leave(self) -> None:
        """An upload or read ended. Deletions waiting for the store to be idle are carried
        out by a thread of their own: never on the clock of the job that happened to end
        last. It is not a daemon thread, so a run that ends waits for it."""
        with self._state:
            self._busy -= 1
            if self._busy or not self._forget_when_idle or self._exclusive:
                return
            self._forget_when_idle, self._exclusive = False, True
        threading.Thread(target=self._forget_in_background, name="restic forget").start()

    def _forget_in_background(self) -> None:
        try:
            self._forget_doomed()
        except StorageError as exc:
            log.warning("%s", exc)
        finally:
            self._done_exclusive()

    def _done_exclusive(self) -> None:
        with self._state:
            self._exclusive = False
            self._state.notify_all()

    def _forget_doomed(self) -> None:
        """`restic forget` of every doomed snapshot — manifests first, so a forget cut short
        never leaves a manifest naming a forgotten dump — then `restic prune`."""
        with self._state:
            doomed = sorted(self._doomed, key=lambda i: not self._doomed[i].endswith(".json"))
        if not doomed:
            return
        self.call("unlock")  # an exclusive lock must not wait on a dead process's
        self.call("forget", *doomed)
        with self._state:
            for snapshot_id in doomed:
                self._doomed.pop(snapshot_id, None)
        self.call("prune", timeout=self.config.maintenance_timeout)

    def unlock_stale(self) -> None:
        """Remove locks left by restic processes that died (see the module's docstring)."""
        try:
            self.call("unlock")
        except StorageError as exc:
            log.warning("%s", exc)

    # -- the listing ---------------------------------------------------------------------

    def _snapshots(self, *, fresh: bool = False) -> dict[str, list[Snapshot]]:
        """Our snapshots by name, newest first (a copy: jobs change the listing). Listed
        when `fresh`, when older than LISTING_SECONDS, or when none was; meanwhile kept up to
        date with this store's own writes and deletes. A listing during which this store
        wrote or deleted is taken again (it may lack what was just written)."""
        while True:
            with self._state:
                recent = time.monotonic() - self._listed_at < LISTING_SECONDS
                if self._listing is not None and recent and not fresh:
                    return dict(self._listing)
                generation = self._generation
            try:
                listing = parse_snapshots(
                    self.call("snapshots", "--json", "--no-lock", "--host", HOST, "--tag", OWN_TAG)
                )
            except _NoRepositoryError:
                if not self.config.init:
                    raise
                return {}  # made by the first backup (not kept: listed again next time)
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(
                    f"{self.label}: restic snapshots gave no listing ({exc})"
                ) from None
            with self._state:
                if generation != self._generation:
                    continue
                kept = {
                    name: [s for s in versions if not self._is_doomed(s.id)]
                    for name, versions in listing.items()
                }
                self._listing = {name: versions for name, versions in kept.items() if versions}
                self._listed_at = time.monotonic()
                return dict(self._listing)

    def _is_doomed(self, snapshot_id: str) -> bool:
        return any(snapshot_id.startswith(doomed) for doomed in self._doomed)

    def _newest(self, name: str) -> Snapshot:
        versions = self._snapshots().get(name)
        if not versions:
            raise StorageError(f"{self.location(name)} is not in the repository")
        return versions[0]

    def _record(self, name: str, snapshot_id: str | None, content: bytes | None) -> None:
        """A snapshot this store just made, into the listing (newest of its name)."""
        with self._state:
            self._generation += 1
            if self._listing is None:
                return
            if snapshot_id is None:  # no summary to tell its id: list again when asked
                self._listing = None
                return
            made = Snapshot(snapshot_id, name, "", content)
            self._listing[name] = [made, *self._listing.get(name, [])]

    def _doom(self, snapshots: Mapping[str, str]) -> None:
        """Snapshots (id → file) deleted now: gone from the listing, forgotten by `tidy`."""
        with self._state:
            self._generation += 1
            self._doomed.update(snapshots)
            if self._listing is not None:
                for name, versions in list(self._listing.items()):
                    kept = [s for s in versions if not self._is_doomed(s.id)]
                    if kept:
                        self._listing[name] = kept
                    else:
                        del self._listing[name]

    # -- the Store interface --------------------------------------------------------------

    def location(self, name: str) -> str:
        return f"{self.label}:/{name}"

    def check(self) -> None:
        """Open the repository with its password (`restic cat config`). A missing one is
        fine when `init: true` (the first backup creates it): validate changes nothing."""
        try:
            self.call("cat", "config", "--no-lock")
        except _NoRepositoryError:
            if not self.config.init:
                raise

    def check_repository(self) -> str:
        """`restic check` (reading a part of the data with `read_data_subset`); what it
        checked, for verify's report. Raises StorageError when the repository is damaged.
        Without restic's lock (`--no-lock`): it only reads, and a lock would stop every
        backup into the repository meanwhile; this store's own deletions wait for it."""
        arguments = ["check", "--no-lock"]
        if self.config.read_data_subset:
            arguments.append(f"--read-data-subset={self.config.read_data_subset}")
        self._enter()
        try:
            self.call(*arguments, timeout=self.config.maintenance_timeout)
        finally:
            self._leave()
        subset = self.config.read_data_subset
        return f"restic check: no errors{f', data read: {subset}' if subset else ''}"

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self._snapshots() if name.startswith(prefix))

    def read(self, name: str) -> bytes:
        snapshot = self._newest(name)
        if snapshot.content is not None:
            return snapshot.content
        self._enter()
        try:
            return self.call("dump", snapshot.id, f"/{name}")
        finally:
            self._leave()

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[DumpReader]:
        snapshot = self._newest(name)
        self._enter()
        try:
            child = self.start("dump", snapshot.id, f"/{name}", stream=True)
            try:
                yield DumpReader(self, child)
            finally:
                self.stop(child)  # a reader that stopped early: restic removes its lock
        finally:
            self._leave()

    def exists(self, name: str) -> bool:
        return name in self._snapshots()

    def put(self, name: str, data: bytes) -> None:
        """A snapshot of `name` holding `data` (in a tag too, when small). Readers take the
        newest snapshot of a name; older ones go when the name is deleted."""
        self._ensure_repository()
        tags = [OWN_TAG]
        if (carried := content_tag(data)) is not None:
            tags.append(carried)
        self._enter()
        try:
            made = _snapshot_id(self.call(*_backup_arguments(name, tags), data=data))
        finally:
            self._leave()
        self._record(name, made, data)

    def delete(self, name: str) -> None:
        """Forget every snapshot of `name` (carried out by `tidy`, or when idle)."""
        versions = self._snapshots().get(name, [])
        self._doom({snapshot.id: name for snapshot in versions})

    def tidy(self) -> None:
        """Carry out the deletions: `restic forget` and `restic prune` now, or when the last
        upload or read of this process ends if one is running."""
        with self._state:
            while self._exclusive:
                self._state.wait()
            if not self._doomed:
                return
            if self._busy:
                self._forget_when_idle = True
                return
            self._exclusive = True
        try:
            self._forget_doomed()
        finally:
            self._done_exclusive()

    def open_upload(self, name: str, labels: Mapping[str, str] | None = None) -> ResticUpload:
        self._ensure_repository()
        tags = [OWN_TAG, f"tool={tag_value(f'db-backup {__version__}')}"]
        tags += [f"{key}={tag_value(value)}" for key, value in (labels or {}).items()]
        return ResticUpload(self, name, tags)

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        """Stale locks of dead restic processes, and the snapshots interrupted runs left (a
        dump without its manifest's), from a fresh listing (under the target's lock)."""
        unlocking = self.start("unlock")  # at once with the listing: each opens the key
        try:
            names = self._snapshots(fresh=True)
        except BaseException:
            unlocking.kill()
            raise
        try:
            unlocked = unlocking.wait(self.config.timeout) == 0
        except subprocess.TimeoutExpired:
            unlocking.kill()
            raise StorageError(f"{self.label}: restic unlock did not finish") from None
        if not unlocked:
            if not names and is_missing_repository(unlocking.stderr_tail()):
                return []  # nothing there yet (the first backup makes it, with `init: true`)
            raise self.failure(unlocking, "unlock")
        found = sorted(leftovers(names, file_prefixes))
        for name in found:
            self.delete(name)
        self.tidy()
        return [self.location(name) for name in found]


def _feed(child: BlockingChild, data: bytes) -> None:
    stdin = child.process.stdin
    assert stdin is not None
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):  # it failed: its exit says why
        stdin.write(data)
        stdin.close()


def _backup_arguments(name: str, tags: list[str]) -> list[str]:
    return [
        "backup",
        "--stdin",
        "--stdin-filename",
        name,
        "--host",
        HOST,
        "--tag",
        ",".join(tags),
        "--json",
        "--quiet",
    ]


class _NoRepositoryError(StorageError):
    """restic found no repository at the configured place."""


class DumpReader:
    """A snapshot's file as a stream (`restic dump`): its end is checked, so a restic that
    fails midway is an error, not a short file."""

    def __init__(self, store: ResticStore, child: BlockingChild) -> None:
        self._store = store
        self._child = child

    def read(self, size: int) -> bytes:
        data = self._child.stdout.read(size)
        if not data and self._child.wait(self._store.config.timeout) != 0:
            raise self._store.failure(self._child, "dump")
        return data


class ResticUpload:
    """One dump going into `restic backup --stdin`; see the module's docstring for how the
    commit rule holds. One writer thread (the pump's); `abort` may come from another thread
    at any time, also while `commit` waits for restic."""

    def __init__(self, store: ResticStore, name: str, tags: list[str]) -> None:
        self._store = store
        self._name = name
        self._lock = threading.Lock()
        self._state = "open"  # → committing → committed, or → aborted from any of them
        store._enter()
        try:
            self._child = store.start(*_backup_arguments(name, tags), stdin=True)
        except BaseException:
            store._leave()
            raise
        assert self._child.process.stdin is not None
        self._stdin = self._child.process.stdin
        self._left = False
        self.snapshot_id: str | None = None

    def write(self, data: bytes) -> None:
        if self._state != "open":
            raise StorageError(f"{self._store.label}: the upload of {self._name} was aborted")
        try:
            self._stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):  # restic exited (ValueError: closed)
            self.abort()  # reaps it: its stderr is then whole
            raise self._store.failure(self._child, "backup") from None

    def commit(self) -> None:
        """Close restic's stdin (only now, the dump being complete) and wait for its snapshot."""
        with self._lock:
            if self._state != "open":
                raise StorageError(f"{self._store.label}: the upload of {self._name} was aborted")
            self._state = "committing"
        try:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._stdin.close()
            code = self._child.wait(self._store.config.timeout)
        except subprocess.TimeoutExpired:
            with self._lock:
                self._state = "aborted"
            self._store.stop(self._child)
            late = (
                _snapshot_id(self._child.output()) if self._child.process.returncode == 0 else None
            )
            if late is not None:  # it finished as it was stopped: keep nothing
                self._store._doom({late: self._name})
            self._leave_once()
            raise StorageError(
                f"{self._store.label}: restic did not finish the snapshot of {self._name} "
                f"within {format_duration(self._store.config.timeout)}"
            ) from None
        made = _snapshot_id(self._child.output()) if code == 0 else None
        with self._lock:
            aborted = self._state == "aborted"  # while restic finished: keep nothing
            self._state = "aborted" if aborted or code != 0 else "committed"
            self.snapshot_id = None if aborted else made
        if aborted and made is not None:
            self._store._doom({made: self._name})
        if code != 0 or aborted:
            self._leave_once()
            raise (
                self._store.failure(self._child, "backup")
                if code != 0
                else StorageError(f"{self._store.label}: the upload of {self._name} was aborted")
            )
        self._store._record(self._name, made, None)
        self._leave_once()

    def abort(self) -> None:
        """Stop restic before it snapshots; a committed upload's snapshot is deleted (a
        cancelled job keeps nothing; forgotten when the store is next idle). Never raises."""
        with self._lock:
            was, self._state = self._state, "aborted"
        try:
            if was == "open":
                self._store.stop(self._child)
                with contextlib.suppress(OSError, ValueError):
                    self._stdin.close()
                self._leave_once()
            elif was == "committing":
                self._child.signal(signal.SIGINT)  # commit sees the state and keeps nothing
            elif was == "committed" and self.snapshot_id is not None:
                self._store._doom({self.snapshot_id: self._name})
                self.snapshot_id = None
        except Exception as exc:  # never raises: the job is ending anyway
            log.warning("%s: stopping the upload of %s: %s", self._store.label, self._name, exc)

    def _leave_once(self) -> None:
        with self._lock:
            if self._left:
                return
            self._left = True
        self._store._leave()


def _snapshot_id(output: bytes) -> str | None:
    """The snapshot restic reported in its JSON summary."""
    for line in reversed(output.splitlines()):
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("message_type") == "summary":
                found = message.get("snapshot_id")
                return found if isinstance(found, str) else None
    return None

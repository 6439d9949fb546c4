"""`db-backup restore`: one stored backup back into a database, streamed and checked.

Which backup: `choose` picks it from the catalog (the newest of a job, or the newest at or
before a time, or a named file; from a given target or the first that holds it), and the
globals of the same run when asked. Then `restore` streams it: target → size and sha256
checked on the fly → the inverse of every stage (unpack.py) → the engine's restore program.

Nothing half-done is left under the destination's name. A missing database, or one that
`--clean` replaces, is restored under a staging name and renamed into place only when the
restore succeeded (the old one is dropped just before); an existing empty database is
restored into directly, in one transaction. An engine that renames no database (MySQL)
restores a missing one directly, created here and dropped if the restore fails, and refuses
to replace one that holds data. When the stored bytes do not check out the program is
stopped before it sees the end of its input, so it commits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec

from db_backup import runtime
from db_backup.catalog import Archive
from db_backup.config.schema import BackupConfig, Config
from db_backup.errors import BackupError, RestoreError, RestoreRefusedError, SelectionError
from db_backup.integrity import ReadThrough, StreamCheck, Writer, pass_over
from db_backup.manifest import stages_of
from db_backup.model import JobKind
from db_backup.naming import globals_job_name, run_stamp_of
from db_backup.process import spawn
from db_backup.redact import redact
from db_backup.sources.base import DatabaseState, RestoreProgram, Source
from db_backup.stages.unpack import NO_IDENTITY, NO_KEYS, ReadingKeys, is_encrypted, unstaging
from db_backup.threads import in_thread

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5
# PostgreSQL cuts identifiers at 63 bytes: room for the suffix below.
_STAGING_KEEP = 40


@dataclass(frozen=True)
class OtherServer:
    """`--to-host` / `--to-port` / `--to-username` / `--to-password-file`: restore to a
    server other than the job's, without the job's password."""

    host: str | None = None
    port: int | None = None
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class RestoreRequest:
    """What the user asked for (the command's options)."""

    job: str
    database: str  # --to-database
    at: datetime | None = None
    file: str | None = None
    from_target: str | None = None
    other_server: OtherServer | None = None
    clean: bool = False
    with_globals: bool = False
    jobs: int = 1
    scratch: Path | None = None
    keys: ReadingKeys = NO_KEYS  # an identity for encrypted backups


@dataclass(frozen=True)
class RestorePlan:
    """What will be restored, from where, into what."""

    archive: Archive
    globals: Archive | None  # applied first (--with-globals), when the run saved them
    server: BackupConfig  # where to, with which credentials
    database: str
    clean: bool
    jobs: int
    scratch: Path | None
    notes: tuple[str, ...] = ()  # worth saying before it starts (e.g. no globals found)
    keys: ReadingKeys = NO_KEYS  # an identity for encrypted backups

    @property
    def where(self) -> str:
        host = self.server.host or "the local socket"
        return f"database {self.database!r} on {host}:{self.server.port}"


@dataclass
class RestoreOutcome:
    """What a restore did (for the report and `--json`)."""

    plan: RestorePlan
    state: DatabaseState  # what the destination was before
    seconds: float = 0.0
    stored_bytes: int = 0
    raw_bytes: int = 0
    steps: list[str] = field(default_factory=list)


def choose(config: Config, archives: Sequence[Archive], request: RestoreRequest) -> RestorePlan:
    """The backup (and globals) to restore, and where to: pure, from the catalog's archives.
    Raises SelectionError (a usage mistake) or RestoreError (nothing there to restore)."""
    by_name = {backup.name: backup for backup in config.backups}
    ours = [a for a in archives if a.job == request.job and a.record.kind == JobKind.DATABASE]
    if not ours:
        _no_such_job(config, archives, request.job)
    if request.from_target is not None:
        targets = sorted({a.target for a in ours})
        ours = [a for a in ours if a.target == request.from_target]
        if not ours:
            raise SelectionError(
                f"no backup of {request.job} on target {request.from_target!r}; "
                f"its backups are on: {', '.join(targets)}"
            )
    if request.file is not None:
        ours = [a for a in ours if request.file in (a.name, a.location)]
        if not ours:
            raise RestoreError(f"no backup of {request.job} is named {request.file!r} (see list)")
    if request.at is not None:
        ours = [a for a in ours if a.taken_at <= request.at]
        if not ours:
            raise RestoreError(
                f"no backup of {request.job} was taken at or before "
                f"{request.at.isoformat(timespec='seconds')}"
            )
    backup = by_name[ours[0].backup]
    order = [storage.label for storage in backup.targets]
    newest = max(a.taken_at for a in ours)
    archive = min(
        (a for a in ours if a.taken_at == newest),
        key=lambda a: order.index(a.target) if a.target in order else len(order),
    )
    notes: list[str] = []
    globals_archive = None
    if request.with_globals:
        globals_archive = globals_of(archive, archives, backup)
        if globals_archive is None:
            notes.append(
                f"no globals backup from the run of {archive.name} on {archive.target}: "
                "restoring without roles"
            )
    if request.jobs > 1 and is_encrypted(stages_of(archive.record)):
        where = request.scratch or "the temp folder"
        notes.append(
            f"-j {request.jobs}: the decrypted dump is staged in a private file under {where} "
            "(pg_restore must seek in it) and removed afterwards — not if this process is killed"
        )
    for chosen in (archive, globals_archive):
        encrypted = chosen is not None and is_encrypted(stages_of(chosen.record))
        if chosen is not None and encrypted and request.keys.identity_file is None:
            raise RestoreError(f"{chosen.location}: {NO_IDENTITY}; nothing was restored")
    return RestorePlan(
        archive=archive,
        globals=globals_archive,
        server=_server(backup, request.other_server),
        database=request.database,
        clean=request.clean,
        jobs=request.jobs,
        scratch=request.scratch,
        notes=tuple(notes),
        keys=request.keys,
    )


def _no_such_job(config: Config, archives: Sequence[Archive], job: str) -> None:
    wildcard = next((b for b in config.backups if b.name == job and b.is_wildcard), None)
    if wildcard is not None:
        jobs = sorted({a.job for a in archives if a.backup == job})
        raise SelectionError(
            f'{job} is a database: "*" backup; name one of its jobs: {", ".join(jobs) or "none"}'
        )
    if any(b.name == job for b in config.backups):
        raise RestoreError(f"no finished backup of {job} on any of its targets (see list)")
    known = sorted({a.job for a in archives if a.record.kind == JobKind.DATABASE})
    raise SelectionError(
        f"no job named {job!r} has backups; jobs with backups: {', '.join(known) or 'none'}"
    )


def globals_of(
    archive: Archive, archives: Sequence[Archive], backup: BackupConfig
) -> Archive | None:
    """The globals saved by the same run as `archive`, on the same target."""
    stamp = run_stamp_of(archive.name)
    return next(
        (
            a
            for a in archives
            if a.record.kind == JobKind.GLOBALS
            and a.job == globals_job_name(backup)
            and a.target == archive.target
            and run_stamp_of(a.name) == stamp
        ),
        None,
    )


def _server(backup: BackupConfig, other: OtherServer | None) -> BackupConfig:
    """The connection to restore through: the job's own, or another server's (then the
    job's password stays out of it: the environment, PGPASSFILE or a password file)."""
    if other is None:
        return backup
    return msgspec.structs.replace(
        backup,
        host=other.host if other.host is not None else backup.host,
        port=other.port if other.port is not None else backup.port,
        username=other.username if other.username is not None else backup.username,
        password=None,
        password_file=other.password_file,
    )


def staging_name(database: str) -> str:
    """A fresh name beside `database` to restore under before it takes the real name."""
    kept = database.encode()[:_STAGING_KEEP].decode(errors="ignore")
    return f"{kept}_restoring_{secrets.token_hex(4)}"


async def restore(plan: RestorePlan, on_progress: Callable[[int], None]) -> RestoreOutcome:
    """Restore as planned (see the module's docstring); `on_progress` hears the stored bytes
    read so far. Raises RestoreError (RestoreRefusedError before anything was changed)."""
    source = runtime.current().source(plan.server)
    state = await source.database_state(plan.server, plan.database)
    if state is DatabaseState.NOT_EMPTY and not plan.clean:
        raise RestoreRefusedError(
            f"{plan.where} exists and is not empty; nothing was changed. Add --clean to "
            "replace it (it is dropped only once the restore succeeded), or restore beside "
            "it with another --to-database"
        )
    if state is DatabaseState.NOT_EMPTY and not source.renames_databases:
        raise RestoreRefusedError(
            f"{plan.where} is not empty, and {source.name} cannot swap a restored copy in "
            "(it renames no database), so --clean would mean dropping it before the restore "
            "is known to succeed; nothing was changed. Restore into another --to-database, "
            "check it, then switch to it"
        )
    outcome = RestoreOutcome(plan, state)
    started = time.monotonic()
    if plan.globals is not None:
        await _apply(source, plan, plan.globals, plan.database)  # roles: server-wide
        outcome.steps.append(f"applied globals from {plan.globals.location}")
    staged = source.restore_needs_file(plan.archive.record, plan.jobs)
    if plan.jobs > 1 and not staged:
        outcome.steps.append(f"-j {plan.jobs} ignored: this dump restores as one stream")
    # Into the destination itself when it is empty, or missing and cannot be renamed into
    # place (then it is created here, and dropped again should the restore fail).
    direct = not staged and (
        state is DatabaseState.EMPTY
        or (state is DatabaseState.MISSING and not source.renames_databases)
    )
    into = plan.database if direct else staging_name(plan.database)
    created = into != plan.database or state is DatabaseState.MISSING
    if created:
        await source.create_database(plan.server, into)
    try:
        await _apply(source, plan, plan.archive, into, on_progress)
    except BaseException:
        if created:  # what this restore created goes; anything else was never touched
            await _drop_quietly(source, plan, into)
        raise
    if not direct:
        if state is not DatabaseState.MISSING:
            try:
                await source.drop_database(plan.server, plan.database)
            except RestoreError as exc:  # the old one stays as it was; the copy goes
                await _drop_quietly(source, plan, into)
                raise RestoreError(f"{exc}; {plan.database!r} was left as it was") from None
            outcome.steps.append(f"dropped the old {plan.database!r}")
        try:
            await source.rename_database(plan.server, into, plan.database)
        except RestoreError as exc:  # the restore itself succeeded: keep it, and say where
            raise RestoreError(
                f"{exc}; the restored copy is complete and kept as database {into!r}"
            ) from None
    outcome.steps.append(f"restored {plan.archive.location} into {plan.where}")
    outcome.seconds = time.monotonic() - started
    outcome.stored_bytes = plan.archive.stored_bytes
    outcome.raw_bytes = plan.archive.raw_bytes
    return outcome


async def _drop_quietly(source: Source, plan: RestorePlan, staging: str) -> None:
    """Drop a staging database (also while being cancelled); a failure is a warning."""
    try:
        await asyncio.shield(source.drop_database(plan.server, staging))
    except BackupError as exc:
        log.warning("could not drop the staging database %r (drop it by hand): %s", staging, exc)


async def _apply(
    source: Source,
    plan: RestorePlan,
    archive: Archive,
    database: str,
    on_progress: Callable[[int], None] = lambda _: None,
) -> None:
    """Stream one archive into `database` through the engine's restore program (staged in
    a private file first when the program must seek in it)."""
    record = archive.record
    if source.restore_needs_file(record, plan.jobs):
        with _scratch_folder(plan.scratch) as folder:
            staged = folder / "dump"
            try:
                with staged.open("xb") as file:
                    os.fchmod(file.fileno(), 0o600)
                    await _read_back(archive, file, on_progress, plan.keys)
            except OSError as exc:
                raise RestoreError(
                    f"staging {archive.location} in {folder}: {exc.strerror or exc} "
                    "(--scratch chooses another folder); nothing was restored"
                ) from None
            program = await source.restore_program(
                plan.server, database, record, jobs=plan.jobs, file=staged
            )
            await _run(program, archive, None, on_progress, plan.keys)
        return
    program = await source.restore_program(plan.server, database, record, jobs=1, file=None)
    await _run(program, archive, archive, on_progress, plan.keys)


async def _run(
    program: RestoreProgram,
    archive: Archive,
    feed: Archive | None,
    on_progress: Callable[[int], None],
    keys: ReadingKeys,
) -> None:
    """Run the restore program, feeding it `feed` (or nothing: it reads a staged file)."""
    errors: list[str] = []

    def judge(line: str) -> None:
        marker = program.error_marker
        if marker and marker in line and not any(t in line for t in program.tolerated):
            errors.append(redact(line, program.secret))

    def failure(code: int, stderr_tail: str) -> BackupError:
        return RestoreError(
            f"{program.program} exited with code {code} restoring {archive.location}: "
            f"{redact(stderr_tail, program.secret) or 'no message'}; nothing was committed"
        )

    async with spawn(
        program.argv,
        program.env,
        capture_stdout=False,
        feed_stdin=feed is not None,
        on_stderr=judge,
        inherited_file=program.inherited_file,
    ) as child:
        reader = ReadThrough(child, failure)
        if feed is not None:
            held = _HoldingBack(reader)
            await _read_back(feed, held, on_progress, keys)
            held.release()  # only now, checked, may the program see the dump's last bytes
        await reader.finish()
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RestoreError(
            f"{program.program} reported {errors[0]}{more} restoring {archive.location}"
        )


class _HoldingBack:
    """Passes bytes on one write late, so the last ones wait for `release()`: a program that
    knows where its input ends (pg_restore reads a custom-format dump's table of contents)
    could otherwise commit before the stored bytes' sha256 was checked."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._held = b""

    def write(self, data: bytes) -> None:
        if self._held:
            self._writer.write(self._held)
        self._held = data

    def release(self) -> None:
        if self._held:
            self._writer.write(self._held)
            self._held = b""


async def _read_back(
    archive: Archive,
    writer: Writer,
    on_progress: Callable[[int], None],
    keys: ReadingKeys,
) -> None:
    """The archive's stored bytes, checked against its manifest as they pass, undone stage by
    stage into `writer`; raises RestoreError if they do not check out."""
    loop = asyncio.get_running_loop()
    done, last_report = 0, 0.0

    def read(count: int) -> None:  # on the reading thread
        nonlocal done, last_report
        done += count
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            loop.call_soon_threadsafe(on_progress, done)

    async with unstaging(stages_of(archive.record), keys) as undoing:
        check = StreamCheck(undoing, writer)
        # Read to the end even if the program stopped reading: the check decides, not its exit.
        await in_thread(pass_over, archive.store, archive.name, check, read)
    on_progress(done)
    problem = check.unstaging.error or check.against(archive.record)
    if problem is not None:
        raise RestoreError(f"{archive.location}: {problem}; nothing was restored")


@contextlib.contextmanager
def _scratch_folder(parent: Path | None) -> Iterator[Path]:
    """A private (0700) folder for a staged dump, removed afterwards whatever happens."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="db-backup-restore-", dir=parent))
    except OSError as exc:
        raise RestoreError(f"--scratch {parent}: {exc.strerror or exc}") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

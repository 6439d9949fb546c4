"""`db-backup verify --restore`: proof by restoring. Each chosen backup is restored into a
sandbox and checked against what its manifest recorded when it was made (sources/ count rows
per table, sequences and large objects as the dump streams past): every table there with
exactly its rows, every sequence at its value, every large object.

The sandbox is a throwaway server of the backup's engine (one per engine and verify run,
removed afterwards whatever happens), or a configured scratch server on which each test gets
a database of its own, dropped afterwards. The outcome is written beside the backup on every
target that holds the same bytes (`<file>.verify.json`, manifest.RestoreTest); `list` shows it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from db_backup import manifest, runtime
from db_backup.catalog import Archive
from db_backup.config.schema import BackupConfig, Config, SandboxConfig
from db_backup.errors import BackupError, StorageError
from db_backup.manifest import Contents, RestoreTest
from db_backup.model import JobKind
from db_backup.naming import restore_test_name
from db_backup.restore import RestorePlan, globals_of, restore
from db_backup.sources import source_named
from db_backup.sources.base import Sandbox, Source
from db_backup.stages.unpack import NO_KEYS, ReadingKeys
from db_backup.threads import in_thread


@dataclass
class RestoreTestResult:
    """One backup's restore test, as `verify --restore` reports it."""

    archive: Archive
    sandbox: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unrecorded: dict[str, str] = field(default_factory=dict)  # target → why not recorded
    # Retention removed the backup while it was being tested (serve runs both at once):
    # nothing to record, and no failure — the backup is gone by design, not broken.
    removed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems or self.removed


def chosen(archives: Sequence[Archive], *, every: bool) -> list[Archive]:
    """The backups to test: each job's newest (every one with `every`), each once however
    many targets hold it — the first in the catalog's order."""
    seen: set[tuple[str, str]] = set()
    newest: set[str] = set()
    picked = []
    for archive in sorted(archives, key=lambda a: a.taken_at, reverse=True):
        if archive.record.kind != JobKind.DATABASE or (archive.job, archive.sha256) in seen:
            continue
        if not every and archive.job in newest:
            continue
        seen.add((archive.job, archive.sha256))
        newest.add(archive.job)
        picked.append(archive)
    return picked


def compare(expected: Contents, found: Contents) -> tuple[list[str], list[str]]:
    """(problems, what held): every table with its recorded rows, every sequence at its
    recorded value, as many large objects."""
    problems = []
    for table, rows in expected.tables.items():
        restored = found.tables.get(table)
        if restored is None:
            problems.append(f"{table}: {rows} rows recorded, the table is missing")
        elif restored != rows:
            problems.append(f"{table}: {rows} rows recorded, {restored} restored")
    for sequence, value in expected.sequences.items():
        now = found.sequences.get(sequence)
        if now is None:
            problems.append(f"sequence {sequence}: missing")
        elif now != value:
            problems.append(f"sequence {sequence}: {value[0]} recorded, {now[0]} restored")
    if found.large_objects != expected.large_objects:
        problems.append(
            f"large objects: {expected.large_objects} recorded, {found.large_objects} restored"
        )
    rows = sum(expected.tables.values())
    checked = [
        f"{len(expected.tables)} tables, {rows} rows, {len(expected.sequences)} sequences, "
        f"{expected.large_objects} large objects as recorded"
    ]
    return problems, checked


def _major(version: str) -> int:
    """The leading number of a version string ("15.18 (Debian …)" → 15)."""
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


class _Sandboxes:
    """One sandbox per engine for a verify run, started when first needed: a throwaway
    server, or the configured scratch server."""

    def __init__(self, stack: contextlib.AsyncExitStack, configured: SandboxConfig | None) -> None:
        self._stack = stack
        self._configured = configured
        self._started: dict[str, Sandbox] = {}

    async def for_engine(self, engine: str, template: BackupConfig) -> Sandbox:
        if engine not in self._started:
            source = source_named(engine)
            if self._configured is None:
                sandbox = await self._stack.enter_async_context(source.sandbox(template))
            else:
                sandbox = await _scratch_server(source, template, self._configured)
            self._started[engine] = sandbox
        return self._started[engine]


async def _scratch_server(
    source: Source, template: BackupConfig, scratch: SandboxConfig
) -> Sandbox:
    """The configured server, with the backup's other connection settings."""
    server = msgspec.structs.replace(
        template,
        host=scratch.host,
        port=scratch.port,
        username=scratch.username,
        password=scratch.password,
        password_file=scratch.password_file,
    )
    # A scratch server holds none of the jobs' databases: probe it server-wide, as for a
    # `database: "*"` backup.
    everywhere = msgspec.structs.replace(server, database="*")
    info = await source.probe(server, source.maintenance_database(everywhere))
    where = f"{scratch.host or 'local'}:{scratch.port}"
    return Sandbox(server, f"scratch server {where}", info.version, scratch=True)


async def prove_restores(
    config: Config,
    archives: Sequence[Archive],
    catalog: Sequence[Archive],
    on_result: Callable[[RestoreTestResult], None],
    keys: ReadingKeys = NO_KEYS,
) -> list[RestoreTestResult]:
    """Restore-test each of `archives` in turn (`catalog`: every archive, for globals and
    for the other copies of each); `on_result` hears each as it finishes; `keys` decrypt
    encrypted backups."""
    backups = {backup.name: backup for backup in config.backups}
    results = []
    async with contextlib.AsyncExitStack() as stack:
        sandboxes = _Sandboxes(stack, config.verify.sandbox)
        for archive in archives:
            template = backups[archive.backup]
            result = RestoreTestResult(archive)
            started = time.monotonic()
            try:
                sandbox = await sandboxes.for_engine(archive.record.engine, template)
                result.sandbox = sandbox.description
                await _test_one(archive, catalog, template, sandbox, result, keys)
            except BackupError as exc:
                result.problems.append(str(exc))
            result.seconds = time.monotonic() - started
            if result.problems and not await _still_there(archive):
                result.removed = True
            else:
                await _record(result, catalog)
            on_result(result)
            results.append(result)
    return results


async def _test_one(
    archive: Archive,
    catalog: Sequence[Archive],
    template: BackupConfig,
    sandbox: Sandbox,
    result: RestoreTestResult,
    keys: ReadingKeys,
) -> None:
    record = archive.record
    if _major(sandbox.version) < _major(record.server_version):
        result.problems.append(
            f"the sandbox ({sandbox.description}) is older than the server the dump came "
            f"from ({record.server_version}): install that version's server binaries"
        )
        return
    source = source_named(record.engine)
    database = f"db_backup_test_{secrets.token_hex(6)}"
    plan = RestorePlan(
        archive=archive,
        # Roles are server-wide: a scratch server keeps its own (see SandboxConfig).
        globals=None if sandbox.scratch else globals_of(archive, catalog, template),
        server=sandbox.server,
        database=database,
        clean=False,
        jobs=1,
        scratch=None,
        keys=keys,
    )
    async with _dropped_afterwards(source, sandbox.server, database):
        await restore(plan, lambda _: None)
        if plan.globals is not None:
            result.checked.append("globals applied first")
        if record.contents is None:
            result.checked.append("restored without an error (no row counts in its manifest)")
            return
        found = await source.count_contents(sandbox.server, database, record.contents)
    problems, checked = compare(record.contents, found)
    result.problems += problems
    if not problems:
        result.checked += ["restored without an error", *checked]


@contextlib.asynccontextmanager
async def _dropped_afterwards(
    source: Source, server: BackupConfig, database: str
) -> AsyncIterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(BackupError):
            await source.drop_database(server, database)


async def _still_there(archive: Archive) -> bool:
    try:
        return bool(await in_thread(archive.store.exists, archive.name))
    except StorageError:
        return True  # cannot tell: let the failure stand


async def _record(result: RestoreTestResult, catalog: Sequence[Archive]) -> None:
    """Write the outcome beside every copy of the tested bytes (same job, same sha256)."""
    archive = result.archive
    record = RestoreTest(
        file=archive.name,
        sha256=archive.sha256,
        tested_at=runtime.current().now(),
        sandbox=result.sandbox or "none (it could not start)",
        duration_seconds=round(result.seconds, 3),
        ok=result.ok,
        problems=tuple(result.problems),
        checked=tuple(result.checked),
    )
    for copy in catalog:
        if (copy.job, copy.sha256) == (archive.job, archive.sha256):
            data = manifest.encode(msgspec.structs.replace(record, file=copy.name))
            try:
                await in_thread(copy.store.put, restore_test_name(copy.name), data)
            except StorageError as exc:
                result.unrecorded[copy.target] = str(exc)

"""One job, start to finish: check → dump → compress → every target → commit → manifests.

The engine (sources/) says what to run and how completeness is told; this module names none.
A backup is committed only when the dump program exited 0 and its output is complete (it ends
with the engine's completion marker, or a reader takes the dump's bytes through as they go
by); in every other case (error, timeout, cancellation) the child is stopped and every
upload aborted, and the error propagates for the orchestrator to record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from db_backup import __version__, catalog, integrity, manifest, prune, runtime
from db_backup.delivery import (
    Delivery,
    abort_all,
    commit_all,
    deliver_all,
    open_uploads,
    targets_failed,
)
from db_backup.errors import DumpError, JobTimeoutError, StorageError
from db_backup.manifest import CompressionInfo, Manifest
from db_backup.model import (
    JobEvent,
    JobProgress,
    JobSpec,
    JobStarted,
    StoredCopy,
)
from db_backup.notice import waiting_notice
from db_backup.process import spawn
from db_backup.pump import pump
from db_backup.redact import redact
from db_backup.sources.base import Dump, ServerInfo
from db_backup.stages import Pipeline
from db_backup.stages.compress import compressor_for
from db_backup.stages.encrypt import encrypting, find_age
from db_backup.stages.unpack import is_encrypted
from db_backup.threads import in_thread
from db_backup.units import format_duration

Emit = Callable[[JobEvent], None]


@dataclass(frozen=True)
class Committed:
    """What a job that stored its backup produced: the manifest, a copy on each target that
    took it, and the targets that did not (label, why) — by the commit rule the job then
    failed, but the copies it made are kept and reported."""

    manifest: Manifest
    copies: tuple[StoredCopy, ...]
    failed_targets: tuple[tuple[str, str], ...] = ()


async def run_job(job: JobSpec, emit: Emit, *, cores: int = 1) -> Committed:
    """Run one job. Returns what was stored, with the targets that failed if some did; raises
    a BackupError (or CancelledError) when nothing was stored (TargetsFailedError when every
    target failed).

    `cores`: the CPU cores this job may use for compression, by default."""
    timeout = job.backup.timeout
    try:
        async with asyncio.timeout(timeout):
            return await _run(job, emit, cores)
    except TimeoutError:
        assert timeout is not None
        raise JobTimeoutError(
            f"timed out after {format_duration(timeout)} (timeout: {timeout:g}s); "
            "the dump was stopped and nothing was kept"
        ) from None


async def _run(job: JobSpec, emit: Emit, cores: int) -> Committed:
    """The commit rule: the job succeeds only if every target committed. A target that fails
    is dropped and the others carry on, so the backup is kept wherever it could be; the job
    then fails naming each failed target. Retention runs on a target only after the backup
    committed there, so a failing target never deletes anything, anywhere."""
    deliveries = [Delivery(target) for target in job.targets]
    for delivery in deliveries:
        delivery.error = dict(job.unusable).get(delivery.target.label)
    if not any(d.error is None for d in deliveries):
        raise targets_failed(deliveries)
    if job.backup.encryption is not None:
        find_age()  # no age, no backup: say so before touching the server
    run = runtime.current()
    source = run.source(job.backup)
    async with waiting_notice(emit, f"{job.name}: connecting to {job.server}", job):
        server = await source.probe(job.backup, job.database)
        dump = await source.dump(job, server)
    emit(JobStarted(job, await in_thread(_estimate, job, dump.expected_bytes)))

    started = run.now()
    pipeline = await _dump(job, dump, deliveries, emit, cores)
    record = _manifest(job, source.name, server, dump, pipeline, started, run.now())
    async with waiting_notice(emit, f"{job.name}: writing manifests, applying retention", job):
        finishing = (
            _finish_target(job, d, _raw_manifest(record, pipeline) if d.takes_raw else record)
            for d in deliveries
            if d.live
        )
        copies = await asyncio.gather(*finishing)
    stored = tuple(copy for copy in copies if copy is not None)
    if not stored:
        raise targets_failed(deliveries)
    failed = tuple((d.target.label, d.error) for d in deliveries if d.error is not None)
    return Committed(record, stored, failed)


async def _finish_target(job: JobSpec, delivery: Delivery, record: Manifest) -> StoredCopy | None:
    """Upload the manifest (last: only now is the file a backup), then apply retention."""
    target = delivery.target
    store = runtime.current().store(target.storage)
    own = msgspec.structs.replace(record, file=target.filename)
    try:
        await in_thread(store.put, target.manifest_name, manifest.encode(own))
    except StorageError as exc:
        delivery.error = f"{exc} (the dump was stored without it and is removed)"
        with contextlib.suppress(StorageError):
            await in_thread(store.delete, target.filename)
        return None
    # Only now, with this backup committed here, may older ones here go.
    await in_thread(prune.prune_job, job, target, runtime.current().now())
    try:
        still_there = await in_thread(store.exists, target.filename)
    except StorageError as exc:
        still_there, delivery.error = False, f"cannot confirm it was stored: {exc}"
    if not still_there:  # never "succeeded" for a file that is not there
        delivery.error = delivery.error or f"{store.location(target.filename)} is gone"
        return None
    return StoredCopy(
        target.label, store.location(target.filename), store.location(target.manifest_name)
    )


async def _dump(
    job: JobSpec,
    dump: Dump,
    deliveries: Sequence[Delivery],
    emit: Emit,
    cores: int,
) -> Pipeline:
    """Stream the dump through the pipeline to every target at once (no second dump, no
    local copy first); commit only a complete dump, and only where nothing failed."""
    raw_targets = [d.takes_raw for d in deliveries if d.error is None]
    # Only targets that take the dump as it is (restic): no stage to run at all, and the
    # stored bytes' checksum is the raw bytes'.
    staged = not all(raw_targets)
    hash_raw = staged and any(raw_targets)
    compressor = compressor_for(
        job.backup.compression,
        dump_compresses_itself=dump.compression is not None or not staged,
        cores_per_job=cores,
    )
    pipeline = Pipeline(compressor, hash_raw=hash_raw)
    try:
        # Before spawning: an unwritable target fails without touching the server.
        async with waiting_notice(emit, f"{job.name}: starting uploads", job):
            await open_uploads(deliveries, _labels(job))
        if not any(d.live for d in deliveries):
            raise targets_failed(deliveries)
        async with contextlib.AsyncExitStack() as stack:
            if staged and job.backup.encryption is not None:  # the plaintext goes to `age`
                encryption = job.backup.encryption.recipients
                pipeline = Pipeline(
                    compressor,
                    await stack.enter_async_context(encrypting(encryption)),
                    hash_raw=hash_raw,
                )
            check = None
            if dump.reader_argv is not None:  # no end marker: read it through instead
                check = await stack.enter_async_context(
                    integrity.read_through(dump.reader_argv, dump.completion, dump.counter)
                )
            child = await stack.enter_async_context(
                spawn(dump.argv, dump.env, inherited_file=dump.inherited_file)
            )
            await pump(
                child,
                pipeline,
                deliveries,
                check,
                lambda: emit(_progress(job, pipeline)),
                dump.counter if check is None else None,
            )
            exit_code = await child.wait()
            stderr_tail = redact(child.stderr_tail(), dump.secret)
            _check_outcome(dump, exit_code, stderr_tail, pipeline)
            rest = await in_thread(pipeline.finish)
            await in_thread(deliver_all, deliveries, rest)
            if check is not None:
                await check.finish()
        async with waiting_notice(emit, f"{job.name}: committing", job):
            await commit_all(deliveries)
        return pipeline
    except BaseException:
        await asyncio.shield(abort_all(deliveries))
        raise
    finally:
        pipeline.close()


def _labels(job: JobSpec) -> dict[str, str]:
    """What a target that keeps labels (restic's tags) learns of the job's file."""
    return {
        "job": job.name,
        "backup": job.backup.name,
        "database": job.database,
        "kind": job.kind.value,
    }


def _raw_manifest(record: Manifest, pipeline: Pipeline) -> Manifest:
    """The manifest of the dump as the program wrote it, for targets that take it so."""
    if not record.stages:
        return record  # nothing was staged: the stored bytes are the raw ones
    return msgspec.structs.replace(
        record,
        compression=CompressionInfo(algorithm="none", level=None),
        stored_bytes=pipeline.raw_bytes,
        sha256=pipeline.raw_sha256,
        stages=(),
        encryption=None,
    )


def _progress(job: JobSpec, pipeline: Pipeline) -> JobProgress:
    return JobProgress(job, pipeline.raw_bytes, pipeline.stored_bytes)


def _check_outcome(dump: Dump, exit_code: int, stderr_tail: str, pipeline: Pipeline) -> None:
    """Raise DumpError unless the dump program succeeded and its output is complete."""
    if exit_code > 0:
        reason = f"{dump.program} exited with code {exit_code}"
    elif exit_code < 0:
        reason = f"{dump.program} was killed by signal {-exit_code}"
    elif not dump.completion.ends_whole(pipeline.raw_tail):
        reason = (
            f"{dump.program} exited 0 but its output ends without the completion marker "
            f"(truncated after {pipeline.raw_bytes} bytes)"
        )
    else:
        return
    raise DumpError(reason, exit_code=exit_code, stderr_tail=stderr_tail)


def _manifest(
    job: JobSpec,
    engine: str,
    server: ServerInfo,
    dump: Dump,
    pipeline: Pipeline,
    started: datetime,
    finished: datetime,
) -> Manifest:
    return Manifest(
        tool_version=__version__,
        engine=engine,
        job=job.name,
        backup=job.backup.name,
        kind=job.kind.value,
        database=job.database,
        server=str(job.server),
        server_version=server.version,
        client=dump.client,
        format=dump.format,
        compression=dump.compression or pipeline.compression,
        file=job.filename,  # each target's manifest names its own file (_finish_target)
        raw_bytes=pipeline.raw_bytes,
        stored_bytes=pipeline.stored_bytes,
        sha256=pipeline.sha256,
        started_at=started,
        finished_at=finished,
        duration_seconds=round((finished - started).total_seconds(), 3),
        checks=("sha256", dump.completion.check),
        stages=pipeline.records,
        contents=dump.counter.contents() if dump.counter else None,
        encryption="age" if is_encrypted(pipeline.records) else None,
    )


def _estimate(job: JobSpec, expected: int | None) -> int | None:
    """Expected bytes of dump output: the previous backup's, else what the engine expects."""
    unusable = dict(job.unusable)
    usable = [target for target in job.targets if target.label not in unusable]
    try:
        previous = catalog.latest(usable[0], job.name, job.backup.name) if usable else None
    except StorageError:
        previous = None  # only an estimate; the upload will say what is wrong
    return previous.raw_bytes if previous is not None else expected

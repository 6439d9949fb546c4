"""The fan-out: one dump, every target at once. Each target of a running job is a Delivery
(its upload, and how it ended); a target that fails is dropped and the others carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from db_backup import runtime
from db_backup.errors import StorageError, TargetsFailedError
from db_backup.model import Target
from db_backup.storage import Upload
from db_backup.threads import in_thread, start_in_thread, submit


@dataclass
class Delivery:
    """One target of a running job: its store, the upload in progress, and how it ended."""

    target: Target
    upload: Upload | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.upload is not None and self.error is None

    @property
    def takes_raw(self) -> bool:
        """Handed the dump as the program wrote it, not the stored stream (restic)."""
        return self.target.storage.takes_raw

    def fail(self, error: StorageError) -> None:
        """Drop this target from the job: the others go on (the commit rule, job.py)."""
        self.error = str(error)
        if self.upload is not None:
            self.upload.abort()


def targets_failed(deliveries: Sequence[Delivery]) -> TargetsFailedError:
    """The error for a job none of whose targets took the backup."""
    return TargetsFailedError({d.target.label: d.error for d in deliveries if d.error})


async def open_uploads(deliveries: Sequence[Delivery], labels: Mapping[str, str]) -> None:
    """Start an upload on every usable target, at once; a target that refuses is dropped.
    `labels` describe the job to targets that keep such things (see Store.open_upload)."""

    async def one(delivery: Delivery) -> None:
        store = runtime.current().store(delivery.target.storage)
        opening = start_in_thread(store.open_upload, delivery.target.filename, labels)
        try:
            delivery.upload = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_abort_when_open)  # the thread goes on opening it
            raise
        except StorageError as exc:
            delivery.error = str(exc)

    await asyncio.gather(*(one(d) for d in deliveries if d.error is None))


def _abort_when_open(opening: asyncio.Future[Upload]) -> None:
    """An upload that finished opening after its job was cancelled: abort it (a restic
    child or a multipart upload must not outlive the job)."""
    if not opening.cancelled() and opening.exception() is None:
        submit(opening.result().abort)


def deliver_all(deliveries: Sequence[Delivery], stored: bytes, raw: bytes = b"") -> None:
    """Hand bytes to every live target (on the pump thread): the stored stream, or the raw
    one to a target that takes it; none left: stop the dump."""
    if not stored and not raw:
        return
    for delivery in deliveries:
        data = raw if delivery.takes_raw else stored
        if delivery.live and data:
            assert delivery.upload is not None
            try:
                delivery.upload.write(data)
            except StorageError as exc:
                delivery.fail(exc)
    if not any(d.live for d in deliveries):
        raise targets_failed(deliveries)


async def commit_all(deliveries: Sequence[Delivery]) -> None:
    """Commit every live upload at once; a target that refuses is dropped (none left: raise)."""

    async def one(delivery: Delivery) -> None:
        assert delivery.upload is not None
        try:
            await in_thread(delivery.upload.commit)
        except StorageError as exc:
            await in_thread(delivery.fail, exc)

    await asyncio.gather(*(one(d) for d in deliveries if d.live))
    if not any(d.live for d in deliveries):
        raise targets_failed(deliveries)


async def abort_all(deliveries: Sequence[Delivery]) -> None:
    """Abort every upload (also a committed one: a cancelled job keeps nothing)."""
    await asyncio.gather(*(in_thread(d.upload.abort) for d in deliveries if d.upload is not None))

"""The fan-out: one dump, every target at once. Each target of a running job is a Delivery
(its upload, and how it ended); a target that fails is dropped and the others carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from db_backup import runtime
from db_backup.errors import StorageError, TargetsFailedError
from db_backup.model import Target
from db_backup.storage import Upload
from db_backup.threads import in_thread


@dataclass
class Delivery:
    """One target of a running job: its store, the upload in progress, and how it ended."""

    target: Target
    upload: Upload | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        return self.upload is not None and self.error is None

    def fail(self, error: StorageError) -> None:
        """Drop this target from the job: the others go on (the commit rule, job.py)."""
        self.error = str(error)
        if self.upload is not None:
            self.upload.abort()


def targets_failed(deliveries: Sequence[Delivery]) -> TargetsFailedError:
    """The error for a job none of whose targets took the backup."""
    return TargetsFailedError({d.target.label: d.error for d in deliveries if d.error})


async def open_uploads(deliveries: Sequence[Delivery]) -> None:
    """Start an upload on every usable target, at once; a target that refuses is dropped."""

    async def one(delivery: Delivery) -> None:
        store = runtime.current().store(delivery.target.storage)
        try:
            delivery.upload = await in_thread(store.open_upload, delivery.target.filename)
        except StorageError as exc:
            delivery.error = str(exc)

    await asyncio.gather(*(one(d) for d in deliveries if d.error is None))


def deliver_all(deliveries: Sequence[Delivery], data: bytes) -> None:
    """Hand stored bytes to every live target (on the pump thread); none left: stop the dump."""
    if not data:
        return
    for delivery in deliveries:
        if delivery.live:
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

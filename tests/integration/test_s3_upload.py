"""The S3 upload itself, against the real SeaweedFS: back-pressure, checksums, abort."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from db_backup.config.schema import ByteSize, S3Storage
from db_backup.errors import StorageError
from db_backup.storage import s3 as s3_module
from db_backup.storage.s3 import S3Store
from tests.seaweed import SeaweedServer
from tests.waiting import wait_for

PART = 5 * 1024 * 1024


def store_on(server: SeaweedServer, prefix: str, **settings: Any) -> S3Store:
    return S3Store(
        S3Storage(
            bucket=server.bucket,
            prefix=prefix,
            endpoint_url=server.endpoint,
            path_style=True,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            part_size=ByteSize(PART),
            **settings,
        )
    )


@pytest.fixture
def paused(s3: SeaweedServer) -> Iterator[Any]:
    """`pause()` stops the server's process (SIGSTOP: it accepts nothing, answers nothing);
    it is always continued when the test ends."""
    assert s3.process is not None
    group = s3.process.pid

    def pause() -> None:
        os.killpg(group, signal.SIGSTOP)

    yield pause
    os.killpg(group, signal.SIGCONT)


def test_a_stalled_server_blocks_the_writer_once_upload_concurrency_parts_are_out(
    s3: SeaweedServer, paused: Any
) -> None:
    store = store_on(s3, "pressure", upload_concurrency=2)
    upload = store.open_upload("stream.bin")
    parts = [os.urandom(PART) for _ in range(5)]
    written: list[int] = []

    def writer() -> None:
        for number, part in enumerate(parts):
            upload.write(part)
            written.append(number)

    paused()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    # Parts 1 and 2 are handed to the uploaders (which hang on the stopped server); writing
    # part 3 completes it in the buffer, and sending it must wait for a free slot.
    wait_for(lambda: len(written) == 2, what="two parts handed out")
    # A negative check: for a while, with the server stopped, no further write returns and
    # no more than the parts in flight plus the one being sent are held.
    watch_until = time.monotonic() + 1.0
    while time.monotonic() < watch_until:
        assert len(written) == 2
        assert thread.is_alive()
    os.killpg(s3.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
    thread.join(timeout=120)
    assert written == [0, 1, 2, 3, 4]
    upload.commit()

    key = store.key("stream.bin")
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()


def test_the_server_rejects_a_part_whose_checksum_does_not_match_and_nothing_is_left(
    s3: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checksums travel with every part and the server checks them: a part that changed in
    transit (simulated: the checksum of other bytes) fails, the upload is aborted."""
    store = store_on(s3, "checksums")
    honest = s3_module._sha256_b64
    monkeypatch.setattr(s3_module, "_sha256_b64", lambda data: honest(b"other bytes"))
    upload = store.open_upload("damaged.bin")
    upload.write(os.urandom(PART + 1))
    with pytest.raises(StorageError, match=r"uploading part 1 of s3://.*: BadDigest"):
        upload.commit()
    upload.abort()
    assert s3.objects("checksums/") == []
    assert s3.incomplete_uploads("checksums/") == []


def test_checksums_of_the_parts_are_recorded_by_the_server(s3: SeaweedServer) -> None:
    store = store_on(s3, "recorded")
    upload = store.open_upload("whole.bin")
    data = os.urandom(PART + 1000)
    upload.write(data)
    upload.commit()
    # The object's parts were sent with x-amz-checksum-sha256; the server kept a checksum.
    head = s3.client().head_object(
        Bucket=s3.bucket, Key=store.key("whole.bin"), ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] == len(data)
    assert head.get("ChecksumSHA256"), head


def test_parts_double_in_size_every_step_and_the_object_is_whole(
    s3: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past every PARTS_PER_SIZE_STEP parts the part size doubles (so 10,000 parts reach
    far): here every 2 parts, so 40 MiB go as 5 + 5 + 10 + 10 + 10 (the last, short one)."""
    monkeypatch.setattr(s3_module, "PARTS_PER_SIZE_STEP", 2)
    store = store_on(s3, "growing")
    upload = store.open_upload("grown.bin")
    data = os.urandom(40 * 1024 * 1024)
    for start in range(0, len(data), 1024 * 1024):
        upload.write(data[start : start + 1024 * 1024])
    upload.commit()
    head = s3.client().head_object(Bucket=s3.bucket, Key=store.key("grown.bin"))
    assert head["ETag"].strip('"').endswith("-5")  # a multipart ETag ends in -<parts>
    body = s3.client().get_object(Bucket=s3.bucket, Key=store.key("grown.bin"))["Body"].read()
    assert body == data

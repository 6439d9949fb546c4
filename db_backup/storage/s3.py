"""An S3 bucket (AWS or an S3-compatible server) as a backup target, through botocore.

A dump goes up as a multipart upload fed straight from the job's pump thread: bytes collect
into one part (`part_size`), full parts go to a small pool of uploader threads, and at most
`upload_concurrency` parts' worth of bytes are in flight — a slow server blocks the pump
(back-pressure) instead of growing memory, which stays near (upload_concurrency + 2) x
part_size per upload. S3 allows 10,000 parts, so past every 1,000 parts the part size doubles
(8 MiB parts: 8 GB in the first 1,000, ~8 TB in all) and fewer parts go at once, up to
one: memory grows only with the part size a dump that large needs. Every part carries its SHA-256
(x-amz-checksum-sha256), which the server checks. The object exists only after
CompleteMultipartUpload; any failure aborts the upload, and uploads a killed run could not
abort are found and aborted by the next run of that job (ListMultipartUploads), or by `prune`.

botocore rather than obstore: cleaning up after a crash needs ListMultipartUploads and
AbortMultipartUpload by upload ID, which obstore does not expose; botocore also brings the
standard credential chain (AWS_* variables, profiles, instance roles). It is imported only
when a config has an S3 target.

(Over 400 lines on purpose: the store and its uploads share one client, one translation of
botocore's errors and the memory of an endpoint that went silent; apart, each would reach
into the other.)
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db_backup import threads
from db_backup.config.schema import S3Storage
from db_backup.errors import StorageError, TargetUnreachableError
from db_backup.naming import is_own_file, leftovers
from db_backup.redact import remember

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
# After a request got no answer, the endpoint is not asked again for this long: the jobs
# queued behind the first fail that target at once instead of each waiting out the same
# silence. Long enough for one run; a resident process asks again later.
UNREACHABLE_MEMORY_SECONDS = 300.0
# How long a failed or cancelled upload waits for its AbortMultipartUpload; past that it is
# left to the next run of the job, which removes it (a stopping run must not wait).
ABORT_WAIT_SECONDS = 2.0
PARTS_PER_SIZE_STEP = 1_000
_REFUSED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"})
# Error codes whose meaning is worth spelling out for the person reading the message.
_HINTS = {
    "InvalidAccessKeyId": "the access key is not known to the server (wrong credentials?)",
    "SignatureDoesNotMatch": "the secret key does not match the access key (wrong credentials?)",
    "AccessDenied": "these credentials may not do this",
    "NoSuchBucket": "the bucket does not exist",
}


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _describe(exc: Exception) -> str:
    """botocore's error as one line: the code, the server's message, and a hint."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message") or ""
        hint = _HINTS.get(code)
        text = f"{code}: {message}".strip(": ")
        return f"{text} — {hint}" if hint else text
    return str(exc)


def _make_client(config: S3Storage, *, for_leases: bool = False) -> Any:
    """The bucket's client. `for_leases`: quicker to give up (leasing.py): a lease write
    answered late could land after its runner gave the lease up."""
    import botocore.session
    from botocore.config import Config as ClientConfig

    attempts = config.max_attempts
    connect, read = float(config.connect_timeout), float(config.read_timeout)
    if for_leases:  # three tries (conditional writes that race are answered "retry"), all
        # within about a third of the lease: none lands long after its runner gave up
        attempts, bound = 3, max(1.0, config.lease_duration / 18)
        connect, read = min(connect, bound), min(read, bound)
    session = botocore.session.Session(profile=config.profile)
    region = config.region or session.get_config_variable("region") or "us-east-1"
    if not config.secret_access_key:  # from the chain: keep its secrets out of the logs
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            remember(frozen.secret_key)
            remember(frozen.token)
    return session.create_client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=region,
        config=ClientConfig(
            s3={"addressing_style": "path" if config.path_style else "auto"},
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=connect,
            read_timeout=read,
            max_pool_connections=max(10, 4 * config.upload_concurrency),
        ),
        aws_access_key_id=config.access_key_id or None,  # None (or ""): the standard chain
        aws_secret_access_key=config.secret_access_key or None,
    )


def _silence(exc: Exception, config: S3Storage) -> str | None:
    """How the endpoint failed to answer, in a person's words; None when it did answer."""
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    endpoint = config.endpoint_url or "the S3 endpoint"
    tries = f"{config.max_attempts} attempt{'s' if config.max_attempts > 1 else ''}"
    if isinstance(exc, ReadTimeoutError):
        return (
            f"timed out: {endpoint} sent nothing for {config.read_timeout:g}s "
            f"(read_timeout; {tries})"
        )
    if isinstance(exc, ConnectionClosedError) and _cause_is_timeout(exc):
        return (
            f"timed out: {endpoint} took nothing for {config.read_timeout:g}s of a request "
            f"being sent (read_timeout; {tries})"
        )
    if isinstance(exc, ConnectTimeoutError):
        return (
            f"timed out: no connection to {endpoint} within {config.connect_timeout:g}s "
            f"(connect_timeout; {tries})"
        )
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
        return f"unreachable: {exc}"
    return None


def _cause_is_timeout(exc: Exception) -> bool:
    """Did sending the request time out? botocore reports it as a closed connection, with
    urllib3's ProtocolError("Connection aborted.", TimeoutError(...)) inside."""
    cause = getattr(exc, "kwargs", {}).get("error")
    return any(isinstance(arg, TimeoutError) for arg in getattr(cause, "args", ()))


@dataclass(frozen=True)
class Refusal:
    """A request the server refused as asked to (a condition that did not hold)."""

    response: dict[str, Any]


def _server_time(response: Mapping[str, Any]) -> datetime | None:
    """The server's clock when it answered (the Date header, one-second resolution)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None


class S3Store:
    """One bucket + prefix (see storage.Store). Thread-safe: uploads share one client."""

    def __init__(self, config: S3Storage) -> None:
        self.config = config
        self.label = config.label
        self._client: Any = None
        self._lease_client: Any = None
        self._lock = threading.Lock()
        # (when, why) the endpoint last failed to answer: see UNREACHABLE_MEMORY_SECONDS
        self._silent: tuple[float, str] | None = None

    def call(
        self,
        action: str,
        name: str,
        operation: str,
        *,
        refusals: frozenset[str] = frozenset(),
        lease: bool = False,
        heed_silence: bool = True,
        **arguments: Any,
    ) -> Any:
        """Run one S3 operation on this bucket; any failure becomes StorageError saying what
        was being done where, and why. An error whose code is in `refusals` (a conditional
        request's PreconditionFailed) is an answer, not a failure: it returns a Refusal.
        `lease`: on the lease client, whose quicker timeouts are not remembered as the
        endpoint's silence (they must not fail uploads). `heed_silence`: False to ask even
        an endpoint that was silent just before."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            if self._silent is not None and heed_silence:
                since, why = self._silent
                if time.monotonic() - since < UNREACHABLE_MEMORY_SECONDS:
                    raise TargetUnreachableError(f"{action} {name}: not tried, {why} just before")
                self._silent = None
        if lease:
            return self._call_lease(action, name, operation, refusals, arguments)
        try:
            with self._lock:
                if self._client is None:
                    self._client = _make_client(self.config)
            method: Callable[..., Any] = getattr(self._client, operation)
            return method(Bucket=self.config.bucket, **arguments)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in refusals:
                return Refusal(dict(exc.response))
            raise self.translate(exc, action, name) from None
        except BotoCoreError as exc:
            raise self.translate(exc, action, name) from None

    def _call_lease(
        self,
        action: str,
        name: str,
        operation: str,
        refusals: frozenset[str],
        arguments: dict[str, Any],
    ) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with self._lock:
                if self._lease_client is None:
                    self._lease_client = _make_client(self.config, for_leases=True)
            response = getattr(self._lease_client, operation)(
                Bucket=self.config.bucket, **arguments
            )
            if "Body" in response:  # read it here: its errors are this request's
                with response["Body"] as body:
                    response["Body"] = body.read()
            return response
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in refusals:
                return Refusal(dict(exc.response))
            raise self.translate(exc, action, name, remember_silence=False) from None
        except BotoCoreError as exc:
            raise self.translate(exc, action, name, remember_silence=False) from None

    def translate(
        self, exc: Exception, action: str, name: str, *, remember_silence: bool = True
    ) -> StorageError:
        """botocore's error as ours; an endpoint that did not answer is remembered, so the
        calls behind this one fail at once instead of each waiting out the same silence."""
        silence = _silence(exc, self.config)
        if silence is None:
            return StorageError(f"{action} {name}: {_describe(exc)}")
        if remember_silence:
            with self._lock:
                self._silent = (time.monotonic(), silence)
        return TargetUnreachableError(f"{action} {name}: {silence}")

    def key(self, name: str) -> str:
        return f"{self.config.folder}{name}"

    def location(self, name: str) -> str:
        return f"s3://{self.config.bucket}/{self.key(name)}"

    def check(self) -> None:
        self.call("listing", self.location(""), "list_objects_v2", Prefix=self.key(""), MaxKeys=1)

    def names(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, Any] = {}
        while True:
            page = self.call(
                "listing",
                self.key(prefix) + "*",
                "list_objects_v2",
                Prefix=self.key(prefix),
                **token,
            )
            for item in page.get("Contents", ()):
                name = item["Key"][len(self.config.folder) :]
                if "/" not in name:  # objects in deeper "folders" belong to other targets
                    found.append(name)
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, name: str) -> bytes:
        with self.open_read(name) as body:
            return body.read(-1)

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[_Body]:
        response = self.call("reading", self.location(name), "get_object", Key=self.key(name))
        with response["Body"] as body:
            yield _Body(self, body, name)

    def exists(self, name: str) -> bool:
        # A listing, not HEAD: HEAD's errors carry no body, so a wrong secret would read
        # "403 Forbidden" instead of SignatureDoesNotMatch.
        key = self.key(name)
        page = self.call("checking", self.location(name), "list_objects_v2", Prefix=key, MaxKeys=1)
        return any(item["Key"] == key for item in page.get("Contents", ()))

    def put(self, name: str, data: bytes) -> None:
        self.call(
            "writing",
            self.location(name),
            "put_object",
            Key=self.key(name),
            Body=data,
            ChecksumSHA256=_sha256_b64(data),
        )

    def delete(self, name: str) -> None:
        self.call("deleting", self.location(name), "delete_object", Key=self.key(name))

    # Conditional writes, for leases (leasing.py). A refused condition returns None; S3 says
    # 409 ConditionalRequestConflict when two such writes to one key race.
    def create_if_absent(self, name: str, data: bytes) -> str | None:
        """Create `name` only if no object has that name (If-None-Match: *): its ETag, or
        None when refused."""
        return self._put_if("creating", name, data, IfNoneMatch="*")

    def replace_if(self, name: str, data: bytes, etag: str) -> str | None:
        """Overwrite `name` only if it is still the version `etag` (If-Match); the new ETag.
        Asked whatever an upload's timeout said of the endpoint: a held lease's renewal
        must not lapse for a moment's silence."""
        return self._put_if("rewriting", name, data, heed_silence=False, IfMatch=etag)

    def _put_if(
        self, action: str, name: str, data: bytes, *, heed_silence: bool = True, **condition: str
    ) -> str | None:
        response = self.call(
            action,
            self.location(name),
            "put_object",
            refusals=_REFUSED,
            lease=True,
            heed_silence=heed_silence,
            Key=self.key(name),
            Body=data,
            **condition,
        )
        return None if isinstance(response, Refusal) else str(response["ETag"])

    def delete_if(self, name: str, etag: str) -> bool:
        """Delete `name` only if it is still the version `etag`; False when it was not."""
        response = self.call(
            "deleting",
            self.location(name),
            "delete_object",
            refusals=_REFUSED,
            lease=True,
            Key=self.key(name),
            IfMatch=etag,
        )
        return not isinstance(response, Refusal)

    def read_versioned(self, name: str) -> tuple[bytes, str, datetime, float] | None:
        """`name`'s content, ETag, when it was last written and its age in seconds, both by
        the server's clock (Last-Modified; the response's Date minus it); None when there is
        no such object."""
        response = self.call(
            "reading",
            self.location(name),
            "get_object",
            refusals=frozenset({"NoSuchKey", "404"}),
            lease=True,
            Key=self.key(name),
        )
        if isinstance(response, Refusal):
            return None
        written: datetime = response["LastModified"]
        answered = _server_time(response)
        # Without a Date header the age is unknown: 0, the lease counts as just renewed.
        age = 0.0 if answered is None else (answered - written).total_seconds()
        return bytes(response["Body"]), str(response["ETag"]), written, max(0.0, age)

    def open_upload(self, name: str, labels: Mapping[str, str] | None = None) -> S3Upload:
        if self.exists(name):
            raise StorageError(
                f"{self.location(name)} already exists; refusing to overwrite a backup"
            )
        return S3Upload(self, name)

    def tidy(self) -> None:
        pass  # deletes at once

    def check_repository(self) -> str | None:
        return None

    def clean_incomplete(self, file_prefixes: list[str]) -> list[str]:
        # One job's (after its lease, per job): list only its own keys; many: list once.
        scope = file_prefixes[0] if len(file_prefixes) == 1 else ""
        removed = []
        for key, upload_id in self._incomplete_uploads(self.config.folder + scope):
            name = key[len(self.config.folder) :]
            if any(is_own_file(name, prefix) for prefix in file_prefixes):
                self.call(
                    "aborting upload of",
                    self.location(name),
                    "abort_multipart_upload",
                    Key=key,
                    UploadId=upload_id,
                )
                removed.append(f"{self.location(name)} (incomplete upload {upload_id})")
        for name in sorted(leftovers(self.names(scope), file_prefixes)):
            self.delete(name)
            removed.append(f"{self.location(name)} (no manifest)")
        return removed

    def _incomplete_uploads(self, key_prefix: str) -> list[tuple[str, str]]:
        found = []
        markers: dict[str, Any] = {}
        while True:
            page = self.call(
                "listing uploads under",
                key_prefix,
                "list_multipart_uploads",
                Prefix=key_prefix,
                **markers,
            )
            found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ())]
            if not page.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }


class _Body:
    """An object being downloaded whose errors arrive as StorageError."""

    def __init__(self, store: S3Store, body: Any, name: str) -> None:
        self._store, self._body, self._name = store, body, name

    def read(self, size: int) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            data: bytes = self._body.read(None if size < 0 else size)
        except BotoCoreError as exc:
            where = self._store.location(self._name)
            raise self._store.translate(exc, "reading", where) from None
        return data


class S3Upload:
    """One multipart upload fed by one writer thread (see the module's docstring)."""

    def __init__(self, store: S3Store, name: str) -> None:
        self._store = store
        self._key = store.key(name)
        self._where = store.location(name)
        started = store.call(
            "starting upload of",
            self._where,
            "create_multipart_upload",
            Key=self._key,
            ChecksumAlgorithm="SHA256",
        )
        self._upload_id: str = started["UploadId"]
        concurrency = store.config.upload_concurrency
        self._part_size = int(store.config.part_size)
        self._buffer = bytearray()
        # Bytes handed to the uploaders and not yet sent: at most `upload_concurrency` parts
        # of the configured size. When parts grow (past 1,000 parts), fewer go at once, so
        # memory stays put (one part always may go, whatever its size).
        self._budget = concurrency * self._part_size
        self._in_flight_bytes = 0
        self._slots = threading.Condition()
        self._sent: list[Future[None]] = []
        self._parts: dict[int, dict[str, Any]] = {}
        self._failure: StorageError | None = None
        self._committed = False
        self._aborted = False

    def write(self, data: bytes) -> None:
        self._raise_if_failed()
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            with memoryview(self._buffer) as view:
                part = bytes(view[: self._part_size])
            del self._buffer[: self._part_size]
            self._send(part)

    def commit(self) -> None:
        if self._buffer or not self._sent:  # the last part may be short (or empty)
            self._send(bytes(self._buffer))
            self._buffer.clear()
        for future in self._sent:
            future.result()  # the first failed part's StorageError
        parts = [self._parts[number] for number in sorted(self._parts)]
        self._store.call(
            "completing upload of",
            self._where,
            "complete_multipart_upload",
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._committed = True

    def abort(self) -> None:
        """Stop the upload and ask the server to drop it — or, once committed, to delete the
        object (a cancelled job keeps nothing) — waiting ABORT_WAIT_SECONDS at most: parts
        still in flight (on daemon threads) are abandoned, and what the server did not drop
        in time is the next run's to remove."""
        with self._slots:  # a pump waiting for room wakes up, and fails
            if self._aborted:
                return
            self._aborted = True
            self._failure = self._failure or StorageError(f"upload of {self._where} aborted")
            self._slots.notify_all()
        deadline = time.monotonic() + ABORT_WAIT_SECONDS
        if self._committed:
            arguments: dict[str, Any] = {"Key": self._key}
            action, operation = "removing", "delete_object"
        else:
            # Parts that land after the abort may be kept by S3: give those in flight a moment.
            futures.wait(self._sent, timeout=ABORT_WAIT_SECONDS)
            action, operation = "aborting upload of", "abort_multipart_upload"
            arguments = {"Key": self._key, "UploadId": self._upload_id}

        def ask() -> None:
            self._store.call(action, self._where, operation, **arguments)

        request = threads.submit(ask, name="s3 abort")
        try:
            request.result(timeout=max(0.1, deadline - time.monotonic()))
        except StorageError as exc:
            log.warning("%s; the next run of this job will remove it", exc)
        except TimeoutError:
            log.warning(
                "%s %s: no answer within %gs; the next run of this job will remove it",
                action,
                self._where,
                ABORT_WAIT_SECONDS,
            )

    def _send(self, part: bytes) -> None:
        number = len(self._sent) + 1
        if number > MAX_PARTS:
            raise StorageError(
                f"{self._where}: more than {MAX_PARTS} parts; raise part_size for this target"
            )
        size = len(part)
        with self._slots:  # blocks the pump while the uploaders have their fill: back-pressure
            self._slots.wait_for(
                lambda: (
                    self._in_flight_bytes == 0
                    or self._in_flight_bytes + size <= self._budget
                    or self._failure is not None
                )
            )
            self._raise_if_failed()
            self._in_flight_bytes += size
        future = threads.submit(self._upload_part, number, part, name=f"s3 part {number}")
        future.add_done_callback(lambda _: self._release(size))
        self._sent.append(future)
        if number % PARTS_PER_SIZE_STEP == 0:
            self._part_size *= 2

    def _release(self, size: int) -> None:
        with self._slots:
            self._in_flight_bytes -= size
            self._slots.notify_all()

    def _upload_part(self, number: int, data: bytes) -> None:
        checksum = _sha256_b64(data)
        try:
            response = self._store.call(
                f"uploading part {number} of",
                self._where,
                "upload_part",
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
        except StorageError as exc:
            self._failure = self._failure or exc
            raise
        self._parts[number] = {
            "PartNumber": number,
            "ETag": response["ETag"],
            "ChecksumSHA256": checksum,
        }

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

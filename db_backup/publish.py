"""After a run: the metrics (metrics.py) written where the config says — a textfile for
node_exporter, replaced atomically, and/or a Pushgateway. Publishing never changes what a run
did or its exit code: a failure is a warning the caller shows.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from db_backup.catalog import list_backups
from db_backup.config.schema import Config, PushgatewayConfig
from db_backup.metrics import attempts_in, attempts_of, exposition
from db_backup.model import RunReport
from db_backup.redact import redact_url
from db_backup.threads import in_thread

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def publish_metrics(config: Config, report: RunReport | None = None) -> list[str]:
    """Write/push the metrics of every job in the config; returns warnings (empty: done)."""
    settings = config.metrics
    if settings.textfile is None and settings.pushgateway is None:
        return []
    warnings: list[str] = []
    catalog = await list_backups(config)
    warnings += [
        f"metrics: target {label} could not be read: {e}" for label, e in catalog.errors.items()
    ]
    previous = ""
    if settings.textfile is not None:
        with contextlib.suppress(OSError):
            previous = await in_thread(Path(settings.textfile).read_text, "utf-8")
    attempts = attempts_in(previous)
    if report is not None:
        attempts |= attempts_of(report)
    configured = {backup.name for backup in config.backups}

    def still_configured(job: str) -> bool:  # a backup, a "*" backup's job, or globals
        return (
            job in configured
            or any(job.startswith(f"{name}.") for name in configured)
            or job.startswith("globals-")
        )

    kept = {job: attempt for job, attempt in attempts.items() if still_configured(job)}
    text = exposition(catalog.archives, kept)
    if settings.textfile is not None:
        try:
            await in_thread(write_atomically, Path(settings.textfile), text)
        except OSError as exc:
            warnings.append(f"metrics: cannot write {settings.textfile}: {exc.strerror or exc}")
    if settings.pushgateway is not None:
        try:
            await in_thread(push, settings.pushgateway, text)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError: an OSError
            where = redact_url(settings.pushgateway.url)
            warnings.append(f"metrics: cannot push to {where}: {exc}")
    return warnings


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one whole:
    a temporary file in the same folder, flushed, then renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # node_exporter runs as another user
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def push(gateway: PushgatewayConfig, text: str) -> None:
    """PUT the metrics to the Pushgateway under `job` (replacing what that group held)."""
    if urllib.parse.urlsplit(gateway.url).scheme not in ("http", "https"):
        raise OSError(f"not an http(s) URL: {redact_url(gateway.url)}")
    job = urllib.parse.quote(gateway.job, safe="")
    request = urllib.request.Request(  # noqa: S310 (http or https, checked above)
        f"{gateway.url.rstrip('/')}/metrics/job/{job}",
        data=text.encode(),
        method="PUT",
        headers={"Content-Type": CONTENT_TYPE},
    )
    with urllib.request.urlopen(request, timeout=gateway.timeout) as answer:  # noqa: S310
        answer.read()

"""Setting up the process for a command: log output (secrets masked), the malloc arena, and
a config loaded with its warnings printed and its secrets remembered for masking."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from db_backup.errors import BackupError

# Secrets that may come from the environment, masked in every log line (see redact.py).
SECRET_VARIABLES = (
    "PGPASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now, so rich's live display can redirect logs."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(spec: str) -> None:
    """Apply `warning`, `debug` or `info,db_backup.process=debug`-style log settings."""
    levels: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        logger, _, level = part.rpartition("=")
        number = logging.getLevelNamesMapping().get(level.upper())
        if number is None:
            raise ValueError(
                f"invalid log level {level!r} in {spec!r}; use error, warning, info or debug"
            )
        levels[logger] = number
    from db_backup.redact import SecretFilter, remember

    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    for variable in SECRET_VARIABLES:
        remember(os.environ.get(variable))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(levels.pop("", logging.WARNING))
    for logger, number in levels.items():
        logging.getLogger(logger).setLevel(number)


class _JsonLines(logging.Formatter):
    """One JSON object per log line, for log shippers (`serve --log-format json`)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def log_as_json() -> None:
    """Every log line from now on as a JSON object (secrets are still masked first)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_JsonLines())


def use_one_malloc_arena() -> None:
    """Ask glibc for a single heap ("arena") for all threads; call before any thread starts.

    glibc gives each thread an arena of its own and keeps freed memory there: with
    compression threads, peak RSS grew with the dump (parallel gzip: 64 MiB for a 20 MB
    database, 72 MiB for 200 MB). One arena kept it flat (57 and 59 MiB) at the same speed.
    Elsewhere than glibc this is a no-op."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX = -8 in glibc's malloc.h


def load_config(path: Path, *, require_env: bool = True, only: Sequence[str] | None = None) -> Any:
    """Load a config and print its warnings (exposed secrets) on stderr."""
    from db_backup.config.load import load_config
    from db_backup.redact import remember

    loaded = load_config(path, require_env=require_env, only=only)
    for backup in loaded.backups:
        remember(backup.password)
        for target in backup.targets:
            for secret in target.secrets:
                remember(secret)
    if loaded.verify.sandbox is not None:
        remember(loaded.verify.sandbox.password)
    for notifier in loaded.notify:
        for secret in notifier.secrets:
            remember(secret)
    for warning in loaded.warnings:
        typer.echo(f"db-backup: warning: {warning}", err=True)
    return loaded


def publish_metrics(loaded: Any, report: Any = None) -> None:
    """Write/push the config's metrics, if it has any; a failure is a warning on stderr."""
    metrics = loaded.metrics
    if not (metrics.textfile or metrics.pushgateway):
        return  # publish.py (urllib and the like) is imported only when used
    from db_backup.cli import exits
    from db_backup.publish import publish_metrics as publish

    for warning in exits.interruptible(publish(loaded, report)):
        typer.echo(f"db-backup: warning: {warning}", err=True)


# What `verify` tells the notifiers when the targets hold no backup at all (wiped?).
NONE_FOUND = ("every target", "listing them", "no backups found")


def notify_failure(
    loaded: Any, command: str, *, total: int, noun: str, problems: Sequence[tuple[str, str, str]]
) -> None:
    """`verify` or `prune` failed: tell the config's notifiers (if it has any) the
    (name, where, reason) of each problem. A failure to notify is a warning on stderr."""
    if not problems:
        return
    for label, why in loaded.muted_notifiers:  # commands without secrets: their ${VAR}s unset
        typer.echo(f"db-backup: warning: notify: {label}: not sent: {why}", err=True)
    if not loaded.notify:
        return
    import socket

    from db_backup.cli import exits
    from db_backup.notification import Notice, Problem
    from db_backup.notify import send_notice

    listed = tuple(Problem(*problem) for problem in problems)
    notice = Notice(
        command=command,
        host=socket.gethostname(),
        config=loaded.source,
        noun=noun,
        total=total,
        failed=len(listed),
        problems=listed,
    )
    warn_undelivered(exits.interruptible(send_notice(loaded.notify, notice)))


def notify_summary(loaded: Any, summary: Any, errors: Mapping[str, str]) -> None:
    """`report --notify`: one message for a whole fleet run (fleet.FleetSummary), to every
    notifier whose `on:` wants it; the jobs with no backup, and unreadable targets, as
    problems."""
    for label, why in loaded.muted_notifiers:
        typer.echo(f"db-backup: warning: notify: {label}: not sent: {why}", err=True)
    if not loaded.notify:
        return
    import socket

    from db_backup.cli import exits
    from db_backup.notification import Notice, Problem
    from db_backup.notify import send_notice

    since = summary.since.strftime("%Y-%m-%d %H:%M UTC")
    problems = tuple(
        Problem(job.job, f"no backup since {since}", "missing") for job in summary.missing
    )
    problems += tuple(
        Problem(label, "its backups could not be listed", why) for label, why in errors.items()
    )
    notice = Notice(
        command="report",
        host=socket.gethostname(),
        config=loaded.source,
        noun="backups",
        total=len(summary.jobs),
        failed=len(summary.missing),
        problems=problems,
        stored_bytes=summary.stored_bytes,
    )
    warn_undelivered(exits.interruptible(send_notice(loaded.notify, notice)))


def warn_undelivered(deliveries: Sequence[Any]) -> None:
    """Each notifier that could not be told, as a warning on stderr (never an exit code)."""
    for delivery in deliveries:
        if not delivery.ok:
            typer.echo(f"db-backup: warning: {delivery.warning}", err=True)


def reading_keys(identity: Path | None, configured: str | None) -> Any:
    """The keys that decrypt backups (stages.unpack.ReadingKeys): `--identity` (or
    DB_BACKUP_IDENTITY), else the config's identity_file; the file is read once here, so a
    missing or unusable one fails before anything starts, and one others may read is warned
    about."""
    from db_backup.keys import exposed_identity, read_identities
    from db_backup.stages.unpack import NO_KEYS, ReadingKeys

    chosen = identity if identity is not None else Path(configured) if configured else None
    if chosen is None:
        return NO_KEYS
    read_identities(chosen)  # KeyFileError says what is wrong with it, never the key
    warning = exposed_identity(chosen)
    if warning is not None:
        typer.echo(f"db-backup: warning: {warning}", err=True)
    return ReadingKeys(identity_file=str(chosen.absolute()))


async def tell_of_a_stopped_run(
    notifications: Any,
    loaded: Any,
    selected: Sequence[Any],
    error: BaseException,
    when: str = "before any dump started",
) -> None:
    """A run that ended before any dump (a lock held, a signal, an error): the notifiers
    hear why, shortly when it was a signal."""
    import socket

    from db_backup.notification import stopped_run_notice

    stopped = isinstance(error, asyncio.CancelledError)  # by a signal, while planning
    why = f"stopped by a signal {when}" if stopped else str(error)
    if not isinstance(error, BackupError | asyncio.CancelledError):
        why = f"internal error: {type(error).__name__}: {error}"
    from db_backup.redact import redact_known

    notice = stopped_run_notice(
        redact_known(why), selected, host=socket.gethostname(), config=loaded.source
    )
    warn_undelivered(await notifications.finish(notice, hurry=stopped))

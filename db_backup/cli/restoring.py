"""`db-backup restore`: options → restore.choose → restore.restore, with progress and a report.

Progress is a bar over the stored bytes on a terminal, a line every PLAIN_EVERY seconds
otherwise; `--json` prints a report on stdout (schema in the README). Exit codes as elsewhere:
0 restored, 1 not restored (refused, failed), 2 usage or config, 130 / 143 signals.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from db_backup.cli import exits, setup
from db_backup.cli.options import ConfigOption, IdentityOption

if TYPE_CHECKING:
    from db_backup.restore import RestoreOutcome, RestorePlan

PLAIN_EVERY = 10.0  # seconds between progress lines when there is no terminal
REPORT_VERSION = 1


def parse_time(text: str) -> datetime:
    """`--at`: ISO 8601 or as `list` shows it ("2026-12-01 03:00:00"); UTC unless it says."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def restore_command(
    config: ConfigOption,
    name: Annotated[
        str,
        typer.Option(
            "-n", "--name", help="The job to restore, as `list` shows it.", show_default=False
        ),
    ],
    to_database: Annotated[
        str,
        typer.Option("--to-database", help="Restore into this database.", show_default=False),
    ],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="The newest backup taken at or before this time (UTC unless it says; "
            "e.g. '2026-12-01 03:00').",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file", help="This backup (a file name or location `list` shows).", show_default=False
        ),
    ] = None,
    from_target: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Read from this target (its label as `list` shows it); default: the first "
            "target that holds the backup.",
            show_default=False,
        ),
    ] = None,
    to_host: Annotated[
        str | None, typer.Option("--to-host", help="Restore to this server.", show_default=False)
    ] = None,
    to_port: Annotated[
        int | None, typer.Option("--to-port", min=1, max=65535, show_default=False)
    ] = None,
    to_username: Annotated[str | None, typer.Option("--to-username", show_default=False)] = None,
    to_password_file: Annotated[
        Path | None,
        typer.Option(
            "--to-password-file",
            help="Password for --to-* (else PGPASSWORD, PGPASSFILE or ~/.pgpass).",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Replace the database if it exists (dropped only once the restore succeeded).",
        ),
    ] = False,
    with_globals: Annotated[
        bool,
        typer.Option(
            "--with-globals", help="First apply the roles and tablespaces saved by the same run."
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "-j",
            "--jobs",
            min=1,
            help="Parallel restore workers (custom format; stages the dump in a file).",
        ),
    ] = 1,
    scratch: Annotated[
        Path | None,
        typer.Option(
            "--scratch",
            help="Folder for a staged dump (-j); default: the temp folder.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be restored; change nothing.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable report on stdout.")
    ] = False,
    identity: IdentityOption = None,
) -> None:
    """Restore a backup into a database: streamed from its target, checked on the way
    (decrypted with --identity when it is encrypted)."""
    from db_backup.catalog import list_backups
    from db_backup.restore import OtherServer, RestoreRequest, choose

    try:
        when = parse_time(at) if at is not None else None
    except ValueError:
        exits.fail_usage(f"--at: not a time: {at!r} (e.g. '2026-12-01 03:00' or 2026-12-01T03:00Z)")
    if file is not None and when is not None:
        exits.fail_usage("--at and --file both choose the backup: give one")
    other = None
    if any(v is not None for v in (to_host, to_port, to_username, to_password_file)):
        other = OtherServer(
            to_host, to_port, to_username, str(to_password_file) if to_password_file else None
        )
    request = RestoreRequest(
        job=name,
        database=to_database,
        at=when,
        file=file,
        from_target=from_target,
        other_server=other,
        clean=clean,
        with_globals=with_globals,
        jobs=jobs,
        scratch=scratch,
    )
    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, only=(name,))
        keys = setup.reading_keys(identity, loaded.restore.identity_file)
        request = dataclasses.replace(request, keys=keys)
        catalog = exits.interruptible(list_backups(loaded))
        for label, error in catalog.errors.items():
            typer.echo(f"db-backup: warning: target {label} could not be read: {error}", err=True)
        plan = choose(loaded, catalog.archives, request)
        for note in plan.notes:
            typer.echo(f"db-backup: note: {note}", err=True)
        if dry_run:
            typer.echo(_describe(plan, "would restore"))
            return
        outcome = _restore(plan, json_output)
    for step in outcome.steps:
        typer.echo(step, err=True)
    typer.echo(f"done in {outcome.seconds:.1f}s", err=True)


def _describe(plan: RestorePlan, verb: str) -> str:
    from db_backup.units import format_bytes

    archive = plan.archive
    lines = [
        f"{verb} {archive.location}",
        f"  taken {archive.taken_at:%Y-%m-%d %H:%M:%S} UTC, {format_bytes(archive.stored_bytes)} "
        f"stored ({archive.record.format} format) from {archive.target}",
        f"  into {plan.where}" + (" (replacing it if it exists: --clean)" if plan.clean else ""),
    ]
    if plan.globals is not None:
        lines.append(f"  after the globals {plan.globals.location}")
    return "\n".join(lines)


def _restore(plan: RestorePlan, json_output: bool) -> RestoreOutcome:
    """Run it with progress; print the JSON report when asked (also when it failed)."""
    from db_backup.errors import BackupError
    from db_backup.restore import restore

    progress = _progress(plan, bar=not json_output)
    try:
        outcome = exits.interruptible(restore(plan, progress.update))
    except BackupError as exc:
        progress.close()
        if json_output:
            _print_json(plan, None, exc)
        raise
    except typer.Exit:
        progress.close()
        raise
    progress.close()
    if json_output:
        _print_json(plan, outcome, None)
    return outcome


def _print_json(plan: RestorePlan, outcome: RestoreOutcome | None, error: Exception | None) -> None:
    import msgspec

    archive = plan.archive
    body: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "restored": outcome is not None,
        "job": archive.job,
        "file": archive.location,
        "target": archive.target,
        "taken_at": archive.taken_at,
        "format": archive.record.format,
        "database": plan.database,
        "server": f"{plan.server.host or 'local'}:{plan.server.port}",
        "globals": plan.globals.location if plan.globals else None,
        "replaced": outcome is not None and outcome.state.value == "not empty",
        "stored_bytes": archive.stored_bytes,
        "raw_bytes": archive.raw_bytes,
        "duration_seconds": round(outcome.seconds, 3) if outcome else None,
        "error": str(error) if error else None,
        "error_kind": getattr(error, "kind", None) if error else None,
    }
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(body), indent=2) + b"\n")
    sys.stdout.flush()


class _PlainProgress:
    """A line when it starts and one every PLAIN_EVERY seconds (cron, pipes, --json)."""

    def __init__(self, plan: RestorePlan) -> None:
        self._total = plan.archive.stored_bytes
        self._last = time.monotonic()
        self._say(_describe(plan, "restoring").splitlines()[0])

    def _say(self, line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def update(self, done: int) -> None:
        from db_backup.units import format_bytes

        if time.monotonic() - self._last >= PLAIN_EVERY:
            self._last = time.monotonic()
            share = f" ({100 * done / self._total:.0f}%)" if self._total else ""
            self._say(f"restoring {format_bytes(done)} of {format_bytes(self._total)}{share}")

    def close(self) -> None:
        pass


class _BarProgress:
    """A rich bar over the stored bytes read."""

    def __init__(self, plan: RestorePlan, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn(f"restoring {plan.archive.name}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("restore", total=plan.archive.stored_bytes or None)
        self._progress.start()

    def update(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()


def _progress(plan: RestorePlan, bar: bool) -> _PlainProgress | _BarProgress:
    """A bar on a terminal (not with --json, as for backup); plain lines on stderr otherwise."""
    if bar and sys.stderr.isatty():
        from rich.console import Console

        console = Console(file=sys.stderr)
        if console.is_terminal:
            return _BarProgress(plan, console)
    return _PlainProgress(plan)


def verify_restores(
    config: Path, names: tuple[str, ...], *, every: bool, identity: Path | None
) -> None:
    """`verify --restore`: a line per backup as its test ends; exit 1 if any failed."""
    from db_backup.catalog import list_backups
    from db_backup.plan import select_backups
    from db_backup.restore_proof import chosen, prove_restores

    def say(result: Any) -> None:
        where = result.archive.location
        if result.removed:
            typer.echo(f"SKIPPED {where}: removed by retention while it was being tested")
        elif result.ok:
            held = "; ".join(result.checked)
            typer.echo(f"OK      {where} restore-tested in {result.seconds:.1f}s: {held}")
        else:
            typer.echo(f"FAILED  {where}: {'; '.join(result.problems)}")
        for target, error in result.unrecorded.items():
            typer.echo(f"        (the result could not be recorded on {target}: {error})")

    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, only=names or None)
        select_backups(loaded, names)  # an unknown name is a usage error
        keys = setup.reading_keys(identity, loaded.verify.identity_file)
        # Every backup, not only the named ones: the globals may belong to another backup.
        catalog = exits.interruptible(list_backups(loaded))
        for label, error in catalog.errors.items():
            typer.echo(f"FAILED  target {label}: {error}")
        named = [a for a in catalog.archives if not names or a.backup in names or a.job in names]
        archives = chosen(named, every=every)
        if not archives:
            typer.echo("no backups found", err=True)
            setup.notify_failure(
                loaded, "verify --restore", total=0, noun="backups", problems=[setup.NONE_FOUND]
            )
            raise typer.Exit(exits.EXIT_FAILED)
        results = exits.interruptible(
            prove_restores(loaded, archives, catalog.archives, on_result=say, keys=keys)
        )
        setup.publish_metrics(loaded)  # the restore tests' outcomes
    problems = [
        *((f"target {label}", "listing it", error) for label, error in catalog.errors.items()),
        *((r.archive.location, "restore test", "; ".join(r.problems)) for r in results if not r.ok),
    ]
    total = len(results) + len(catalog.errors)
    setup.notify_failure(loaded, "verify --restore", total=total, noun="backups", problems=problems)
    failed = len(problems)
    tested = sum(1 for r in results if r.ok and not r.removed)
    removed = sum(1 for r in results if r.removed)
    skipped = f", {removed} removed by retention meanwhile" if removed else ""
    typer.echo(f"{tested} restore-tested, {failed} failed{skipped}", err=True)
    raise typer.Exit(exits.EXIT_FAILED if failed else exits.EXIT_OK)

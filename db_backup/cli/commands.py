"""`db-backup` commands. Thin: options → one plain function → exit code.

This is the only place that runs the event loop (through interrupts.py, which handles
SIGINT and SIGTERM); exits.py turns BackupErrors into messages and exit codes, so no
traceback reaches a user. (Over 400 lines because each command is a wall of typed options,
as fastapi-cli's are; the work is done elsewhere.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from db_backup import __version__
from db_backup.cli import exits, restoring, setup
from db_backup.cli.options import ConfigOption, IdentityOption, NamesOption

T = TypeVar("T")

app = typer.Typer(
    name="db-backup",
    help="Back up many PostgreSQL and MariaDB/MySQL databases in parallel: streamed, "
    "compressed, atomic.",
    epilog=exits.EXIT_CODES_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

log = logging.getLogger("db_backup")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"db-backup {__version__}")
        raise typer.Exit(exits.EXIT_OK)


@app.callback()
def _root(
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar="DB_BACKUP_LOG",
            help="Log detail on stderr: error, warning, info, debug; or per logger, "
            "e.g. 'info,db_backup.process=debug'. Also from DB_BACKUP_LOG.",
        ),
    ] = "warning",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Back up many PostgreSQL and MariaDB/MySQL databases in parallel: streamed,
    compressed, atomic."""
    try:
        setup.configure_logging(log_level)
    except ValueError as exc:
        exits.fail_usage(str(exc))


# -- generate ------------------------------------------------------------------------------------


@app.command()
def generate(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write here instead of stdout.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Print a commented sample config (it passes `validate` as written)."""
    from db_backup.config.sample import SAMPLE_CONFIG

    if output is None:
        sys.stdout.write(SAMPLE_CONFIG)
        return
    try:
        with output.open("w" if force else "x", encoding="utf-8") as handle:
            handle.write(SAMPLE_CONFIG)
    except FileExistsError:
        exits.fail_usage(f"{output} exists; use --force to overwrite it")
    except OSError as exc:
        typer.echo(f"db-backup: cannot write {output}: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.EXIT_FAILED) from None
    typer.echo(f"wrote {output}", err=True)


# -- validate ------------------------------------------------------------------------------------


@app.command()
def validate(
    config: ConfigOption,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Also connect to every database and target, and report on each.",
            show_default=False,
        ),
    ] = False,
) -> None:
    """Check a config file; with --connect, also reach every database and target it names."""
    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config)
        wildcards = sum(1 for b in loaded.backups if b.is_wildcard)
        summary = f"{config}: OK, {len(loaded.backups)} backups"
        summary += f' ({wildcards} with database "*")' if wildcards else ""
        summary += (
            f", {len(loaded.notify)} notifiers (try them: notify-test)" if loaded.notify else ""
        )
        typer.echo(summary)
        if not connect:
            return
        from db_backup.cli.render import check_line

        failures, outcomes, targets = exits.interruptible(_check_connections(loaded))
        for failure in failures:
            typer.echo(f"  {failure.job.name}: {failure.error}")
        for outcome in outcomes:
            typer.echo(f"  {check_line(outcome)}")
        for label, error in targets.items():
            typer.echo(f"  target {label}: {error or 'OK'}")
        unreachable = [o for o in outcomes if o.error is not None]
        if failures or unreachable or any(targets.values()):
            raise typer.Exit(exits.EXIT_FAILED)


async def _check_connections(loaded: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
    from db_backup.preflight import check_jobs, check_targets
    from db_backup.run import prepare_plan

    plan, failures = await prepare_plan(loaded, loaded.backups)
    outcomes, targets = await asyncio.gather(
        check_jobs(plan.jobs, plan.concurrency), check_targets(loaded.backups)
    )
    return failures, outcomes, targets


# -- backup --------------------------------------------------------------------------------------

WAIT_FOREVER = "forever"


@app.command()
def backup(
    config: ConfigOption,
    name: NamesOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "-j",
            "--jobs",
            min=1,
            help="At most N dumps at once (overrides concurrency).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; dump nothing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Report failures only.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable run report on stdout.")
    ] = False,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="[=DURATION]",
            help="If another run holds the storage lock, wait for it (at most DURATION, "
            "e.g. --wait=30m) instead of refusing at once.",
            show_default=False,
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N|auto",
            help="Run only shard I of N (from 0): the jobs every runner assigns to it, "
            "balanced by their last size. auto: I from JOB_COMPLETION_INDEX (Kubernetes), "
            "N from --shards or DB_BACKUP_SHARDS.",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            min=1,
            help="The number of shards (for --shard auto); with --dry-run alone, show how "
            "the jobs fall to N runners.",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            envvar="DB_BACKUP_RUN_ID",
            metavar="ID",
            help="What the shards of one fleet run and their retries share (e.g. the "
            "Kubernetes Job's uid): a job one of them backed up is not dumped again by a "
            "retried runner. Default: this run's own.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run every backup in the config (or the named ones), several at once."""
    from db_backup.plan import select_backups
    from db_backup.units import parse_duration

    wait_seconds: float | None = None
    if wait is not None:
        try:
            wait_seconds = float("inf") if wait == WAIT_FOREVER else parse_duration(wait)
        except ValueError as exc:
            exits.fail_usage(f"--wait: {exc}")
    chosen_shard = _shard_option(shard, shards, dry_run)
    setup.use_one_malloc_arena()
    with exits.errors_to_exit_codes():
        names = tuple(name or ())
        loaded = setup.load_config(config, only=names or None)
        selected = select_backups(loaded, names)
        options = _RunOptions(
            names, jobs, dry_run, quiet, json_output, wait_seconds, chosen_shard, shards, run_id
        )
        code, _ = _run_backup(loaded, selected, options)
    raise typer.Exit(code)


def _shard_option(shard: str | None, shards: int | None, dry_run: bool) -> Any:
    """--shard I/N or auto (with --shards / DB_BACKUP_SHARDS) → Shard; usage errors exit 2."""
    from db_backup.shard import parse_shard, shard_from_environment

    if shard is None:
        if shards is not None and not dry_run:
            exits.fail_usage("--shards goes with --shard auto, or with --dry-run to show shards")
        return None
    try:
        if shard.strip() == "auto":
            return shard_from_environment(os.environ, shards)
        chosen = parse_shard(shard)
    except ValueError as exc:
        exits.fail_usage(f"--shard: {exc}")
    if shards is not None and shards != chosen.count:
        exits.fail_usage(f"--shard {shard} says {chosen.count} shards, --shards says {shards}")
    return chosen


@dataclass(frozen=True)
class _RunOptions:
    names: tuple[str, ...] = ()
    jobs: int | None = None
    dry_run: bool = False
    quiet: bool = False
    json_output: bool = False
    wait: float | None = None
    shard: Any = None  # shard.Shard: run only its jobs
    shards: int | None = None  # with dry_run and no shard: show the whole partition
    run_id: str | None = None  # shared by a fleet run's runners (leasing.py)


def _renderer(options: _RunOptions) -> Any:
    """Live bars on a terminal; plain lines for pipes, cron and --json (rich not even loaded)."""
    from db_backup.cli.render import PlainRenderer

    if options.json_output or not sys.stderr.isatty():
        return PlainRenderer(sys.stderr, quiet=options.quiet)
    from rich.console import Console

    from db_backup.cli.live import LiveRenderer

    console = Console(file=sys.stderr)
    if not console.is_terminal:  # e.g. TERM=dumb
        return PlainRenderer(sys.stderr, quiet=options.quiet)
    return LiveRenderer(console, quiet=options.quiet)


def _print_table(table: Any) -> None:
    from rich.console import Console

    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # cron mail and files: keep paths whole
    console.print(table)


def _run_backup(loaded: Any, selected: Sequence[Any], options: _RunOptions) -> tuple[int, Any]:
    """Plan, run and report one backup run; returns the exit code and the RunReport."""
    from db_backup.aftermath import notifications_for
    from db_backup.run import BackupRun

    run = BackupRun(wait=options.wait, shard=options.shard, run_id=options.run_id)
    renderer = None if options.dry_run else _renderer(options)
    notifications = None if renderer is None else notifications_for(loaded, selected)

    def on_signal(name: str) -> bool:
        if renderer is not None:
            renderer.note(
                f"{name} received: cancelling running and queued jobs "
                f"(send it again to stop immediately)"
            )
        if notifications is not None:
            notifications.hurry()  # the jobs may be over, and a notifier retrying
        return run.cancel(name)  # False while still planning: the whole run is cancelled

    from db_backup.interrupts import run_interruptible

    main = _backup_main(loaded, selected, options, run, renderer, notifications)
    outcome = run_interruptible(main, on_signal)
    if outcome.interrupted_by is not None:
        sys.stderr.write(
            f"db-backup: interrupted by {outcome.interrupted_by} before any dump started\n"
        )
        return exits.for_signal(outcome.interrupted_by), None
    assert outcome.value is not None
    return outcome.value


async def _backup_main(
    loaded: Any,
    selected: Sequence[Any],
    options: _RunOptions,
    run: Any,
    renderer: Any,
    notifications: Any,
) -> tuple[int, Any]:
    from db_backup.aftermath import after_run
    from db_backup.report import json_report
    from db_backup.run import prepare_plan

    if renderer is None:  # a dry run
        from db_backup.cli.tables import partition_table, plan_table
        from db_backup.run import only_shard, sharding

        plan, failures = await prepare_plan(
            loaded, selected, names=options.names, concurrency=options.jobs
        )
        count = options.shard.count if options.shard is not None else options.shards
        if count is None:
            _print_table(plan_table(plan, failures))
            return exits.EXIT_OK, None
        shares = await sharding(loaded, plan, count)
        if options.shard is not None:
            plan, failures = only_shard(plan, failures, shares, options.shard)
            _print_table(plan_table(plan, failures))
        elif failures:
            _print_table(plan_table(dataclasses.replace(plan, jobs=()), failures))
        _print_table(partition_table(shares, count, options.shard))
        return exits.EXIT_OK, None
    if notifications is not None:
        notifications.start()  # healthchecks' /start, in the background
    run.subscribe(renderer)
    try:
        report = await run.execute(loaded, selected, names=options.names, concurrency=options.jobs)
    except (Exception, asyncio.CancelledError) as exc:  # no job ran: a lock held, a signal
        if notifications is not None:
            await setup.tell_of_a_stopped_run(notifications, loaded, selected, exc)
        raise
    finally:
        renderer.close()
    code = exits.for_run(report)
    # After the backups are committed; neither ever changes the exit code.
    warnings, deliveries = await after_run(loaded, report, code, notifications)
    for warning in warnings:
        typer.echo(f"db-backup: warning: {warning}", err=True)
    if options.json_output:
        sys.stdout.buffer.write(
            json_report(
                report, code, config=loaded.source, warnings=warnings, deliveries=deliveries
            )
        )
        sys.stdout.flush()
    elif not options.quiet or code != exits.EXIT_OK:
        from db_backup.cli.tables import summary_table

        _print_table(summary_table(report))
    return code, report


# -- verify --------------------------------------------------------------------------------------


@app.command()
def verify(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Backup files, manifests or folders.", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "-c",
            "--config",
            envvar="DB_BACKUP_CONFIG",
            help="Verify every backup on every target of this config.",
            show_default=False,
        ),
    ] = None,
    restore: Annotated[
        bool,
        typer.Option(
            "--restore",
            help="Restore each job's newest backup into a throwaway server and check every "
            "table's rows, sequences and large objects against its manifest (needs -c).",
        ),
    ] = False,
    name: NamesOption = None,
    every: Annotated[
        bool, typer.Option("--all", help="With --restore: every backup, not only the newest.")
    ] = False,
    identity: IdentityOption = None,
) -> None:
    """Re-read backups: size and sha256 against the manifest, complete stream and dump
    (encrypted ones: decrypted with --identity, else size and sha256 only); with --restore,
    prove they restore."""
    if restore:
        if config is None or paths:
            exits.fail_usage("--restore needs a config (-c) and takes no paths")
        restoring.verify_restores(config, tuple(name or ()), every=every, identity=identity)
        return
    if name or every:
        exits.fail_usage("-n and --all go with --restore")
    from db_backup.integrity import archives_in, archives_on, check_repositories, verify_all

    with exits.errors_to_exit_codes():
        targets = list(paths or ())
        storages = []
        configured = None
        if config is not None:
            loaded = setup.load_config(config, require_env=False)  # targets only: no DB secrets
            storages = list(dict.fromkeys(s for b in loaded.backups for s in b.targets))
            configured = loaded.verify.identity_file
        keys = setup.reading_keys(identity, configured)
        if not targets and not storages:
            exits.fail_usage("name backup files or folders to verify, or a config with -c")
        missing = [str(path) for path in targets if not path.exists() and path.suffix != ".json"]

        async def verify_everything() -> tuple[list[Any], dict[str, str], dict[str, str]]:
            on_targets, unreadable = await archives_on(storages)
            named = archives_in(path for path in targets if path.exists())
            verdicts = await verify_all(named + on_targets, keys=keys)
            checked, damaged = await check_repositories(storages)
            unreadable |= damaged
            return verdicts, unreadable, checked

        verdicts, unreadable, whole = exits.interruptible(verify_everything())
    for label, what in whole.items():
        typer.echo(f"OK      target {label} ({what})")
    for label, error in unreadable.items():
        typer.echo(f"FAILED  target {label}: {error}")
    for path in missing:
        typer.echo(f"FAILED  {path}: no such file or folder")
    for verdict in verdicts:
        if verdict.ok:
            typer.echo(f"OK      {verdict.location} ({'; '.join(verdict.checks + verdict.notes)})")
        else:
            passed = f" (passed: {'; '.join(verdict.checks)})" if verdict.checks else ""
            typer.echo(f"FAILED  {verdict.location}: {'; '.join(verdict.problems)}{passed}")
    problems = [
        *((f"target {label}", "listing it", error) for label, error in unreadable.items()),
        *((path, "a named file", "no such file or folder") for path in missing),
        *(
            (verdict.location, "stored backup", "; ".join(verdict.problems))
            for verdict in verdicts
            if not verdict.ok
        ),
    ]
    failed = len(problems)
    if not verdicts and not missing and not unreadable:
        typer.echo("no backups found", err=True)
        if config is not None:  # a wiped target looks like this
            setup.notify_failure(
                loaded, "verify", total=0, noun="backups", problems=[setup.NONE_FOUND]
            )
        raise typer.Exit(exits.EXIT_FAILED)
    checked = len(verdicts) + len(missing) + len(unreadable)
    typer.echo(f"{checked - failed} verified, {failed} failed", err=True)
    if config is not None:
        setup.notify_failure(loaded, "verify", total=checked, noun="backups", problems=problems)
    raise typer.Exit(exits.EXIT_FAILED if failed else exits.EXIT_OK)


# -- list ----------------------------------------------------------------------------------------


@app.command("list")
def list_command(
    config: ConfigOption,
    name: NamesOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Every finished backup (one with a manifest), newest first."""
    from datetime import UTC, datetime

    from db_backup.catalog import list_backups, warn_about_future

    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, require_env=False)  # reads targets only: no DB secrets
        catalog = exits.interruptible(list_backups(loaded, tuple(name or ())))
    warn_about_future(catalog.archives, datetime.now(UTC))
    if json_output:
        from db_backup.cli.render import catalog_json

        sys.stdout.buffer.write(catalog_json(catalog))
    else:
        from db_backup.cli.tables import catalog_table

        _print_table(catalog_table(catalog.archives))
    exits.for_target_errors(catalog.errors)


# -- report --------------------------------------------------------------------------------------


@app.command("report")
def report_command(
    config: ConfigOption,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Count backups taken at or after TIME: a moment (2026-12-02T01:00:00Z) or a "
            "duration before now (8h).",
        ),
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    notify: Annotated[
        bool,
        typer.Option("--notify", help="Send the summary to the config's notifiers (one message)."),
    ] = False,
) -> None:
    """Every job the config expects, backed up since TIME or missing — whichever runner
    (shard) stored it: one summary of a fleet run from the catalog. Exit 1 if one is missing."""
    from db_backup.catalog import list_backups
    from db_backup.fleet import expected_jobs, summarize
    from db_backup.run import configured_jobs

    moment = _moment(since)
    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, require_env=notify)  # notifiers need their secrets
        catalog = exits.interruptible(list_backups(loaded))
    wildcards = [backup.name for backup in loaded.backups if backup.is_wildcard]
    expected = expected_jobs(configured_jobs(loaded), wildcards, catalog.archives, moment)
    summary = summarize(expected, catalog.archives, moment)
    if json_output:
        from db_backup.cli.render import fleet_json

        sys.stdout.buffer.write(fleet_json(summary, catalog.errors))
    else:
        from db_backup.cli.tables import fleet_table

        _print_table(fleet_table(summary))
    if notify:
        setup.notify_summary(loaded, summary, catalog.errors)
    if summary.missing:
        raise typer.Exit(exits.EXIT_FAILED)
    exits.for_target_errors(catalog.errors)


def _moment(text: str) -> Any:
    """--since: an ISO 8601 moment (UTC unless it says otherwise) or a duration before now."""
    from datetime import UTC, datetime, timedelta

    from db_backup.units import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        exits.fail_usage(
            f"--since: expected a moment (2026-12-02T01:00:00Z) or a duration (8h), got {text!r}"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- schedule ------------------------------------------------------------------------------------


@app.command("schedule")
def schedule_command(
    config: ConfigOption,
    count: Annotated[int, typer.Option("--next", min=1, help="How many runs to show.")] = 3,
) -> None:
    """What `serve` would run and when: each schedule's next runs (local time and UTC), and
    each backup's newest finished backup from the catalog."""
    from datetime import UTC, datetime

    from db_backup.catalog import list_backups, newest_per_backup
    from db_backup.cli.tables import schedule_table
    from db_backup.schedule import parse_zone, tasks_of

    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, require_env=False)  # reads targets only
        tasks = tasks_of(loaded)
        catalog = exits.interruptible(list_backups(loaded))
    if not tasks:
        typer.echo("nothing is scheduled: give backups a `schedule:` (see README)", err=True)
    now = datetime.now(UTC)
    zone = parse_zone(loaded.timezone)
    _print_table(schedule_table(tasks, newest_per_backup(catalog.archives), now, zone, count))
    exits.for_target_errors(catalog.errors)


class LogFormat(StrEnum):
    PLAIN = "plain"
    JSON = "json"


@app.command("serve")
def serve_command(
    config: ConfigOption,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Answer /metrics, /healthz and /api/status over HTTP here (e.g. "
            "127.0.0.1:9187; loopback unless you say otherwise).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", help="plain lines, or one JSON object per line."),
    ] = LogFormat.PLAIN,
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Also serve the web UI on the listener (127.0.0.1:9187 unless --listen "
            "says otherwise; needs pip install 'db-backup[web]').",
        ),
    ] = False,
) -> None:
    """Run until stopped, firing each backup (and verify:/prune:) at its `schedule:`; SIGHUP
    reloads the config, SIGTERM/SIGINT stop (runs in progress are cancelled and cleaned up)."""
    from db_backup.cli.serving import serve

    serve(config, listen, log_format.value, web)


# -- prune ---------------------------------------------------------------------------------------


@app.command("prune")
def prune_command(
    config: ConfigOption,
    name: NamesOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show keep/delete and why; delete nothing.")
    ] = False,
) -> None:
    """Apply the retention policies now (they also apply after every backup)."""
    from datetime import UTC, datetime

    from db_backup.prune import prune_config

    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config, require_env=False)  # files only: no secrets
        report = exits.interruptible(
            prune_config(loaded, tuple(name or ()), dry_run=dry_run, now=datetime.now(UTC))
        )
    deleted = 0
    for verdict in report.verdicts:
        where = verdict.archive.location
        if verdict.decision.keep:
            typer.echo(f"keep    {where} ({', '.join(verdict.decision.reasons)})")
        elif not dry_run and verdict.archive not in report.deleted:
            typer.echo(f"not deleted {where} (see the error below)")
        else:
            deleted += 1
            typer.echo(f"{'would delete' if dry_run else 'deleted'} {where}")
    for leftover in report.cleaned:
        typer.echo(f"removed {leftover}, left behind by an interrupted run")
    kept = len(report.verdicts) - deleted
    typer.echo(f"{kept} kept, {deleted} {'to delete' if dry_run else 'deleted'}", err=True)
    if not dry_run:
        setup.publish_metrics(loaded)  # the counts and oldest backups changed
        problems = [(f"target {label}", "pruning", error) for label, error in report.errors.items()]
        targets = {verdict.archive.target for verdict in report.verdicts} | set(report.errors)
        setup.notify_failure(loaded, "prune", total=len(targets), noun="targets", problems=problems)
    exits.for_target_errors(report.errors)


# -- restore -------------------------------------------------------------------------------------

app.command("restore")(restoring.restore_command)


# -- notify-test ---------------------------------------------------------------------------------


@app.command()
def keygen(
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write the identity here (0600; never over a file).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Make a new age identity (X25519) and print its public key, the recipient to put
    under `encryption: recipients:`. Keep the identity away from the backup host."""
    from db_backup.keys import write_new_identity

    with exits.errors_to_exit_codes():
        text, recipient = write_new_identity(output)
    if output is None:
        typer.echo(text, nl=False)  # the secret on stdout only when asked for no file
    else:
        typer.echo(f"identity written to {output}", err=True)
    typer.echo(f"Public key: {recipient}", err=output is None)


@app.command("hash-password")
def hash_password_command() -> None:
    """Read a password (asked for on a terminal, else the first line of stdin) and print
    its hash for `web: password_hash:`."""
    import getpass

    from db_backup.web.security import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password for the web UI: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        exits.fail_usage("hash-password: an empty password")
    typer.echo(hash_password(password))


@app.command("notify-test")
def notify_test(config: ConfigOption) -> None:
    """Send a test message to every notifier in the config and say how each went
    (healthchecks: a /log ping, which changes no check's state)."""
    import socket

    with exits.errors_to_exit_codes():
        loaded = setup.load_config(config)
        if not loaded.notify:
            typer.echo(f"{config}: no notifiers (`notify:`) to test", err=True)
            raise typer.Exit(exits.EXIT_FAILED)
        from db_backup.notification import Notice
        from db_backup.notify import send_notice

        notice = Notice(
            command="notify-test",
            host=socket.gethostname(),
            config=loaded.source,
            noun="notifiers",
            total=len(loaded.notify),
            failed=0,
            problems=(),
        )
        deliveries = exits.interruptible(send_notice(loaded.notify, notice))
    for delivery in deliveries:
        tries = "" if delivery.attempts == 1 else f" ({delivery.attempts} attempts)"
        if delivery.ok:
            typer.echo(f"OK      {delivery.notifier}{tries}")
        else:
            typer.echo(f"FAILED  {delivery.notifier}: {delivery.error}{tries}")
    failed = sum(1 for delivery in deliveries if not delivery.ok)
    typer.echo(f"{len(deliveries) - failed} reached, {failed} failed", err=True)
    raise typer.Exit(exits.EXIT_FAILED if failed else exits.EXIT_OK)


# -- demo ----------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo's config and backups afterwards.")
    ] = False,
) -> None:
    """Back up a throwaway local PostgreSQL: live progress, restore, row check, clean-up."""
    from db_backup.demo import DemoSite

    setup.use_one_malloc_arena()
    with exits.errors_to_exit_codes(), DemoSite(keep=keep) as site:
        loaded = setup.load_config(site.config_path)
        code, report = _run_backup(loaded, loaded.backups, _RunOptions())
        if code == exits.EXIT_OK:
            site.restore_and_check(report)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point. A bug must not greet the user with a traceback: it gets
    one line and exit 1 (the traceback goes to the log at --log-level debug)."""
    try:
        app(args=normalize_optional_values(sys.argv[1:]), standalone_mode=True)
    except Exception as exc:  # BackupErrors were handled inside; this is a bug of ours
        log.debug("internal error", exc_info=True)
        sys.stderr.write(
            f"db-backup: internal error: {type(exc).__name__}: {exc} "
            "(run with --log-level debug for the traceback, and please report it)\n"
        )
        sys.exit(exits.EXIT_FAILED)


def normalize_optional_values(args: list[str]) -> list[str]:
    """`--wait` alone → `--wait=forever`: click has no options whose value may be left out."""
    return [f"--wait={WAIT_FOREVER}" if arg == "--wait" else arg for arg in args]

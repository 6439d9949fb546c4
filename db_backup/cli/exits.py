"""Exit codes, decided here and nowhere else; and how errors and signals end a command.

0 every backup (or check) succeeded; 1 one or more failed, or a target could not be read;
2 usage or config error (nothing was dumped); 130 / 143 stopped by SIGINT / SIGTERM.
A BackupError becomes a message on stderr and its code; no traceback reaches a user.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import typer

if TYPE_CHECKING:  # `--help` and `validate` must not pay for these imports
    from db_backup.model import RunReport

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

EXIT_CODES_HELP = """\
Exit codes: 0 all backups succeeded; 1 one or more backups (or checks) failed;
2 usage or config error; 130 interrupted by SIGINT (Ctrl-C); 143 stopped by SIGTERM.
"""


def for_run(report: RunReport) -> int:
    """A backup run's exit code: the signal that stopped it, else 1 if a job failed."""
    if report.interrupted_by:
        return for_signal(report.interrupted_by)
    return EXIT_FAILED if report.failed else EXIT_OK


def for_signal(name: str) -> int:
    """130 for SIGINT, 143 for SIGTERM (interrupts.py exits with the same when it must)."""
    from db_backup.interrupts import SIGNAL_EXIT

    return SIGNAL_EXIT[name]


def fail_usage(message: str) -> NoReturn:
    typer.echo(f"db-backup: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Run `main`; SIGINT or SIGTERM ends the command at once, with exit 130 / 143."""
    from db_backup.interrupts import run_interruptible

    outcome = run_interruptible(main)
    if outcome.interrupted_by is not None:
        typer.echo(f"db-backup: interrupted by {outcome.interrupted_by}", err=True)
        raise typer.Exit(for_signal(outcome.interrupted_by))
    return cast(T, outcome.value)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """BackupErrors → a message on stderr and exit 2 (config/usage) or 1; never a traceback."""
    from db_backup.errors import BackupError, ConfigError, SelectionError

    try:
        yield
    except ConfigError as exc:
        noun = "problem" if len(exc.issues) == 1 else "problems"
        typer.echo(f"db-backup: config {noun}:", err=True)
        for issue in exc.issues:
            typer.echo(f"  {issue}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except SelectionError as exc:
        fail_usage(str(exc))
    except BackupError as exc:
        typer.echo(f"db-backup: error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def for_target_errors(errors: dict[str, str]) -> None:
    """Name every target that could not be read or changed; exit 1 if there was one."""
    for label, error in errors.items():
        typer.echo(f"error: target {label}: {error}", err=True)
    if errors:
        raise typer.Exit(EXIT_FAILED)

"""The command-line edge: typer commands that parse options, call one function, pick an exit."""

from db_backup.cli.commands import app, main

__all__ = ["app", "main"]

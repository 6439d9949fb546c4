"""The command-line edge: typer commands that parse options, call one function, pick an exit."""

from db_backup.cli.app import app, main

__all__ = ["app", "main"]

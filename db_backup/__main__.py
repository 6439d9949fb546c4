"""`python -m db_backup` runs the CLI."""

from db_backup.cli.commands import main

main()

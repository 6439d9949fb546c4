"""Options several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path,
    typer.Option(
        "-c",
        "--config",
        envvar="DB_BACKUP_CONFIG",
        help="Config file (YAML). Also from DB_BACKUP_CONFIG.",
        show_default=False,
    ),
]


NamesOption = Annotated[
    list[str] | None,
    typer.Option(
        "-n",
        "--name",
        help='Only this backup, or <backup>.<database> for one of a "*" (repeatable).',
        show_default=False,
    ),
]


IdentityOption = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        envvar="DB_BACKUP_IDENTITY",
        help="age identity file (AGE-SECRET-KEY-1… lines, or an OpenSSH private key) that "
        "decrypts encrypted backups. Also from DB_BACKUP_IDENTITY, or identity_file: in the "
        "config's verify:/restore: section.",
        show_default=False,
    ),
]

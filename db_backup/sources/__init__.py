"""Where dumps come from: one interface (base.py) and an engine per config `type`.

PostgreSQL: pg_source.py (PostgresSource) over postgres.py (pure: argv, versions, markers),
pg_server.py (connections, discovery, clients) and pg_admin.py (databases for a restore).
Another engine is a module here and a line in ENGINES.
"""

from __future__ import annotations

import importlib

from db_backup.config.schema import BackupConfig
from db_backup.errors import BackupError
from db_backup.sources.base import Source

# engine (the config's `type`, a manifest's `engine`) → "module:class", imported when used
# (psycopg and the like load only for the engines a run needs).
ENGINES = {
    "postgres": "db_backup.sources.pg_source:PostgresSource",
    "mysql": "db_backup.sources.my_source:MysqlSource",  # type: mysql and type: mariadb
}


def source_named(engine: str) -> Source:
    """The engine of this name."""
    if engine not in ENGINES:
        raise BackupError(f"unknown database engine {engine!r}; known: {', '.join(ENGINES)}")
    module, _, name = ENGINES[engine].partition(":")
    source: Source = getattr(importlib.import_module(module), name)()
    return source


def source_for(backup: BackupConfig) -> Source:
    """The engine that dumps this backup."""
    return source_named(backup.engine)

"""A server's users, roles and grants as SQL (`globals: true`), from SHOW CREATE USER and
SHOW GRANTS, for MySQL and MariaDB alike. MySQL's mysqldump has no way to dump accounts, and
MariaDB's `mariadb-dump --system=users` writes what an admin over TCP cannot restore (the
server's own mariadb.sys, and root's proxy grant that only root over the socket may give):
here each account becomes CREATE ... IF NOT EXISTS and its grants, the server's own left out.

It runs as a dump program of its own, `python -I -m db_backup.sources.my_users FILE`, so it is
bounded, cancelled, checked for its end marker and stored exactly like mysqldump's output.
FILE is an inherited pipe (process.spawn's `inherited_file`) holding PyMySQL's connect()
arguments as JSON, the password among them: never in argv, the environment or on disk.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from db_backup.errors import BackupError
from db_backup.sources.mysql import is_server_account, users_script

_UNKNOWN_VARIABLE = 1193


def dump_users(connection: Any) -> str:
    """Every account but the server's own, as SQL (see mysql.users_script)."""
    import pymysql

    with connection.cursor() as cursor:

        def rows(sql: str, *args: str) -> list[tuple[Any, ...]]:
            cursor.execute(sql, args or None)
            return list(cursor.fetchall())

        try:  # MySQL >= 8.0.17: password hashes as hex, not raw bytes a client may mangle
            cursor.execute("SET SESSION print_identified_with_as_hex = ON")
        except pymysql.err.MySQLError as exc:
            if exc.args[0] != _UNKNOWN_VARIABLE:  # MariaDB, older MySQL: hashes are text
                raise
        [(version, hostname)] = rows("SELECT VERSION(), @@hostname")
        mariadb = bool(rows("SHOW COLUMNS FROM mysql.user LIKE 'is_role'"))
        if mariadb:  # roles are not users; a user's default role is a column
            accounts = rows("SELECT user, host, is_role = 'Y', default_role FROM mysql.user")
        else:  # MySQL 8: roles are locked users, created first (a DEFAULT ROLE names them)
            roles = set(rows("SELECT from_user, from_host FROM mysql.role_edges"))
            accounts = [
                (user, host, False, None)
                for user, host in rows("SELECT user, host FROM mysql.user")
            ]
            accounts.sort(key=lambda account: (account[:2] not in roles, account[:2]))
        creates: list[str] = []
        grants: list[str] = []
        for user, host, is_role, default_role in accounts:
            if is_server_account(user):
                continue
            if is_role:
                [(create,)] = rows("SELECT CONCAT('CREATE ROLE ', QUOTE(%s))", user)
                shown = rows("SHOW GRANTS FOR %s", user)
            else:
                [(create,)] = rows("SHOW CREATE USER %s@%s", user, host)
                shown = rows("SHOW GRANTS FOR %s@%s", user, host)
            creates.append(create)
            grants += [grant for (grant,) in shown]
            if default_role:
                [(default,)] = rows(
                    "SELECT CONCAT('SET DEFAULT ROLE ', QUOTE(%s), ' FOR ', QUOTE(%s), '@', "
                    "QUOTE(%s))",
                    default_role,
                    user,
                    host,
                )
                grants.append(default)
    completed = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return users_script(f"{hostname} ({version})", creates, grants, completed)


def main(argv: list[str]) -> int:
    """Write the users script of the server FILE's connect() arguments reach, to stdout."""
    import pymysql

    from db_backup.sources.my_server import check_error, connect

    options: dict[str, Any] = json.loads(Path(argv[1]).read_bytes())
    try:
        connection = connect(options)
        try:
            script = dump_users(connection)
        except pymysql.err.MySQLError as exc:
            raise check_error(exc, options.get("password")) from None
        finally:
            connection.close()
    except BackupError as exc:  # already free of the password (see my_server.check_error)
        print(f"db-backup users: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(script)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

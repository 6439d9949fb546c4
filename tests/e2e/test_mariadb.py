"""MariaDB backups against a real server the suite starts: a round trip of varied types and
hostile names (every table's rows and checksum, routines, triggers, views, events), the
password kept out of every child's argv and environment, completeness by the end marker,
tables --single-transaction cannot make consistent named, connection checks, discovery
without the server's own schemas, globals, and PostgreSQL and MariaDB jobs in one run."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from db_backup.mariadbcluster import ThrowawayMariaDB
from db_backup.pgcluster import ThrowawayCluster, free_port
from tests.conftest import (
    StartCli,
    cli_env,
    create_database,
    mariadb_defaults,
    run_cli,
    server_defaults,
    write_config,
)
from tests.e2e.test_concurrency import intervals, peak_overlap
from tests.fakes import gated_pg_dump, holding_dump, truncating_pg_dump
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

# MariaDB's identifiers are utf8mb3: no emoji in names (the data has some)
HOSTILE_DATABASE = '-shop `db` "é"\'s'
VARIED = """
CREATE TABLE `we``ird "tab" é` (
  id INT PRIMARY KEY AUTO_INCREMENT,
  doc JSON,
  blob_col LONGBLOB,
  amount DECIMAL(20, 6),
  at DATETIME(6),
  mood ENUM('happy', 'sad'),
  tags SET('a', 'b', 'c'),
  note VARCHAR(200) CHARACTER SET utf8mb4,
  empty_or_null TEXT
) ENGINE=InnoDB;
INSERT INTO `we``ird "tab" é` (doc, blob_col, amount, at, mood, tags, note, empty_or_null)
VALUES
  ('{"k": [1, 2, {"x": null}]}', X'00FF0001', 12345678901234.123456,
   '2026-12-02 01:02:03.456789', 'happy', 'a,c', 'emoji 🙂 and \\\\ and \\' quote', NULL),
  (NULL, X'', -0.000001, '1970-01-01 00:00:01.000000', 'sad', '', '', ''),
  ('[]', NULL, 0, NULL, NULL, NULL, 'line\\nbreak\\ttab', 'x');
CREATE TABLE plain (n INT PRIMARY KEY, label VARCHAR(20)) ENGINE=InnoDB;
INSERT INTO plain SELECT seq, CONCAT('row ', seq) FROM seq_1_to_2000;
CREATE VIEW `big view` AS SELECT n FROM plain WHERE n > 1000;
CREATE PROCEDURE `add one`(INOUT x INT) SET x = x + 1;
CREATE TRIGGER `stamp` BEFORE INSERT ON plain FOR EACH ROW SET NEW.label = UPPER(NEW.label);
"""
EVENT = "CREATE EVENT `nightly` ON SCHEDULE EVERY 1 DAY DO DELETE FROM plain WHERE n < 0;"
# mariadb-dump cannot dump the events of a database whose name holds a quote: the round
# trip with events runs under a name without one
NO_QUOTE_DATABASE = "-also `odd` é name"


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def make_database(server: ThrowawayMariaDB, name: str, script: str = "") -> None:
    server.sql(f"DROP DATABASE IF EXISTS {quoted(name)}; CREATE DATABASE {quoted(name)};")
    if script:
        server.sql(script, database=name)


def fingerprint(server: ThrowawayMariaDB, database: str) -> dict[str, Any]:
    """What a database holds: each table's rows and checksum, its other objects' names."""
    tables = server.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
        "AND table_type = 'BASE TABLE' ORDER BY table_name",
        database=database,
    ).splitlines()
    found: dict[str, Any] = {"tables": {}}
    for table in tables:
        count = server.sql(f"SELECT COUNT(*) FROM {quoted(table)}", database=database)  # noqa: S608
        checksum = server.sql(f"CHECKSUM TABLE {quoted(table)} EXTENDED", database=database)
        found["tables"][table] = (int(count), checksum.split("\t")[-1].strip())
    for kind, query in {
        "views": "SELECT table_name FROM information_schema.views WHERE table_schema = DATABASE()",
        "routines": "SELECT routine_name FROM information_schema.routines "
        "WHERE routine_schema = DATABASE()",
        "triggers": "SELECT trigger_name FROM information_schema.triggers "
        "WHERE trigger_schema = DATABASE()",
        "events": "SELECT event_name FROM information_schema.events "
        "WHERE event_schema = DATABASE()",
    }.items():
        found[kind] = sorted(server.sql(query, database=database).splitlines())
    return found


def configure(tmp_path: Path, server: ThrowawayMariaDB, backups: list[dict[str, Any]]) -> Path:
    return write_config(
        tmp_path / "backup.yml",
        {"defaults": mariadb_defaults(server, tmp_path / "out"), "backups": backups},
    )


@pytest.mark.parametrize(
    ("database", "script", "events"),
    [(HOSTILE_DATABASE, VARIED, []), (NO_QUOTE_DATABASE, VARIED + EVENT, ["nightly"])],
)
def test_a_round_trip_keeps_every_row_type_name_and_object(
    mariadb: ThrowawayMariaDB, tmp_path: Path, database: str, script: str, events: list[str]
) -> None:
    make_database(mariadb, database, script)
    config = configure(tmp_path, mariadb, [{"name": "shop", "database": database}])
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(mariadb=mariadb))
    assert result.returncode == 0, result.stderr
    [job] = json.loads(result.stdout)["jobs"]
    manifest = json.loads(Path(job["manifest"]).read_text())
    assert manifest["engine"] == "mysql"
    assert manifest["client"].startswith("mariadb-dump ")
    assert manifest["checks"] == ["sha256", "end marker"]
    assert Path(job["file"]).stat().st_mode & 0o777 == 0o600
    make_database(mariadb, "restored")
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={mariadb.socket}", "--user=root", "restored"],
        input=gzip.decompress(Path(job["file"]).read_bytes()),
        check=True,
        capture_output=True,
    )
    original = fingerprint(mariadb, database)
    # the rows of every table, counted from the dump as it streamed, are the database's
    rows = {name: count for name, (count, _) in original["tables"].items()}
    assert manifest["contents"]["tables"] == rows
    assert rows['we`ird "tab" é'] == 3
    assert rows["plain"] == 2000
    assert original["views"] == ["big view"]
    assert original["routines"] == ["add one"]
    assert original["triggers"] == ["stamp"]
    assert original["events"] == events
    assert fingerprint(mariadb, "restored") == original


def test_events_a_quoted_name_keeps_from_mariadb_dump_are_a_clear_failure(
    mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    make_database(mariadb, "it's", "CREATE TABLE plain (n INT);" + EVENT)
    config = configure(tmp_path, mariadb, [{"name": "quoted", "database": "it's"}])
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(mariadb=mariadb))
    assert result.returncode == 1
    [job] = json.loads(result.stdout)["jobs"]
    assert "has 1 event(s), which mariadb-dump cannot dump" in job["error"]


def test_the_password_is_in_no_argv_environment_log_or_record(
    mariadb: ThrowawayMariaDB, tmp_path: Path, start_cli: StartCli
) -> None:
    password = "q'uo\"te\\back#hash;semi$dollar sp ace"
    literal = password.replace("\\", "\\\\").replace("'", "\\'")
    mariadb.sql(
        f"CREATE OR REPLACE USER 'odd'@'%' IDENTIFIED BY '{literal}'; "
        "GRANT ALL ON *.* TO 'odd'@'%';"
    )
    make_database(mariadb, "secretive", "CREATE TABLE t (n INT); INSERT INTO t VALUES (1);")
    gate, started = tmp_path / "gate", tmp_path / "started"
    real = subprocess.run(["which", "mariadb-dump"], capture_output=True, text=True).stdout
    wrapper = gated_pg_dump(tmp_path, Path(real.strip()), gate, started)
    (tmp_path / "odd.pw").write_text(password + "\n")
    (tmp_path / "odd.pw").chmod(0o600)
    backup = {
        "name": "secretive",
        "database": "secretive",
        "username": "odd",
        "password_file": "odd.pw",
        "dump_path": str(wrapper),
    }
    defaults = mariadb_defaults(mariadb, tmp_path / "out")
    del defaults["password"]
    config = write_config(tmp_path / "backup.yml", {"defaults": defaults, "backups": [backup]})
    process = start_cli(
        "--log-level", "debug", "backup", "-c", str(config), "--json", env=cli_env()
    )
    wait_for(started.exists, what="the dump to start", process=process)
    # What the dump program is given (the wrapper execs it with the same argv and environment)
    pid = int(started.read_text())
    seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
    assert b"--defaults-extra-file=/dev/fd/" in seen  # the option file: an inherited pipe
    gate.touch()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert password.encode() not in seen
    written = [p.read_bytes() for p in (tmp_path / "out").iterdir()]
    for text in [stdout.encode(), stderr.encode(), *written]:
        assert password.encode() not in text
    assert not any(Path(tmp_path).glob("**/*.cnf"))  # no option file on disk


def test_a_cut_dump_is_refused_and_leaves_no_file(
    mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    make_database(mariadb, "cut", "CREATE TABLE t AS SELECT seq FROM seq_1_to_50000;")
    real = subprocess.run(["which", "mariadb-dump"], capture_output=True, text=True).stdout
    fake = truncating_pg_dump(tmp_path, Path(real.strip()))
    config = configure(
        tmp_path, mariadb, [{"name": "cut", "database": "cut", "dump_path": str(fake)}]
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(mariadb=mariadb))
    assert result.returncode == 1
    [job] = json.loads(result.stdout)["jobs"]
    assert "ends without the completion marker" in job["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == []


def test_connection_checks_name_each_failure(mariadb: ThrowawayMariaDB, tmp_path: Path) -> None:
    make_database(mariadb, "present")
    make_database(mariadb, "mixed", "CREATE TABLE old_style (n INT) ENGINE=MyISAM;")
    config = configure(
        tmp_path,
        mariadb,
        [
            {"name": "ok", "database": "present"},
            {"name": "gone", "database": "no_such_db"},
            {"name": "badpw", "database": "present", "password": "wrong"},
            {"name": "nobody", "database": "present", "port": free_port()},
            {"name": "mixed", "database": "mixed"},
        ],
    )
    result = run_cli("validate", "-c", str(config), "--connect", env=cli_env(mariadb=mariadb))
    assert result.returncode == 1
    lines = {line.split(":")[0].strip(): line for line in result.stdout.splitlines()[1:]}
    assert "reachable" in lines["ok"]
    assert "MariaDB 10." in lines["ok"]
    assert "database missing" in lines["gone"]
    assert "auth failed" in lines["badpw"]
    assert "unreachable" in lines["nobody"]
    assert "old_style (MyISAM)" in result.stderr  # --single-transaction cannot cover it
    assert "wrong" not in result.stdout + result.stderr


def test_every_database_but_the_servers_own_and_its_globals(
    mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    for name in ("wild_a", "wild_b"):
        make_database(mariadb, name, "CREATE TABLE t (n INT);")
    mariadb.sql("CREATE OR REPLACE USER 'reporting'@'%' IDENTIFIED BY 'r3port';")
    config = configure(
        tmp_path,
        mariadb,
        [{"name": "all", "database": "*", "exclude": ["[!w]*"], "globals": True}],
    )  # fmt: skip
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(mariadb=mariadb))
    assert result.returncode == 0, result.stderr
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    assert sorted(jobs) == ["all.wild_a", "all.wild_b", f"globals-{mariadb.host}-{mariadb.port}"]
    users = gzip.decompress(
        Path(jobs[f"globals-{mariadb.host}-{mariadb.port}"]["file"]).read_bytes()
    )
    assert b"`reporting`@`%`" in users
    assert b"r3port" not in users  # a hash, never the password

    mariadb.sql("DROP USER 'reporting'@'%';")
    restored = run_cli("restore", "-c", str(config), "-n", "all.wild_a", "--to-database",
                       "wild_copy", "--with-globals", env=cli_env(mariadb=mariadb))  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "reporting" in mariadb.sql("SELECT user FROM mysql.user")


def test_users_roles_and_grants_come_back_with_their_passwords(
    mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    import pymysql

    make_database(mariadb, "granted", "CREATE TABLE t (n INT);")
    account = "'app''s #1'@'%'"
    mariadb.sql(
        f"CREATE OR REPLACE USER {account} IDENTIFIED BY 'pa$$ \"w0rd';"
        f"GRANT SELECT, INSERT ON granted.* TO {account};"
        "CREATE OR REPLACE ROLE auditor; GRANT SELECT ON granted.t TO auditor;"
        f"GRANT auditor TO {account}; SET DEFAULT ROLE auditor FOR {account};"
    )

    def grants() -> list[str]:
        return sorted(
            mariadb.sql(f"SHOW GRANTS FOR {account}; SHOW GRANTS FOR auditor;").splitlines()
        )

    grants_before = grants()
    backup = {"name": "granted", "database": "granted", "globals": True}
    config = configure(tmp_path, mariadb, [backup])
    env = cli_env(mariadb=mariadb)
    result = run_cli("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    jobs = {job["job"]: job for job in json.loads(result.stdout)["jobs"]}
    users = jobs[f"globals-{mariadb.host}-{mariadb.port}"]
    manifest = json.loads(Path(users["manifest"]).read_text())
    assert manifest["client"].startswith("db-backup users (PyMySQL ")
    assert manifest["checks"] == ["sha256", "end marker"]
    script = gzip.decompress(Path(users["file"]).read_bytes()).decode()
    assert "CREATE USER IF NOT EXISTS `app's #1`@`%`" in script
    assert "CREATE ROLE IF NOT EXISTS 'auditor'" in script
    assert "mariadb.sys" not in script  # the server's own account
    assert "w0rd" not in script  # a hash, never the password

    mariadb.sql(f"DROP USER {account}; DROP ROLE auditor;")  # also the role's own grants
    restored = run_cli("restore", "-c", str(config), "-n", "granted", "--to-database",
                       "granted_copy", "--with-globals", env=env)  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert grants() == grants_before
    login = pymysql.connect(host=mariadb.host, port=mariadb.port, user="app's #1",
                            password='pa$$ "w0rd', database="granted")  # fmt: skip
    with login.cursor() as cursor:
        cursor.execute("SELECT CURRENT_ROLE()")
        assert cursor.fetchone() == ("auditor",)  # its default role too
    login.close()  # the password hash came back with the user


def test_postgres_and_mariadb_jobs_in_one_run(
    pg: ThrowawayCluster, mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    create_database(pg, "both_pg", "CREATE TABLE t AS SELECT generate_series(1, 10) AS n;")
    make_database(mariadb, "both_my", "CREATE TABLE t AS SELECT seq FROM seq_1_to_10;")
    my = mariadb_defaults(mariadb, tmp_path / "out")
    config = write_config(
        tmp_path / "backup.yml",
        {
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                {"name": "pg", "database": "both_pg"},
                {"name": "my", "database": "both_my", **my},
                {"name": "my-missing", "database": "nope", **my},
            ],
        },
    )  # fmt: skip
    env = cli_env(pg, mariadb=mariadb)
    result = run_cli("backup", "-c", str(config), "--json", env=env)
    assert result.returncode == 1  # my-missing alone fails
    statuses = {job["job"]: job["status"] for job in json.loads(result.stdout)["jobs"]}
    assert statuses == {"pg": "succeeded", "my": "succeeded", "my-missing": "failed"}
    listed = run_cli("list", "-c", str(config), "--json", env=env)
    engines = {b["job"] for b in json.loads(listed.stdout)["backups"]}
    assert engines == {"pg", "my"}
    verified = run_cli("verify", "-c", str(config), env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 verified, 0 failed" in verified.stderr


def test_restore_and_restore_tests_of_mariadb_backups(
    mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    make_database(mariadb, "to_restore", VARIED)
    config = configure(tmp_path, mariadb, [{"name": "shop", "database": "to_restore"}])
    env = cli_env(mariadb=mariadb)
    assert run_cli("backup", "-c", str(config), env=env).returncode == 0
    mariadb.sql("DROP DATABASE IF EXISTS restored_copy;")

    restored = run_cli("restore", "-c", str(config), "-n", "shop", "--to-database",
                       "restored_copy", env=env)  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert fingerprint(mariadb, "restored_copy") == fingerprint(mariadb, "to_restore")

    # a database that holds data is never replaced: MariaDB cannot swap a checked copy in
    before = fingerprint(mariadb, "restored_copy")
    for extra in ([], ["--clean"]):
        again = run_cli("restore", "-c", str(config), "-n", "shop", "--to-database",
                        "restored_copy", *extra, env=env)  # fmt: skip
        assert again.returncode != 0
        assert "nothing was changed" in again.stderr
    assert fingerprint(mariadb, "restored_copy") == before

    # restore tests in a throwaway MariaDB: every table's rows as the dump counted them
    proved = run_cli("verify", "-c", str(config), "--restore", env=env)
    assert proved.returncode == 0, proved.stdout + proved.stderr
    assert "restore-tested" in proved.stdout
    assert "throwaway MariaDB" in run_cli("list", "-c", str(config), "--json", env=env).stdout

    [manifest_path] = (tmp_path / "out").glob("*.sql.gz.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["contents"]["tables"]["plain"] += 1  # the manifest now claims a row too many
    manifest_path.write_text(json.dumps(manifest))
    tampered = run_cli("verify", "-c", str(config), "--restore", env=env)
    assert tampered.returncode == 1
    assert "plain" in tampered.stdout
    assert "2001" in tampered.stdout


def test_postgres_and_mariadb_dumps_run_at_once(
    pg: ThrowawayCluster, mariadb: ThrowawayMariaDB, tmp_path: Path, start_cli: StartCli
) -> None:
    """Each dump is held at a gate as it starts; both reach theirs before either is let go:
    the two engines' jobs ran at the same time (no sleeps, no timings)."""
    create_database(pg, "overlap_pg", "CREATE TABLE t AS SELECT generate_series(1, 10) AS n;")
    make_database(mariadb, "overlap_my", "CREATE TABLE t AS SELECT seq FROM seq_1_to_10;")
    real_dump = subprocess.run(["which", "mariadb-dump"], capture_output=True, text=True)
    gates = {engine: (tmp_path / f"{engine}.gate", tmp_path / f"{engine}.started")
             for engine in ("pg", "my")}  # fmt: skip
    folders = {engine: tmp_path / engine for engine in gates}
    for folder in folders.values():
        folder.mkdir()
    pg_wrapper = gated_pg_dump(folders["pg"], pg.client_bin("pg_dump"), *gates["pg"])
    my_wrapper = gated_pg_dump(folders["my"], Path(real_dump.stdout.strip()), *gates["my"])
    my = mariadb_defaults(mariadb, tmp_path / "out", dump_path=str(my_wrapper))
    config = write_config(
        tmp_path / "backup.yml",
        {
            "concurrency": 2,
            "defaults": server_defaults(pg, tmp_path / "out", pg_dump_path=str(pg_wrapper)),
            "backups": [
                {"name": "pg", "database": "overlap_pg"},
                {"name": "my", "database": "overlap_my", **my},
            ],
        },
    )
    process = start_cli("backup", "-c", str(config), "--json", env=cli_env(pg, mariadb=mariadb))
    for engine, (_, started) in gates.items():
        wait_for(started.exists, what=f"the {engine} dump to start", process=process)
    for gate, _ in gates.values():
        gate.touch()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert {job["status"] for job in json.loads(stdout)["jobs"]} == {"succeeded"}


def test_a_server_killed_mid_dump_leaves_no_backup(tmp_path: Path, start_cli: StartCli) -> None:
    """Its own server: killed while a dump of it is held half-way; the job fails, nothing
    appears under a final name, and the next run's folder holds no partial file."""
    gate, held = tmp_path / "gate", tmp_path / "held"
    real = subprocess.run(["which", "mariadb-dump"], capture_output=True, text=True).stdout
    wrapper = holding_dump(tmp_path, Path(real.strip()), gate, held, after=200_000)
    with ThrowawayMariaDB() as doomed:
        make_database(doomed, "doomed", "CREATE TABLE t AS SELECT seq, MD5(seq) AS d "
                                        "FROM seq_1_to_100000;")  # fmt: skip
        config = configure(
            tmp_path, doomed, [{"name": "doomed", "database": "doomed", "dump_path": str(wrapper)}]
        )
        process = start_cli("backup", "-c", str(config), "--json", env=cli_env(mariadb=doomed))
        wait_for(held.exists, what="the dump to be held mid-stream", process=process)
        doomed.stop()  # SIGKILL: the server is gone under a running mariadb-dump
        gate.touch()
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    [job] = json.loads(stdout)["jobs"]
    assert job["status"] == "failed"
    assert "Lost connection to server during query" in job["error"]  # mid-dump, as meant
    assert [p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []


def test_max_per_host_holds_for_mariadb_beside_postgres(
    pg: ThrowawayCluster, mariadb: ThrowawayMariaDB, tmp_path: Path
) -> None:
    """From the dumps' recorded times: at most one at once against the MariaDB server
    (`max_per_host: 1`), while PostgreSQL's ran beside them."""
    names = [f"limit_{i}" for i in range(3)]
    for name in names:
        make_database(mariadb, name, "CREATE TABLE t AS SELECT seq, MD5(seq) AS d "
                                     "FROM seq_1_to_60000;")  # fmt: skip
        create_database(pg, name, "CREATE TABLE t AS SELECT g, md5(g::text) AS d "
                                  "FROM generate_series(1, 60000) g;")  # fmt: skip
    my = mariadb_defaults(mariadb, tmp_path / "out", max_per_host=1)
    config = write_config(
        tmp_path / "backup.yml",
        {
            "concurrency": 4,
            "defaults": server_defaults(pg, tmp_path / "out"),
            "backups": [
                *({"name": f"my-{name}", "database": name, **my} for name in names),
                *({"name": f"pg-{name}", "database": name} for name in names),
            ],
        },
    )
    result = run_cli("backup", "-c", str(config), "--json", env=cli_env(pg, mariadb=mariadb))
    assert result.returncode == 0, result.stderr
    spans = intervals(json.loads(result.stdout))
    assert peak_overlap(spans, f"{mariadb.host}:{mariadb.port}") == 1
    assert peak_overlap(spans) >= 2  # the limit is per server: others ran meanwhile

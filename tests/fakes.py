"""Fake pg_dump programs that fail on cue. Everything else in the suite is real.

Each fake answers `--version` like pg_dump 15 (so client selection accepts it), then behaves as
asked. They are written as executable scripts because db-backup spawns pg_dump as a program.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PRELUDE = """#!{python}
import os, sys, time, json
if sys.argv[1:] == ["--version"]:
    print("pg_dump (PostgreSQL) {version}")
    sys.exit(0)
out = sys.stdout.buffer


def announce(path):  # publish our PID atomically: never seen half-written
    temporary = f"{{path}}.{{os.getpid()}}.tmp"  # our own: several fakes may announce at once
    with open(temporary, "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(temporary, path)
"""

BEHAVIOURS = {
    # Writes 2 MiB of SQL, then reports a lost connection and exits 1.
    "dies-halfway": """
out.write(b"--\\n-- PostgreSQL database dump\\n--\\n" + b"INSERT INTO t VALUES (1);\\n" * 80000)
out.flush()
sys.stderr.write("pg_dump: error: Dumping the contents of table \\"t\\" failed\\n")
sys.stderr.write("pg_dump: detail: server closed the connection unexpectedly\\n")
sys.exit(1)
""",
    # Exits 0 after half a dump: no completion marker at the end.
    "truncated-exit-0": """
out.write(b"--\\n-- PostgreSQL database dump\\n--\\n")
out.write(b"COPY t (a) FROM stdin;\\n" + b"1\\n" * 100000)
sys.exit(0)
""",
    # Writes a little, then stops writing forever (until killed).
    "hangs": """
out.write(b"--\\n-- PostgreSQL database dump\\n--\\n")
out.flush()
if os.environ.get("FAKE_STARTED_FILE"):
    announce(os.environ["FAKE_STARTED_FILE"])
while True:
    time.sleep(3600)
""",
    # Ignores SIGTERM and hangs: only SIGKILL ends it.
    "ignores-sigterm": """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out.write(b"--\\n-- PostgreSQL database dump\\n--\\n")
out.flush()
announce(os.environ["FAKE_STARTED_FILE"])
while True:
    time.sleep(3600)
""",
    # A whole, valid-looking dump in two halves of 6 MiB (random hex: it does not compress):
    # after the first it announces itself and waits for $FAKE_GATE to exist.
    "pauses-halfway": """
import secrets
def half():
    for _ in range(6 * 1024):
        out.write(b"-- " + secrets.token_hex(510).encode() + b"\\n")
out.write(b"--\\n-- PostgreSQL database dump\\n--\\n")
half()
out.flush()
announce(os.environ["FAKE_STARTED_FILE"])
while not os.path.exists(os.environ["FAKE_GATE"]):
    time.sleep(0.02)
half()
out.write(b"--\\n-- PostgreSQL database dump complete\\n--\\n")
sys.exit(0)
""",
    # Floods stderr (10 MiB) before failing: the runner must neither block nor keep it all.
    "floods-stderr": """
line = "pg_dump: warning: " + "x" * 200 + "\\n"
for i in range(50000):
    sys.stderr.write(line)
sys.stderr.write("pg_dump: error: the last words\\n")
sys.exit(3)
""",
}


def fake_pg_dump(directory: Path, behaviour: str, version: str = "15.99") -> Path:
    """Write the fake `behaviour` as an executable script in `directory`; returns its path.

    It reports `version` to `--version`, as pg_dump does."""
    path = directory / f"fake-pg_dump-{behaviour}-{version}"
    path.write_text(_PRELUDE.format(python=sys.executable, version=version) + BEHAVIOURS[behaviour])
    path.chmod(0o755)
    return path


def recording_pg_dump(directory: Path, real_pg_dump: Path, log: Path) -> Path:
    """A wrapper that appends its argv (as JSON) to `log`, then execs the real pg_dump."""
    path = directory / "recording-pg_dump"
    path.write_text(
        f"""#!{sys.executable}
import json, os, sys
with open({str(log)!r}, "a") as handle:
    handle.write(json.dumps(sys.argv) + "\\n")
os.execv({str(real_pg_dump)!r}, [{str(real_pg_dump)!r}, *sys.argv[1:]])
"""
    )
    path.chmod(0o755)
    return path


def gated_pg_dump(directory: Path, real_pg_dump: Path, gate: Path, started: Path) -> Path:
    """The real pg_dump behind a gate: it records its PID in `started` (and appends it to
    `started`.all), blocks until `gate` exists (or `gate`.n, for the n-th to start, from 0),
    then execs the real pg_dump. Lets a test hold a run mid-job for as long as needed."""
    path = directory / "gated-pg_dump"
    path.write_text(
        f"""#!{sys.executable}
import os, sys, time
if "--version" not in sys.argv[1:]:
    temporary = f"{started!s}.{{os.getpid()}}.tmp"  # our own: several may start at once
    with open(temporary, "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(temporary, {str(started)!r})  # never seen half-written
    with open({str(started)!r} + ".all", "a") as handle:  # one line per started dump
        handle.write(str(os.getpid()) + "\\n")
    with open({str(started)!r} + ".all") as handle:
        order = handle.read().split().index(str(os.getpid()))
    # Opened for all by `gate`, or for the n-th dump to start (from 0) by `gate`.n
    while not (os.path.exists({str(gate)!r}) or os.path.exists(f"{gate!s}.{{order}}")):
        time.sleep(0.02)
os.execv({str(real_pg_dump)!r}, [{str(real_pg_dump)!r}, *sys.argv[1:]])
"""
    )
    path.chmod(0o755)
    return path


def truncating_pg_dump(directory: Path, real_pg_dump: Path) -> Path:
    """Runs the real pg_dump (or mariadb-dump), passes on only the first half of its
    output, and exits 0."""
    path = directory / f"truncating-{real_pg_dump.name}"
    path.write_text(
        f"""#!{sys.executable}
import subprocess, sys
# close_fds=False: the real program reads its option file from an inherited pipe
argv = [{str(real_pg_dump)!r}, *sys.argv[1:]]
result = subprocess.run(argv, stdout=subprocess.PIPE, close_fds=False)
if "--version" in sys.argv[1:]:
    sys.stdout.buffer.write(result.stdout)
else:
    sys.stdout.buffer.write(result.stdout[: len(result.stdout) // 2])
sys.exit(0)
"""
    )
    path.chmod(0o755)
    return path


def holding_dump(directory: Path, real_dump: Path, gate: Path, held: Path, after: int) -> Path:
    """Runs the real dump program and passes its output on, but after `after` bytes stops
    reading and passing (touching `held`) until `gate` exists; then passes the rest on and
    exits as the real program did. Holds a dump mid-stream for as long as a test needs."""
    path = directory / f"holding-{real_dump.name}"
    path.write_text(
        f"""#!{sys.executable}
import os, subprocess, sys, time
argv = [{str(real_dump)!r}, *sys.argv[1:]]
if "--version" in sys.argv[1:]:
    os.execv(argv[0], argv)
# close_fds=False: the real program reads its option file from an inherited pipe
child = subprocess.Popen(argv, stdout=subprocess.PIPE, close_fds=False)
out = sys.stdout.buffer
out.write(child.stdout.read({after}))
out.flush()
open({str(held)!r}, "w").close()
while not os.path.exists({str(gate)!r}):
    time.sleep(0.02)
while chunk := child.stdout.read(65536):
    out.write(chunk)
sys.exit(child.wait())
"""
    )
    path.chmod(0o755)
    return path

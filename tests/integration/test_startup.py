"""Commands import only what they need: no compression library, driver or live view for
`--help` and `validate` (start-up time is measured in the benchmark, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "backup.yml"
HEAVY = (
    "isal", "zstandard", "psycopg", "rich.progress", "rich.live", "pydantic", "botocore",
    "starlette", "uvicorn", "pyrage", "cronsim",  # serve --listen, encryption, schedules
)  # fmt: skip


def imported_modules(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "db_backup", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, "no import timings were printed"
    return names


@pytest.mark.parametrize(
    "args", [["--help"], ["backup", "--help"], ["validate", "-c", str(EXAMPLE)]]
)
def test_light_commands_do_not_import_heavy_modules(args: list[str]) -> None:
    modules = imported_modules(*args)
    assert "db_backup.cli.commands" in modules
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []

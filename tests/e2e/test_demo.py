"""`db-backup demo`, the embedded default, runs end to end and cleans up after itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_demo_backs_up_restores_verifies_and_cleans_up() -> None:
    result = run_cli("demo", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "public.orders: 150000 rows" in out
    assert out.count("identical") >= 3  # both tables and the sequences
    assert "DIFFERENT" not in out
    # MariaDB's server binaries are installed here (.ci/run): its part runs too
    assert "6 succeeded, 0 failed, 0 cancelled" in out
    assert "MariaDB orders: 100000 rows" in out
    assert out.count("identical") >= 5  # and MariaDB's two tables
    workdir = re.search(r"config:\s+(\S+)/backup\.yml", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()  # cleaned up
    assert "Cleaned up" in out

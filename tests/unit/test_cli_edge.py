"""The CLI edge: a bug of ours becomes one line and exit 1, never a traceback."""

from __future__ import annotations

import pytest

from db_backup.cli import commands as cli_app


def test_an_unexpected_exception_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("something we did not foresee")

    monkeypatch.setattr(cli_app, "app", broken)
    monkeypatch.setattr("sys.argv", ["db-backup", "validate", "-c", "x.yml"])
    with pytest.raises(SystemExit) as exited:
        cli_app.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("db-backup: internal error: RuntimeError: something we did not foresee")
    assert "Traceback" not in err


def test_wait_without_a_value_means_wait_as_long_as_it_takes() -> None:
    assert cli_app.normalize_optional_values(["backup", "--wait", "-c", "x"]) == [
        "backup",
        "--wait=forever",
        "-c",
        "x",
    ]
    assert cli_app.normalize_optional_values(["--wait=5m"]) == ["--wait=5m"]

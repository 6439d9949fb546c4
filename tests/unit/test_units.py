from __future__ import annotations

from typing import Any

import pytest

from db_backup.units import format_bytes, format_duration, format_rate, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        (" 2m 5s ", 125.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "soon",
        "5x",
        "h",
        "-5s",
        "0",
        0,
        True,
        "5m garbage",
        None,
        [5],
        {"s": 5},
        float("nan"),
        float("inf"),
    ],
)
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_formatting() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB"
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m05s"
    assert format_duration(7380) == "2h03m"
    assert format_rate(10 * 1024**2, 2) == "5.0 MiB/s"
    assert format_rate(1, 0) == "-"

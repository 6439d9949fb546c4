"""Durations and byte counts: parsing from config, formatting for people. Pure."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from `90`, `"90s"`, `"5m"`, `"2h"`, `"1h30m"` or `"500ms"`.

    Raises ValueError with the accepted syntax when the value is not a positive duration.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as 30s, 5m, 2h or 1h30m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"expected a duration such as 30s, 5m, 2h or 1h30m, got {value!r}")
            seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_UNIT_BYTES = {"": 1, "B": 1} | {
    f"{letter}{infix}B": (1024 if infix else 1000) ** (power + 1)
    for power, letter in enumerate("KMGT")
    for infix in ("", "I")
}


def parse_size(value: str | int) -> int:
    """Bytes from `16777216`, `"16MiB"`, `"16MB"` (10^6) or `"1GiB"`.

    Raises ValueError with the accepted syntax when the value is not a positive size.
    """
    example = "a size such as 16MiB, 64MB or 1GiB"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected {example}, got {value!r}")
    if isinstance(value, int):
        count = value
    else:
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"expected {example}, got {value!r}")
        count = int(float(match[1]) * _UNIT_BYTES[(match[2] or "").upper()])
    if count <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return count


def format_bytes(count: float) -> str:
    """`1.5 MiB`-style sizes, binary units as `ls -h` and pg_size_pretty use."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """`0.4s`, `12.3s`, `4m05s`, `2h03m`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(byte_count: float, seconds: float) -> str:
    """Throughput such as `35.2 MiB/s`; `-` when no time elapsed."""
    if seconds <= 0:
        return "-"
    return f"{format_bytes(byte_count / seconds)}/s"

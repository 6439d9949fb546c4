"""`${VAR}` references in config values, expanded as a shell expands them. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


ENV_FORMS = "${VAR}, ${VAR:-default} or ${VAR-default} (and $$ for a literal $)"


def expand_env(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}`, `${VAR:-default}` (VAR unset or empty) and `${VAR-default}` (VAR
    unset) as a shell does, defaults holding references of their own; `$$` is a literal `$`.

    Returns the text and the names of referenced variables that are not set (and needed).
    Any other `${...}` form raises ValueError: a silently wrong value is worse than none."""
    missing: list[str] = []
    text, end = _expand_until(value, 0, environ, missing, closing=False)
    assert end == len(value)
    return text, missing


def _expand_until(
    value: str, start: int, environ: Mapping[str, str], missing: list[str], *, closing: bool
) -> tuple[str, int]:
    """Expand from `start` to the end, or (`closing`) to the `}` that closes a default;
    returns the text and where it stopped (after that `}`)."""
    out: list[str] = []
    i = start
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            text, i = _reference(value, i + 2, environ, missing)
            out.append(text)
        elif closing and value[i] == "}":
            return "".join(out), i + 1
        else:
            out.append(value[i])
            i += 1
    if closing:
        raise ValueError("a ${ is not closed by }")
    return "".join(out), i


def _reference(
    value: str, start: int, environ: Mapping[str, str], missing: list[str]
) -> tuple[str, int]:
    """One `${...}` whose name starts at `start`: its text and where it ends."""
    name = _NAME.match(value, start)
    after = name.end() if name else start
    operator = next((op for op in ("}", ":-", "-") if value.startswith(op, after)), None)
    if name is None or operator is None:
        shown = value[start - 2 : value.find("}", start) + 1 or len(value)]
        raise ValueError(f"unsupported reference {shown!r}: use {ENV_FORMS}")
    variable = environ.get(name.group())
    if operator == "}":
        if variable is None:
            missing.append(name.group())
        return variable or "", after + 1
    use_default = variable is None or (operator == ":-" and variable == "")
    # The default is expanded only when it is used (a shell does the same): a variable
    # named in an unused default need not be set.
    ignored: list[str] = []
    default, end = _expand_until(
        value, after + len(operator), environ, missing if use_default else ignored, closing=True
    )
    return (default if use_default else variable or ""), end

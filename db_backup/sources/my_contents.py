"""What a MySQL/MariaDB dump holds, counted as it streams past: rows per table. Pure and
sans-I/O: the pump feeds it the dump's bytes.

Rows come as extended INSERT statements, ``INSERT INTO `t` VALUES ...;``. A string value
never holds a raw line break (the dump program writes it as ``\\n``), which makes counting
exact and cheap:

- MariaDB's mariadb-dump writes a row per line (``VALUES`` ends its line; each row starts a
  line with ``(``): rows are 1 + the ``\\n(`` in the statement, one C-level count per chunk.
- MySQL's mysqldump writes a statement on one line: there rows are separated by ``),(``
  outside string literals, counted once the literals are removed (one regex pass).

The counts are the dump's own, taken in its snapshot, so a restore can be checked against
them exactly. A table without rows has no INSERT: it is listed from its ``LOCK TABLES``.
"""

from __future__ import annotations

import re

from db_backup.manifest import Contents

_INSERT = b"INSERT INTO `"
_LOCK = b"LOCK TABLES `"  # written for every table whose data is dumped, rows or not
_STATEMENT_END = b";\n"
_ROW_START = b"\n("
# A string literal: quotes with backslash escapes (or doubled quotes).
_STRING = re.compile(rb"'(?:[^'\\]|\\.|'')*'", re.DOTALL)


def _name(line: bytes, start: int) -> tuple[str, int] | None:
    """The backquoted name starting at line[start] (after its opening `) and the index just
    past its closing backquote."""
    end = line.find(b"`", start)
    while end >= 0 and line[end + 1 : end + 2] == b"`":  # `` is a backquote in the name
        end = line.find(b"`", end + 2)
    if end < 0:
        return None
    return line[start:end].replace(b"``", b"`").decode("utf-8", "replace"), end + 1


class MysqlDumpContents:
    """Feed it a dump's bytes in any chunks; `contents()` says what it held."""

    def __init__(self) -> None:
        self._tables: dict[str, int] = {}
        self._line = b""  # the start of a line outside a statement, not yet ended
        self._table: str | None = None  # in a row-per-line statement of this table
        self._last = b"\n"  # the byte before the data being fed

    def feed(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self._table is None:
                position = self._outside(data, position)
            else:
                position = self._rows(data, position)
        if data:
            self._last = data[-1:]

    def contents(self) -> Contents:
        return Contents(tables=dict(self._tables))

    def _outside(self, data: bytes, position: int) -> int:
        end = data.find(b"\n", position)
        if end < 0:
            self._line += data[position:]
            return len(data)
        line = self._line + data[position:end] if self._line else data[position:end]
        self._line = b""
        if line.startswith(_INSERT):
            self._insert(line)
        elif line.startswith(_LOCK):
            found = _name(line, len(_LOCK))
            if found is not None:
                self._tables.setdefault(found[0], 0)
        return end + 1

    def _insert(self, line: bytes) -> None:
        found = _name(line, len(_INSERT))
        if found is None:
            return
        table, after = found
        rest = line[after:]
        self._tables.setdefault(table, 0)
        if rest.rstrip() == b" VALUES":  # mariadb-dump: the rows follow, a line each
            self._table = table
        else:  # mysqldump: the whole statement on this line
            self._tables[table] += _STRING.sub(b"", rest).count(b"),(") + 1

    def _rows(self, data: bytes, position: int) -> int:
        assert self._table is not None
        before = data[position - 1 : position] if position else self._last
        if before == b";" and data[position : position + 1] == b"\n":
            self._table = None  # the statement ended just before this chunk
            return position + 1
        if before == b"\n" and data[position : position + 1] == b"(":
            self._tables[self._table] += 1  # a row's line starts right here
        end = data.find(_STATEMENT_END, position)
        stop = len(data) if end < 0 else end
        self._tables[self._table] += data.count(_ROW_START, position, stop)
        if end < 0:
            return len(data)
        self._table = None
        return end + len(_STATEMENT_END)

"""Rows per table counted from a MySQL/MariaDB dump as it streams, however it is cut into
chunks: MariaDB's row-per-line statements, MySQL's one-line statements, strings holding the
row separators, names with backquotes, tables without rows."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from db_backup.sources.my_contents import MysqlDumpContents

MARIADB_DUMP = (
    b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n"
    b"CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `s` text\n);\n"
    b"LOCK TABLES `t` WRITE;\n"
    b"INSERT INTO `t` VALUES\n"
    b"(1,'a ),( b \\n;\\n( c'),\n"
    b"(2,'it\\'s'),\n"
    b"(3,NULL);\n"
    b"INSERT INTO `t` VALUES\n"
    b"(4,'');\n"
    b"UNLOCK TABLES;\n"
    b'LOCK TABLES `we``ird "\xc3\xa9"` WRITE;\n'
    b'INSERT INTO `we``ird "\xc3\xa9"` VALUES\n'
    b"(0x00FF,'x');\n"
    b"UNLOCK TABLES;\n"
    b"LOCK TABLES `empty` WRITE;\n"
    b"UNLOCK TABLES;\n"
    b"-- Dump completed on 2026-12-02  1:02:03\n"
)
MYSQL_DUMP = (
    b"LOCK TABLES `t` WRITE;\n"
    b"INSERT INTO `t` VALUES (1,'a ),( b'),(2,'it\\'s ),('),(3,NULL);\n"
    b"INSERT INTO `t` VALUES (4,'');\n"
    b"UNLOCK TABLES;\n"
)
EXPECTED = {"t": 4, 'we`ird "é"': 1, "empty": 0}


def counted(data: bytes, cuts: list[int]) -> dict[str, int]:
    counter = MysqlDumpContents()
    edges = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        counter.feed(data[start:end])
    return counter.contents().tables


def test_whole_dumps_of_either_program() -> None:
    assert counted(MARIADB_DUMP, []) == EXPECTED
    assert counted(MYSQL_DUMP, []) == {"t": 4}


def test_a_byte_at_a_time() -> None:
    assert counted(MARIADB_DUMP, list(range(len(MARIADB_DUMP)))) == EXPECTED
    assert counted(MYSQL_DUMP, list(range(len(MYSQL_DUMP)))) == {"t": 4}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_chunking_gives_the_same_counts(cuts: list[int]) -> None:
    assert counted(MARIADB_DUMP, cuts) == EXPECTED
    assert counted(MYSQL_DUMP, cuts) == {"t": 4}

"""Counting what a plain dump holds as it streams past, however the stream is cut."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from db_backup.sources.pg_contents import PlainDumpContents

DUMP = b"""--
-- PostgreSQL database dump
--
SET statement_timeout = 0;
CREATE TABLE public.t (n integer);
CREATE TABLE "Weird Schema"."Odd ""Table"" Name" (a text, b text);
SELECT pg_catalog.lo_create('16411');
SELECT pg_catalog.lo_create('16412');
COPY public.t (n) FROM stdin;
1
2
3
\\.
COPY "Weird Schema"."Odd ""Table"" Name" (a, b) FROM stdin;
\\\\.\tlooks like the end, is not
\\N\t\\.x
tab\\there\\nnewline\t
\\.
COPY public.empty (x) FROM stdin;
\\.
COPY public.nocols  FROM stdin;
\\.
SELECT pg_catalog.setval('"Weird Schema"."counter seq"', 4242, true);
SELECT pg_catalog.setval('public.it''s', 1, false);
SELECT pg_catalog.lo_open('16411', 131072);
SELECT pg_catalog.lowrite(0, '\\xaa06');
--
-- PostgreSQL database dump complete
--
"""


def oracle(dump: bytes) -> dict[str, object]:
    """The same facts, read line by line: a different algorithm from the one under test."""
    tables: dict[str, int] = {}
    sequences: dict[str, tuple[int, bool]] = {}
    large_objects = 0
    table = None
    for line in dump.decode().split("\n"):
        if table is not None:
            if line == "\\.":
                table = None
            else:
                tables[table] += 1
        elif line.startswith("COPY "):
            table = line.removeprefix("COPY ").split(" (")[0].split("  FROM")[0]
            tables[table] = 0
        elif line.startswith("SELECT pg_catalog.setval('"):
            name, value, called = line.removeprefix("SELECT pg_catalog.setval('").rsplit(", ", 2)
            sequences[name[:-1].replace("''", "'")] = (int(value), called.startswith("true"))
        elif line.startswith("SELECT pg_catalog.lo_create("):
            large_objects += 1
    return {"tables": tables, "sequences": sequences, "large_objects": large_objects}


def counted(chunks: list[bytes]) -> dict[str, object]:
    counter = PlainDumpContents()
    for chunk in chunks:
        counter.feed(chunk)
    contents = counter.contents()
    return {
        "tables": contents.tables,
        "sequences": contents.sequences,
        "large_objects": contents.large_objects,
    }


def test_it_counts_rows_sequences_and_large_objects_as_written() -> None:
    assert counted([DUMP]) == oracle(DUMP)
    assert counted([DUMP]) == {
        "tables": {
            "public.t": 3,
            '"Weird Schema"."Odd ""Table"" Name"': 3,
            "public.empty": 0,
            "public.nocols": 0,
        },
        "sequences": {'"Weird Schema"."counter seq"': (4242, True), "public.it's": (1, False)},
        "large_objects": 2,
    }


def test_one_byte_at_a_time_counts_the_same() -> None:
    assert counted([DUMP[i : i + 1] for i in range(len(DUMP))]) == oracle(DUMP)


@given(st.lists(st.integers(0, len(DUMP)), max_size=40))
def test_any_cuts_count_the_same(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DUMP)]
    assert counted([DUMP[a:b] for a, b in itertools.pairwise(points)]) == oracle(DUMP)


@given(
    st.lists(st.lists(st.text(alphabet="ab\\.\n\t", max_size=6), max_size=5), max_size=4),
    st.integers(1, 9),
)
def test_rows_of_any_text_are_counted_in_chunks_of_any_size(
    tables: list[list[str]], size: int
) -> None:
    # COPY's text format escapes backslash, newline and tab in values, as pg_dump does.
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")

    dump = "".join(
        f"COPY public.t{i} (v) FROM stdin;\n" + "".join(escaped(v) + "\n" for v in rows) + "\\.\n"
        for i, rows in enumerate(tables)
    ).encode()
    chunks = [dump[i : i + size] for i in range(0, len(dump), size)]
    assert counted(chunks)["tables"] == {f"public.t{i}": len(rows) for i, rows in enumerate(tables)}

"""Property tests: whatever YAML `validate` is fed, it ends in exit 0 or exit 2 with a message —
never a traceback."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from db_backup.cli.commands import app
from db_backup.config.load import parse_config
from db_backup.config.sample import SAMPLE_CONFIG
from db_backup.errors import ConfigError

KEYS = [
    "concurrency",
    "defaults",
    "backups",
    "name",
    "database",
    "host",
    "port",
    "username",
    "password",
    "password_file",
    "exclude",
    "format",
    "storage",
    "path",
    "prefix",
    "compression",
    "algorithm",
    "level",
    "max_per_host",
    "globals",
    "timeout",
    "retries",
    "connect_timeout",
    "retry_delay",
    "type",
    "pg_dump_path",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 100_000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["*", "${X}", "${X:-y}", "$$", "5m", "plain", "gzip"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=6
        ),
    ),
    max_leaves=30,
)


entries = st.dictionaries(st.sampled_from(KEYS), st.one_of(scalars, documents), max_size=8)
structured = st.fixed_dictionaries(
    {"backups": st.lists(entries, max_size=4)},
    optional={"defaults": entries, "concurrency": scalars},
)


def dump_yaml(value: object) -> str:
    import io

    from ruamel.yaml import YAML

    stream = io.StringIO()
    YAML(typ="safe", pure=True).dump(value, stream)
    return stream.getvalue()


def check(text: str) -> None:
    """Either a Config, or a ConfigError whose every issue names the file; nothing else."""
    issues: tuple[object, ...] = ()
    try:
        parse_config(text, "fuzz.yml", environ={"X": "1"})
    except ConfigError as error:
        issues = error.issues
        assert issues, "a ConfigError must carry at least one issue"
    assert all(str(issue).startswith("fuzz.yml") for issue in issues)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_are_accepted_or_refused_with_located_issues(document: object) -> None:
    check(dump_yaml(document))


# 150 examples each (not 300): the suite's time budget; the CI runs them every time, so new
# examples are drawn run after run.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structured)
def test_structured_documents_are_accepted_or_refused_with_located_issues(document: object) -> None:
    check(dump_yaml(document))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SAMPLE_CONFIG)),
            st.integers(0, 8),
            st.text(alphabet=string.printable, max_size=6),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_samples_are_accepted_or_refused_with_located_issues(
    edits: list[tuple[int, int, str]],
) -> None:
    text = SAMPLE_CONFIG
    for position, length, replacement in edits:
        text = text[:position] + replacement + text[position + length :]
    check(text)


@settings(max_examples=40, deadline=None)
@given(st.one_of(documents, structured))
def test_the_cli_exits_0_or_2_without_a_traceback(document: object) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "fuzz.yml"
        config.write_text(dump_yaml(document))
        result = CliRunner().invoke(app, ["validate", "-c", str(config)])
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit | type(None))
    assert "Traceback" not in result.output

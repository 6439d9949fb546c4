"""Developer tasks: `nox -s tests | lint | typecheck | demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, against a throwaway PostgreSQL it starts itself."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and its tests."""
    session.install("-e", ".[test,lint]")
    session.run("mypy", "--strict", "db_backup", "tests")


@nox.session
def demo(session: nox.Session) -> None:
    """The embedded default: a throwaway server, a real backup, a restore check."""
    session.install(".")
    session.run("db-backup", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """db-backup against shell pipelines (needs gzip, pigz, zstd; takes ~15 minutes)."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def nights(session: nox.Session) -> None:
    """Ten nights into a restic repository against .sql.gz files (needs restic; ~25 minutes)."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/nights.py", *session.posargs)


@nox.session
def fleet(session: nox.Session) -> None:
    """N runners sharing 40 databases (see benchmarks/fleet.py; --total-mb, --rounds)."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/fleet.py", *session.posargs)

"""The rooms of db_backup import downwards only, and nothing imports itself round in a circle.

Every `import`/`from ... import` of a db_backup module anywhere in a module counts (also one
inside a function: a lower room must not reach up, not even lazily, not even for a type).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "db_backup"

# Lowest first. A module may import its own floor and the floors below, never above.
FLOORS: list[set[str]] = [
    # values, errors and pure helpers every room may use
    {
        "db_backup",
        "errors",
        "units",
        "redact",
        "threads",
        "manifest",
        "config",
        "config.schema",
        "config.sample",
        "config.document",
        "config.variables",
        "stages",
    },
    # the domain's values and pure rules
    {
        "config.merge",
        "config.convert",
        "model",
        "naming",
        "place",
        "retention",
        "retry",
        "schedule",  # when scheduled work is due
        "shard",  # which jobs are one runner's, of N
        "lease",  # which runner may dump a job now: the rules
        "notice",
        "credentials",  # a password or its file
        "notification",  # what a notification says
        "report",  # the run report's JSON
        "process",
        "stages.compress",
        "stages.unpack",
        "stages.encrypt",  # runs age through process.spawn
        "keys",  # age keys, parsed by pyrage
        "sources.base",  # the engine interface
        "sources.postgres",
        "sources.pg_contents",
        "sources.mysql",
        "sources.my_contents",
    },
    # the config loader; I/O with one thing: a store, a server, a throwaway cluster
    {
        "config.load",
        "config.checks",
        "storage",
        "storage.local",
        "storage.s3",
        "storage.restic",  # a restic repository, through restic children
        "sources",  # the engines' registry
        "runtime",  # the clock, stores and engines of a run
        "sources.pg_server",
        "sources.pg_admin",
        "sources.pg_source",
        "sources.my_server",
        "sources.my_users",  # a child of ours: the server's accounts as SQL
        "sources.my_admin",
        "sources.my_source",
        "pgcluster",
        "mariadbcluster",
    },
    # what reads or guards many targets, and the planner
    # ... and leases in a bucket, per job
    {"catalog", "plan", "lock", "integrity", "preflight", "leasing"},
    {"fleet"},  # what a fleet run stored: the catalog summed up per job
    {
        "prune",
        "delivery",
        "pump",
        "restore",
        "metrics",
        "publish",
        "notify",
    },  # retention applied; a job's fan-out and its
    # pump; a restore
    {"job", "restore_proof"},  # one job; restore tests (restore.py in a sandbox)
    {"orchestrator"},  # many jobs
    # one run; how signals stop one; what follows a run (metrics, notices); serve's loop
    {"run", "interrupts", "aftermath", "scheduler", "endpoints"},
    {"web.views", "web.security"},  # the web UI: what pages show; who may see and act
    {"web"},
    {"demo"},
    {
        "cli",
        "cli.commands",
        "cli.exits",
        "cli.options",
        "cli.restoring",
        "cli.serving",
        "cli.setup",
        "cli.render",
        "cli.live",
        "cli.tables",
        "__main__",
    },
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    name = ".".join(part for part in parts if part != "__init__")
    return name or "db_backup"


def imports_of(path: Path) -> set[str]:
    """The db_backup modules `path` imports (names relative to the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "db_backup":
                found.add("db_backup")
            elif name.startswith("db_backup."):
                relative = name.removeprefix("db_backup.")
                if relative in MODULES:
                    found.add(relative)
    return found


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {
    module_name(path): imports_of(path) - {module_name(path)} for path in PACKAGE.rglob("*.py")
}


def floor_of(module: str) -> int:
    return next(index for index, floor in enumerate(FLOORS) if module in floor)


def test_every_module_has_a_floor() -> None:
    placed = set().union(*FLOORS)
    assert sorted(MODULES - placed) == []
    assert sorted(placed - MODULES) == []


def test_no_module_imports_a_higher_floor() -> None:
    upward = [
        f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if floor_of(target) > floor_of(module)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for target in GRAPH[module]:
                if target == start:
                    return [*path, start]
                if target not in path:
                    stack.append((target, [*path, target]))
        return None

    cycles = [cycle for module in sorted(GRAPH) if (cycle := cycle_from(module))]
    assert cycles == []

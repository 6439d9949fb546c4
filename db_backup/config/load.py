"""YAML file → `Config`, with every problem located at file:line:column and key path.

Steps: ruamel.yaml parses (keeping positions) → plain data + a position index → `${VAR}`
expansion → top-level check → `defaults:` deep-merged under each backup → unknown-key check
(with a "did you mean") → msgspec conversion → cross-field rules. Issues are collected rather
than raised one at a time, so a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from db_backup.config.schema import (
    ALL_DATABASES,
    LEVEL_RANGES,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    NAME_RULE,
    SECRET_FIELDS,
    BackupConfig,
    ByteSize,
    Config,
    Duration,
    LocalStorage,
    RawConfig,
    StorageConfig,
)
from db_backup.errors import ConfigError, ConfigIssue
from db_backup.naming import file_prefix, longest_file_names, unusable_name
from db_backup.place import place_of, shared_folder_risk
from db_backup.units import parse_duration, parse_size

KeyPath = tuple[str | int, ...]
Position = tuple[int, int]  # 0-based line, column as ruamel reports them

# Bounds on a config document (see _Document): generous for any real config.
MAX_CONFIG_CHARACTERS = 1_000_000
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 50
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
# Keys whose relative paths are taken relative to the config file, not the working directory
# (cron runs in /, and a config should mean the same thing wherever it is run from).
_PATH_KEYS = ("password_file", "pg_dump_path")


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    *,
    require_env: bool = True,
    only: Sequence[str] | None = None,
) -> Config:
    """Read and validate a config file; raises ConfigError listing every problem found.

    `require_env=False` lets unset ${VAR}s expand to "" — for commands that never connect
    to a database (list, prune, verify), which should not need its secrets. Under `storage:`
    they are required all the same: those commands read the targets. `only`: the `-n`
    names of a run; variables that only other backups use need not be set."""
    source = Path(path)
    display = str(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(display, None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(display, None, None, "", "is a directory")]) from None
    except PermissionError:
        raise ConfigError([ConfigIssue(display, None, None, "", "permission denied")]) from None
    except UnicodeDecodeError as exc:
        issue = ConfigIssue(display, None, None, "", f"not UTF-8 text ({exc.reason})")
        raise ConfigError([issue]) from None
    config = parse_config(
        text,
        display,
        base_dir=source.resolve().parent,
        environ=environ,
        require_env=require_env,
        only=only,
    )
    warnings = [
        *_exposed_secret_warnings(source, config),
        *_secret_file_warnings(config),
        *_shared_folder_warnings(config),
    ]
    return msgspec.structs.replace(config, warnings=tuple(warnings))


def _exposed_secret_warnings(source: Path, config: Config) -> list[str]:
    """A literal password or secret key in a file other users can read is a leak waiting
    to happen."""
    mode = source.stat().st_mode & 0o777
    if not mode & 0o044 or not config.literal_secret_lines:
        return []
    where = ", ".join(str(n) for n in config.literal_secret_lines)
    display = config.source
    return [
        f"{display} is readable by other users (mode {mode:04o}) and holds a literal secret "
        f"(line {where}); chmod 600 it, or use ${{VAR}} or password_file"
    ]


def _secret_file_warnings(config: Config) -> list[str]:
    warnings = []
    for path in sorted({b.password_file for b in config.backups if b.password_file}):
        try:
            mode = Path(path).stat().st_mode & 0o777
        except OSError:
            continue  # reported when a job needs it
        if mode & 0o004:
            warnings.append(
                f"password_file {path} is readable by every user (mode {mode:04o}); chmod 600 it"
            )
    return warnings


def _shared_folder_warnings(config: Config) -> list[str]:
    """Storage folders other users may write to: a warning; one that runs will refuse (see
    storage.local.shared_folder_risk) says so."""
    warnings = []
    targets = {t for b in config.backups for t in b.targets if isinstance(t, LocalStorage)}
    for target in sorted(targets, key=lambda t: t.path):
        risk = shared_folder_risk(Path(target.path))
        if risk is None:
            continue
        refused, why = risk
        if refused and not target.allow_world_writable:
            why += "; backups will refuse it: chmod o-w (or +t), or set allow_world_writable: true"
        warnings.append(why)
    return warnings


def parse_config(
    text: str,
    display: str = "<config>",
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    require_env: bool = True,
    only: Sequence[str] | None = None,
) -> Config:
    """Validate config text; `display` names the file in messages."""
    document = _Document.parse(text, display)
    loader = _Loader(document, os.environ if environ is None else environ, base_dir or Path.cwd())
    loader.require_env = require_env
    loader.only = only
    return loader.load()


@dataclass
class _Document:
    """Plain data from the YAML plus where each key and value sits in the file."""

    file: str
    data: Any
    value_positions: dict[KeyPath, Position] = field(default_factory=dict)
    key_positions: dict[KeyPath, Position] = field(default_factory=dict)

    values: int = 0  # seen by _index, aliases counted each time they are used

    @classmethod
    def parse(cls, text: str, file: str) -> _Document:
        if len(text) > MAX_CONFIG_CHARACTERS:
            raise ConfigError(
                [
                    ConfigIssue(
                        file,
                        None,
                        None,
                        "",
                        f"{len(text)} characters: a config may have "
                        f"{MAX_CONFIG_CHARACTERS} at most",
                    )
                ]
            )
        yaml = YAML(typ="rt", pure=True)
        try:
            tree = yaml.load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = _without_values(exc.problem or exc.context or "invalid YAML")
            if mark is None:
                raise ConfigError([ConfigIssue(file, None, None, "", problem)]) from None
            issue = ConfigIssue(file, mark.line + 1, mark.column + 1, "", f"YAML: {problem}")
            raise ConfigError([issue]) from None
        except YAMLError as exc:
            issue = ConfigIssue(file, None, None, "", f"YAML: {_without_values(str(exc))}")
            raise ConfigError([issue]) from None
        except RecursionError:
            issue = ConfigIssue(file, None, None, "", "YAML: nested too deeply")
            raise ConfigError([issue]) from None
        document = cls(file, None)
        document.data = document._index(tree, ())
        return document

    def _index(self, node: Any, path: KeyPath) -> Any:
        # Bounds against a hostile document: a few aliases can stand for billions of values
        # (each alias of an alias multiplies), and deep nesting exhausts the stack.
        self.values += 1
        if self.values > MAX_CONFIG_VALUES:
            raise ConfigError(
                [
                    self.issue(
                        path,
                        f"more than {MAX_CONFIG_VALUES} values once YAML aliases "
                        "are expanded; a config needs far fewer",
                    )
                ]
            )
        if len(path) > MAX_CONFIG_DEPTH:
            raise ConfigError([self.issue(path, f"nested more than {MAX_CONFIG_DEPTH} deep")])
        if isinstance(node, CommentedMap):
            plain: dict[Any, Any] = {}
            for key, value in node.items():
                child = (*path, str(key))
                # A key brought in by a merge (`<<: *anchor`) is located where it is written.
                source = next(
                    (m for m in [node, *getattr(node, "merge", ())] if key in m.lc.data), None
                )
                if source is not None:
                    self.key_positions[child] = source.lc.key(key)
                    self.value_positions[child] = source.lc.value(key)
                plain[str(key)] = self._index(value, child)
            return plain
        if isinstance(node, CommentedSeq):
            items = []
            for index, value in enumerate(node):
                child = (*path, index)
                self.value_positions[child] = node.lc.item(index)
                self.key_positions[child] = node.lc.item(index)
                items.append(self._index(value, child))
            return items
        if isinstance(node, str):
            return str(node)  # ruamel's scalar string subclasses → plain str
        return node

    def issue(self, path: KeyPath, message: str, *, at_key: bool = False) -> ConfigIssue:
        """An issue located at `path` (the key itself with at_key, else its value)."""
        positions = self.key_positions if at_key else self.value_positions
        probe = path
        while probe and probe not in positions:  # missing keys point at their parent
            probe = probe[:-1]
        line, column = positions.get(probe, (None, None)) if probe else (None, None)
        return ConfigIssue(
            self.file,
            None if line is None else line + 1,
            None if column is None else column + 1,
            format_path(path),
            message,
        )


def _without_values(problem: str) -> str:
    """ruamel's duplicate-key message quotes both values, which may be secrets: drop them."""
    return re.sub(r' with value ".*?"(?: \(original value: ".*?"\))?', "", problem, flags=re.S)


def format_path(path: KeyPath) -> str:
    """("backups", 1, "port") → "backups[1].port"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


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


@dataclass
class _Origin:
    """Where each key of one merged backup came from: the backup entry or `defaults:`."""

    entry: Mapping[Any, Any]
    defaults: Mapping[Any, Any]
    entry_path: KeyPath
    defaults_path: KeyPath

    def locate(self, path: KeyPath) -> KeyPath:
        """The document path a merged path came from."""
        entry, defaults = self.entry, self.defaults
        entry_path, defaults_path = self.entry_path, self.defaults_path
        for depth, part in enumerate(path):
            in_entry = isinstance(entry, Mapping) and part in entry
            in_defaults = isinstance(defaults, Mapping) and part in defaults
            both_mappings = (
                in_entry
                and in_defaults
                and isinstance(entry[part], dict)
                and isinstance(defaults[part], dict)
            )
            if both_mappings:
                entry, defaults = entry[part], defaults[part]
                entry_path, defaults_path = (*entry_path, part), (*defaults_path, part)
                continue
            if in_entry:
                return (*entry_path, *path[depth:])
            if in_defaults:
                return (*defaults_path, *path[depth:])
            return (*entry_path, *path[depth:])
        return entry_path


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; nested mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Loader:
    def __init__(self, document: _Document, environ: Mapping[str, str], base_dir: Path) -> None:
        self.document = document
        self.environ = environ
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.require_env = True
        self.only: Sequence[str] | None = None  # the backups that will run (None: all)
        self.literal_secret_lines: list[int] = []
        self._unset: list[tuple[KeyPath, str]] = []  # (where, variable) referenced, not set

    def load(self) -> Config:
        doc = self.document
        if doc.data is None:
            self._fail(doc.issue((), "the file is empty; `db-backup generate` writes a sample"))
        if not isinstance(doc.data, dict):
            self._fail(doc.issue((), "expected a mapping with `backups:` at the top level"))
        # Top-level `x-...` keys are free for the user, as in docker compose: a place for
        # YAML anchors that backups then merge in with `<<: *name`.
        data = self._expand(
            {key: value for key, value in doc.data.items() if not key.startswith("x-")}, ()
        )
        self._check_keys(data, RawConfig, ())
        known = _struct_fields(RawConfig)
        raw = self._convert(
            {key: value for key, value in data.items() if key in known}, RawConfig, lambda p: p
        )
        if raw is None:
            self._raise_if_any()
            raise AssertionError("conversion failed without an issue")
        if not raw.backups:
            self._add(doc.issue(("backups",), "no backups listed; add at least one"))
        self._report_unset(raw)
        backups = [self._backup(raw, index) for index in range(len(raw.backups))]
        self._check_names()
        self._check_file_names(backups)
        self._raise_if_any()
        return Config(
            source=doc.file,
            concurrency=raw.concurrency,
            backups=tuple(b for b in backups if b is not None),
            literal_secret_lines=tuple(self.literal_secret_lines),
        )

    # -- steps -------------------------------------------------------------------------------

    def _expand(self, node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: self._expand(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self._expand(value, (*path, index)) for index, value in enumerate(node)]
        if isinstance(node, str):
            if path and path[-1] in SECRET_FIELDS and node and "${" not in node:
                line = self.document.value_positions.get(path, (None, 0))[0]
                if line is not None:
                    self.literal_secret_lines.append(line + 1)
            try:
                text, missing = expand_env(node, self.environ)
            except ValueError as exc:
                secret = bool(path) and path[-1] in SECRET_FIELDS
                self._add(
                    self.document.issue(
                        path, f"unsupported ${{...}}: use {ENV_FORMS}" if secret else str(exc)
                    )
                )
                return node  # as written: the issue above is the one to report
            self._unset += [(path, name) for name in missing]
            return text
        return node

    def _report_unset(self, raw: RawConfig) -> None:
        """Unset variables are errors where they are needed: in every backup that will run
        (with `only`, the selected ones and the defaults they inherit), and under `storage:`
        also for commands that never connect to a database (`require_env=False`)."""
        for path, name in self._unset:
            if self._needed(path, raw):
                message = f"environment variable {name} is not set (use ${{{name}:-default}})"
                self._add(self.document.issue(path, message))

    def _needed(self, path: KeyPath, raw: RawConfig) -> bool:
        """Does a run need the value at `path` (see _report_unset)?"""
        if not (self.require_env or "storage" in path):
            return False
        if self.only is None or len(path) < 2:
            return True
        only = self.only

        def selected(entry: Any) -> bool:
            name = entry.get("name") if isinstance(entry, dict) else None
            return any(n == name or n.startswith(f"{name}.") for n in only)

        if path[0] == "backups" and isinstance(path[1], int):
            return selected(raw.backups[path[1]])
        if path[0] == "defaults":  # inherited by each selected backup that does not set it
            chosen = [entry for entry in raw.backups if selected(entry)]
            return any(isinstance(entry, dict) and path[1] not in entry for entry in chosen)
        return True

    def _check_keys(
        self, mapping: Any, struct: type[Any], path: KeyPath, origin: Any = None
    ) -> None:
        """Report every unknown key under `path`, with the nearest valid one as a hint."""
        if not isinstance(mapping, dict):
            return
        known = _struct_fields(struct)
        for key, value in mapping.items():
            where = origin.locate((*path, key)) if origin else (*path, key)
            if key not in known:
                hint = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
                message = f"unknown key {key!r}"
                message += (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; valid keys: {', '.join(sorted(known))}"
                )
                self._add(self.document.issue(where, message, at_key=True))
                continue
            if isinstance(value, list):
                item_type = _item_type(known[key])
                for index, item in enumerate(value if item_type is not None else ()):
                    nested = _nested_struct(item_type, item)
                    if nested is not None:
                        self._check_keys(item, nested, (*path, key, index), origin)
                continue
            nested = _nested_struct(known[key], value)
            if nested is not None:
                self._check_keys(value, nested, (*path, key), origin)

    def _backup(self, raw: RawConfig, index: int) -> BackupConfig | None:
        entry = raw.backups[index]
        entry_path: KeyPath = ("backups", index)
        if not isinstance(entry, dict):
            self._add(self.document.issue(entry_path, "expected a mapping of backup settings"))
            return None
        if "name" in raw.defaults:
            self._add(
                self.document.issue(
                    ("defaults", "name"), "`name` cannot be a default; each backup names itself"
                )
            )
            return None
        defaults = dict(raw.defaults)
        if not _same_storage_kind(defaults.get("storage"), entry.get("storage")):
            defaults.pop("storage", None)  # a target of another kind, or a list, replaces
        # A backup's own secret replaces the inherited one of the other kind.
        for own, inherited in (("password", "password_file"), ("password_file", "password")):
            if own in entry:
                defaults.pop(inherited, None)
        merged = deep_merge({"type": "postgres", **defaults}, entry)
        if "storage" in merged:
            merged["storage"] = _default_storage_kind(merged["storage"])
        origin = _Origin(entry, raw.defaults, entry_path, ("defaults",))
        before = len(self.issues)
        self._check_keys(merged, BackupConfig, (), origin)
        if len(self.issues) > before:
            return None
        if merged.get("password") == "":
            merged.pop("password")  # `${PW:-}` unset → libpq's own .pgpass / PGPASSWORD apply
        backup = self._convert(merged, BackupConfig, origin.locate, name=entry.get("name"))
        if backup is None:
            return None
        return self._check_backup(backup, origin)

    def _check_backup(self, backup: BackupConfig, origin: _Origin) -> BackupConfig | None:
        before = len(self.issues)

        def problem(key: KeyPath, message: str) -> None:
            self._add(
                self.document.issue(origin.locate(key), f"{message} (backup {backup.name!r})")
            )

        if not NAME_PATTERN.fullmatch(backup.name) or len(backup.name) > MAX_NAME_LENGTH:
            problem(
                ("name",),
                f"invalid name {backup.name!r}: use {NAME_RULE}, at most {MAX_NAME_LENGTH}",
            )
        for index, target in enumerate(backup.targets):
            for key, message in target.problems():
                problem((*_storage_path(backup, index), key), message)
        if backup.password is not None and backup.password_file is not None:
            problem(("password_file",), "give either password or password_file, not both")
        if backup.exclude and not backup.is_wildcard:
            problem(("exclude",), f'exclude only applies with database: "{ALL_DATABASES}"')
        if not backup.database:
            problem(("database",), "database name is empty")
        compression = backup.compression
        allowed = LEVEL_RANGES.get(compression.algorithm)
        if compression.level is not None and allowed and compression.level not in allowed:
            problem(
                ("compression", "level"),
                f"{compression.algorithm} levels are {allowed.start} to {allowed.stop - 1}, "
                f"got {compression.level}",
            )
        if backup.format == "custom" and compression.algorithm == "zstd":
            problem(
                ("compression", "algorithm"),
                "format: custom is compressed by pg_dump itself, with gzip (or none)",
            )
        if len(self.issues) > before:
            return None
        resolved = msgspec.structs.replace(
            backup,
            storage=tuple(self._absolute_storage(target) for target in backup.targets),
            **{
                key: self._absolute(value)
                for key in _PATH_KEYS
                if (value := getattr(backup, key)) is not None
            },
        )
        for index, first, place in _same_places(resolved):
            targets = resolved.targets
            problem(
                _storage_path(backup, index),
                f"the same target twice: {targets[first].label} and {targets[index].label} "
                f"are both {place.split(':', 1)[1]}",
            )
        return None if len(self.issues) > before else resolved

    def _absolute_storage(self, target: StorageConfig) -> StorageConfig:
        if isinstance(target, LocalStorage):
            return msgspec.structs.replace(target, path=self._absolute(target.path))
        return target

    def _check_names(self) -> None:
        seen: dict[str, int] = {}
        for index, backup in enumerate(self._backup_entries()):
            name = backup.get("name") if isinstance(backup, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                first_line = self.document.value_positions.get(("backups", seen[name], "name"))
                where = f" (first at line {first_line[0] + 1})" if first_line else ""
                message = f"duplicate backup name {name!r}{where}"
                self._add(self.document.issue(("backups", index, "name"), message))
            else:
                seen[name] = index

    def _check_file_names(self, backups: Sequence[BackupConfig | None]) -> None:
        """Every file name must fit its target (255 bytes in a folder, 1024 in a bucket key),
        and two backups must not write files of the same names in one place: `nightly_a`
        with no prefix and `a` with `prefix: nightly` in one folder would (see place.py:
        two spellings of one folder are one place); so would backup `all.shop` and the
        job a `database: "*"` backup `all` makes for a database `shop`."""
        present = [(index, backup) for index, backup in enumerate(backups) if backup]
        owners: dict[tuple[str, str], tuple[int, BackupConfig]] = {}
        for index, backup in present:
            for storage in backup.targets:
                problem = next(
                    filter(
                        None,
                        map(partial(unusable_name, storage), longest_file_names(backup, storage)),
                    ),
                    None,
                )
                if problem is not None:
                    longest = "for the longest database names, " if backup.is_wildcard else ""
                    self._name_issue(index, f"on {storage.label}: {longest}{problem}")
                key = (place_of(storage), file_prefix(storage, backup.name))
                owner = owners.setdefault(key, (index, backup))[1]
                if owner is not backup:
                    self._name_issue(
                        index,
                        f"backups {owner.name!r} and {backup.name!r} would write files of the "
                        f"same names ({key[1]}<time>...) in {storage.label}",
                    )
        for (place, start), (index, backup) in owners.items():
            for (wildcard_place, wildcard_start), (_, wildcard) in owners.items():
                stem = wildcard_start[:-1] + "."  # the start of its databases' jobs' files
                database = start[len(stem) : -1]
                if (
                    not wildcard.is_wildcard
                    or backup.is_wildcard
                    or place != wildcard_place
                    or not start.startswith(stem)
                    or any(fnmatch.fnmatchcase(database, p) for p in wildcard.exclude)
                ):
                    continue
                self._name_issue(
                    index,
                    f"backup {backup.name!r} would write files of the same names as backup "
                    f'{wildcard.name!r} (database: "*") writes for a database named '
                    f"{database!r}; rename one, or exclude {database!r} there",
                )

    def _name_issue(self, index: int, message: str) -> None:
        self._add(self.document.issue(("backups", index, "name"), message))

    def _backup_entries(self) -> Iterator[Any]:
        data = self.document.data
        entries = data.get("backups") if isinstance(data, dict) else None
        yield from entries if isinstance(entries, list) else ()

    # -- helpers -----------------------------------------------------------------------------

    def _convert(self, data: Any, target: type[Any], locate: Any, name: Any = None) -> Any:
        try:
            return msgspec.convert(data, target, strict=False, dec_hook=_decode_custom)
        except msgspec.ValidationError as exc:
            match = _MSGSPEC_PATH.match(str(exc))
            message, dotted = (match["message"], match["path"]) if match else (str(exc), "")
            path: KeyPath = tuple(
                int(index) if index else key for key, index in _PATH_TOKEN.findall(dotted)
            )
            value = _lookup(data, path)
            text = _humanize(message, path, value, target)
            if isinstance(name, str):
                text += f" (backup {name!r})"
            self._add(self.document.issue(locate(path), text))
            return None

    def _absolute(self, value: str) -> str:
        expanded = os.path.expanduser(value)
        return expanded if os.path.isabs(expanded) else str(self.base_dir / expanded)

    def _add(self, issue: ConfigIssue) -> None:
        self.issues.append(issue)

    def _fail(self, issue: ConfigIssue) -> typing.NoReturn:
        raise ConfigError([*self.issues, issue])

    def _raise_if_any(self) -> None:
        if self.issues:
            ordered = sorted(self.issues, key=lambda i: (i.line or 0, i.column or 0))
            raise ConfigError(ordered)


def _decode_custom(target: type[Any], value: Any) -> Any:
    if target is Duration:
        return Duration(parse_duration(value))
    if target is ByteSize:
        return ByteSize(parse_size(value))
    raise NotImplementedError(target)


def _struct_fields(struct: type[Any]) -> dict[str, Any]:
    info = msgspec.inspect.type_info(struct)
    fields: dict[str, Any] = {}
    if isinstance(info, msgspec.inspect.StructType):
        if info.tag_field:
            fields[info.tag_field] = msgspec.inspect.LiteralType((info.tag,))
        for field_info in info.fields:
            fields[field_info.encode_name] = field_info.type
    return fields


def _nested_struct(type_info: Any, value: Any) -> type[Any] | None:
    """The struct a mapping `value` will become: for a tagged union, the member its tag
    names (the first when the tag is missing; none when it is unknown: conversion reports
    that, rather than keys that another kind would not know)."""
    if isinstance(type_info, msgspec.inspect.StructType):
        cls: type[Any] = type_info.cls
        return cls
    if isinstance(type_info, msgspec.inspect.UnionType):
        members = [t for t in type_info.types if isinstance(t, msgspec.inspect.StructType)]
        tag = value.get(members[0].tag_field) if members and isinstance(value, dict) else None
        fallback = members[0] if members and tag is None else None  # unknown kind: msgspec says
        chosen = next((m for m in members if m.tag == tag), fallback)
        return None if chosen is None else chosen.cls
    return None


def _item_type(type_info: Any) -> Any:
    """The element type of a list-like field (or list-like member of a union), if any."""
    candidates = (
        type_info.types if isinstance(type_info, msgspec.inspect.UnionType) else (type_info,)
    )
    for candidate in candidates:
        if isinstance(candidate, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
            return candidate.item_type
    return None


def _same_storage_kind(inherited: Any, own: Any) -> bool:
    """May `own` storage settings merge key by key over `inherited` ones? Only one target
    each, of the same kind; anything else (a list, another kind) replaces what is inherited."""
    if own is None:
        return True
    if not isinstance(inherited, dict) or not isinstance(own, dict):
        return False
    return bool(inherited.get("kind", "local") == own.get("kind", "local"))


def _default_storage_kind(storage: Any) -> Any:
    """`kind: local` is implied when a storage mapping names no kind."""
    if isinstance(storage, dict) and "kind" not in storage:
        return {"kind": "local", **storage}
    if isinstance(storage, list):
        return [_default_storage_kind(item) for item in storage]
    return storage


_STORAGE_KINDS = tuple(
    msgspec.inspect.type_info(kind).tag  # type: ignore[attr-defined]
    for kind in typing.get_args(StorageConfig)
)


def _storage_path(backup: BackupConfig, index: int) -> KeyPath:
    """Where a backup's `index`-th target is written: `storage` or `storage[index]`."""
    return ("storage", index) if isinstance(backup.storage, tuple) else ("storage",)


def _same_places(backup: BackupConfig) -> Iterator[tuple[int, int, str]]:
    """(index, index of the first, place) for each target that repeats an earlier one's
    place, however differently spelled (see place.py)."""
    places = [place_of(target) for target in backup.targets]
    for index, place in enumerate(places):
        first = places.index(place)
        if first < index:
            yield index, first, place


def _lookup(data: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _choices(struct: type[Any], path: KeyPath) -> tuple[Any, ...]:
    """The allowed values of a Literal-typed field, for 'expected one of' hints."""
    type_info: Any = msgspec.inspect.type_info(struct)
    for part in path:
        if isinstance(part, int) or not isinstance(type_info, msgspec.inspect.StructType):
            return ()
        type_info = _struct_fields(type_info.cls).get(part)
    if isinstance(type_info, msgspec.inspect.LiteralType):
        return tuple(type_info.values)
    return ()


def _humanize(message: str, path: KeyPath, value: Any, target: type[Any]) -> str:
    """msgspec's "Expected `int`, got `str`" → 'expected int, got "abc"'."""
    secret = bool(path) and path[-1] in SECRET_FIELDS
    shown = "***" if secret else (f'"{value}"' if isinstance(value, str) else repr(value))
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        return f"missing required key {missing.group(1)!r}"
    text = message.replace("`", "")
    text = text[:1].lower() + text[1:]
    if text.startswith("invalid enum value") or text.startswith("invalid value"):
        choices = _choices(target, path) or (_STORAGE_KINDS if path[-1:] == ("kind",) else ())
        text = f"invalid value {shown}"
        if choices:
            text += f"; expected one of: {', '.join(str(c) for c in choices)}"
        return text
    got = re.match(r"(expected [^,]+), got \w+$", text)
    if got:
        return f"{got.group(1)}, got {shown}"
    if text.startswith("expected") and value is not None:
        return f"{text}, got {shown}"
    return text

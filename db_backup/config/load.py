"""YAML file → `Config`, with every problem located at file:line:column and key path.

Steps: ruamel.yaml parses (keeping positions) → plain data + a position index → `${VAR}`
expansion → top-level check → `defaults:` deep-merged under each backup → unknown-key check
(with a "did you mean") → msgspec conversion → cross-field rules. Issues are collected rather
than raised one at a time, so a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from db_backup.config.checks import (
    clear_text_password_warnings,
    exposed_secret_warnings,
    file_name_problems,
    same_places,
    secret_file_warnings,
    shared_folder_warnings,
)
from db_backup.config.convert import (
    MSGSPEC_PATH,
    PATH_TOKEN,
    decode_custom,
    humanize,
    item_type,
    kinds_of,
    lookup,
    nested_struct,
    struct_fields,
)
from db_backup.config.document import Document, KeyPath
from db_backup.config.merge import Origin, deep_merge, default_storage_kind, same_storage_kind
from db_backup.config.schema import (
    ALL_DATABASES,
    LEVEL_RANGES,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    NAME_RULE,
    BackupConfig,
    Config,
    EmailNotifier,
    EncryptionConfig,
    LocalStorage,
    MetricsConfig,
    NotifierConfig,
    RawConfig,
    ResticStorage,
    StorageConfig,
    is_local_repository,
    is_secret,
)
from db_backup.config.variables import ENV_FORMS, expand_env
from db_backup.errors import ConfigError, ConfigIssue
from db_backup.schedule import parse_schedule, parse_zone

# Keys whose relative paths are taken relative to the config file, not the working directory
# (cron runs in /, and a config should mean the same thing wherever it is run from).
_PATH_KEYS = ("password_file", "pg_dump_path", "dump_path", "socket")


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
        *exposed_secret_warnings(source, config),
        *secret_file_warnings(config),
        *shared_folder_warnings(config),
        *clear_text_password_warnings(config),
    ]
    return msgspec.structs.replace(config, warnings=tuple(warnings))


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
    document = Document.parse(text, display)
    loader = _Loader(document, os.environ if environ is None else environ, base_dir or Path.cwd())
    loader.require_env = require_env
    loader.only = only
    return loader.load()


class _Loader:
    def __init__(self, document: Document, environ: Mapping[str, str], base_dir: Path) -> None:
        self.document = document
        self.environ = environ
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.require_env = True
        self.only: Sequence[str] | None = None  # the backups that will run (None: all)
        self.literal_secret_lines: list[int] = []
        self._unset: list[tuple[KeyPath, str]] = []  # (where, variable) referenced, not set
        self.zone: ZoneInfo | None = None  # the schedules' (`timezone:`), once read

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
        known = struct_fields(RawConfig)
        raw = self._convert(
            {key: value for key, value in data.items() if key in known}, RawConfig, lambda p: p
        )
        if raw is None:
            self._raise_if_any()
            raise AssertionError("conversion failed without an issue")
        if not raw.backups:
            self._add(doc.issue(("backups",), "no backups listed; add at least one"))
        self.zone = self._zone(raw.timezone)
        for section, schedule in (("verify", raw.verify.schedule), ("prune", raw.prune.schedule)):
            self._check_schedule(schedule, (section, "schedule"), self._add_at)
        self._report_unset(raw)
        backups = [self._backup(raw, index) for index in range(len(raw.backups))]
        self._check_names()
        self._check_file_names(backups)
        notifiers, muted = self._notifiers(raw.notify or ())
        self._raise_if_any()
        return Config(
            source=doc.file,
            concurrency=raw.concurrency,
            backups=tuple(b for b in backups if b is not None),
            verify=msgspec.structs.replace(
                raw.verify, identity_file=self._absolute_or_none(raw.verify.identity_file)
            ),
            restore=msgspec.structs.replace(
                raw.restore, identity_file=self._absolute_or_none(raw.restore.identity_file)
            ),
            prune=raw.prune,
            web=msgspec.structs.replace(
                raw.web, token_file=self._absolute_or_none(raw.web.token_file)
            ),
            timezone=raw.timezone,
            metrics=self._metrics(raw.metrics),
            notify=notifiers,
            muted_notifiers=muted,
            literal_secret_lines=tuple(self.literal_secret_lines),
        )

    # -- steps -------------------------------------------------------------------------------

    def _expand(self, node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: self._expand(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self._expand(value, (*path, index)) for index, value in enumerate(node)]
        if isinstance(node, str):
            if is_secret(path) and node and "${" not in node:
                line = self.document.value_positions.get(path, (None, 0))[0]
                if line is not None:
                    self.literal_secret_lines.append(line + 1)
            try:
                text, missing = expand_env(node, self.environ)
            except ValueError as exc:
                secret = is_secret(path)
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
        known = struct_fields(struct)
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
                element = item_type(known[key])
                for index, item in enumerate(value if element is not None else ()):
                    nested = nested_struct(element, item)
                    if nested is not None:
                        self._check_keys(item, nested, (*path, key, index), origin)
                continue
            nested = nested_struct(known[key], value)
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
        if not same_storage_kind(defaults.get("storage"), entry.get("storage")):
            defaults.pop("storage", None)  # a target of another kind, or a list, replaces
        # A backup's own secret replaces the inherited one of the other kind.
        for own, inherited in (("password", "password_file"), ("password_file", "password")):
            if own in entry:
                defaults.pop(inherited, None)
        engines = msgspec.inspect.type_info(BackupConfig)
        kind = {"type": entry.get("type", defaults.get("type", "postgres"))}
        engine = nested_struct(engines, kind)
        if engine is not None:  # defaults may hold another engine's keys (pg_dump_path)
            known = struct_fields(engine)
            for other in typing.get_args(BackupConfig):
                for key in struct_fields(other).keys() - known.keys():
                    defaults.pop(key, None)
        merged = deep_merge({"type": "postgres", **defaults}, entry)
        if "storage" in merged:
            merged["storage"] = default_storage_kind(merged["storage"])
        origin = Origin(entry, raw.defaults, entry_path, ("defaults",))
        before = len(self.issues)
        if engine is not None:  # else an unknown `type`: conversion names the known ones
            self._check_keys(merged, engine, (), origin)
        if len(self.issues) > before:
            return None
        if merged.get("password") == "":
            merged.pop("password")  # `${PW:-}` unset → libpq's own .pgpass / PGPASSWORD apply
        backup = self._convert(
            merged, engine or BackupConfig, origin.locate, name=entry.get("name")
        )
        if backup is None:
            return None
        return self._check_backup(backup, origin)

    def _check_backup(self, backup: BackupConfig, origin: Origin) -> BackupConfig | None:
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
        if backup.format == "custom" and compression.algorithm == "zstd":  # PostgreSQL's
            problem(
                ("compression", "algorithm"),
                "format: custom is compressed by pg_dump itself, with gzip (or none)",
            )
        self._check_schedule(backup.schedule, ("schedule",), problem)
        encryption = self._encryption(backup.encryption, problem)
        if len(self.issues) > before:
            return None
        resolved = msgspec.structs.replace(
            backup,
            encryption=encryption,
            storage=tuple(self._absolute_storage(target) for target in backup.targets),
            **{
                key: self._absolute(value)
                for key in _PATH_KEYS
                if (value := getattr(backup, key, None)) is not None
            },
        )
        for index, first, place in same_places(resolved):
            targets = resolved.targets
            problem(
                _storage_path(backup, index),
                f"the same target twice: {targets[first].label} and {targets[index].label} "
                f"are both {place.split(':', 1)[1]}",
            )
        return None if len(self.issues) > before else resolved

    def _zone(self, name: str | None) -> ZoneInfo | None:
        """The schedules' zone; None after reporting a bad one."""
        try:
            return parse_zone(name)
        except ValueError as exc:
            self._add(self.document.issue(("timezone",), str(exc)))
            return None

    def _check_schedule(
        self, text: str | None, key: KeyPath, problem: Callable[[KeyPath, str], None]
    ) -> None:
        if text is not None and self.zone is not None:
            try:
                parse_schedule(text, self.zone)
            except ValueError as exc:
                problem(key, str(exc))

    def _add_at(self, key: KeyPath, message: str) -> None:
        self._add(self.document.issue(key, message))

    def _encryption(
        self, encryption: EncryptionConfig | None, problem: Callable[[KeyPath, str], None]
    ) -> EncryptionConfig | None:
        """`encryption:` with every recipient checked and the file's read into `recipients`."""
        if encryption is None:
            return None
        from db_backup.keys import parse_recipient, recipient_lines

        listed = list(encryption.recipients)
        for index, recipient in enumerate(encryption.recipients):
            try:
                parse_recipient(recipient)
            except ValueError as exc:
                problem(("encryption", "recipients", index), str(exc))
        if encryption.recipients_file is not None:
            path = Path(self._absolute(encryption.recipients_file))
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                problem(("encryption", "recipients_file"), f"cannot read {path}: {reason}")
                return None
            if "PRIVATE KEY-----" in text:  # a secret: no line of it goes into a message
                problem(
                    ("encryption", "recipients_file"),
                    f"{path} is a private key file: give the public key (.pub) instead",
                )
                return None
            for number, recipient in recipient_lines(text):
                try:
                    parse_recipient(recipient)
                    listed.append(recipient)
                except ValueError as exc:
                    problem(("encryption", "recipients_file"), f"{path}, line {number}: {exc}")
        if not listed and not encryption.recipients_file:
            problem(("encryption",), "give recipients (public keys) or a recipients_file")
        elif not listed:
            problem(("encryption", "recipients_file"), "holds no recipient")
        return msgspec.structs.replace(encryption, recipients=tuple(dict.fromkeys(listed)))

    def _absolute_storage(self, target: StorageConfig) -> StorageConfig:
        if isinstance(target, LocalStorage):
            return msgspec.structs.replace(target, path=self._absolute(target.path))
        if isinstance(target, ResticStorage):
            local = is_local_repository(target.repository)
            return msgspec.structs.replace(
                target,
                repository=(
                    self._absolute(target.repository.removeprefix("local:"))
                    if local
                    else target.repository
                ),
                password_file=self._absolute_or_none(target.password_file),
            )
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
        for index, message in file_name_problems(backups):
            self._add(self.document.issue(("backups", index, "name"), message))

    def _backup_entries(self) -> Iterator[Any]:
        data = self.document.data
        entries = data.get("backups") if isinstance(data, dict) else None
        yield from entries if isinstance(entries, list) else ()

    # -- helpers -----------------------------------------------------------------------------

    def _convert(self, data: Any, target: Any, locate: Any, name: Any = None) -> Any:
        try:
            return msgspec.convert(data, target, strict=False, dec_hook=decode_custom)
        except msgspec.ValidationError as exc:
            match = MSGSPEC_PATH.match(str(exc))
            message, dotted = (match["message"], match["path"]) if match else (str(exc), "")
            dotted = dotted.replace("[...]", "")  # a mapping's value: point at the mapping
            path: KeyPath = tuple(
                int(index) if index else key for key, index in PATH_TOKEN.findall(dotted)
            )
            value = lookup(data, path)
            text = humanize(message, path, value, target, secret=is_secret(locate(path)))
            if isinstance(name, str):
                text += f" (backup {name!r})"
            self._add(self.document.issue(locate(path), text))
            return None

    def _metrics(self, metrics: MetricsConfig) -> MetricsConfig:
        """The textfile's path relative to the config file, as every path in it."""
        if metrics.textfile is None:
            return metrics
        return msgspec.structs.replace(metrics, textfile=self._absolute(metrics.textfile))

    def _notifiers(
        self, entries: Sequence[Any]
    ) -> tuple[tuple[NotifierConfig, ...], tuple[tuple[str, str], ...]]:
        """Each `notify:` entry as its kind's struct, checked, its paths made absolute; and
        the notifiers muted because a ${VAR} they need is unset where a command may run
        without secrets (require_env=False), as (label, why)."""
        union = msgspec.inspect.type_info(NotifierConfig)
        assert isinstance(union, msgspec.inspect.UnionType)
        notifiers, muted = [], []
        for index, entry in enumerate(entries):
            path: KeyPath = ("notify", index)
            if not isinstance(entry, dict):
                self._add(self.document.issue(path, "expected a mapping with a `kind:`"))
                continue
            if "kind" not in entry:
                kinds = ", ".join(kinds_of(NotifierConfig))
                self._add(self.document.issue(path, f"missing required key 'kind' ({kinds})"))
                continue
            before = len(self.issues)
            headers = entry.get("headers")
            for name, value in headers.items() if isinstance(headers, dict) else ():
                if not isinstance(value, str):
                    where = (*path, "headers", name)
                    self._add(self.document.issue(where, "expected a string (quote it)"))
            kind = nested_struct(union, entry)
            if kind is not None:  # else an unknown kind: conversion names the known ones
                self._check_keys(entry, kind, path)
            if len(self.issues) > before:
                continue
            notifier = self._convert(entry, kind or NotifierConfig, lambda p, at=path: (*at, *p))
            if notifier is None:
                continue
            unset = [name for where, name in self._unset if where[:2] == path]
            if unset and not self.require_env:
                muted.append((notifier.label, f"environment variable {unset[0]} is not set"))
                continue
            for key, message in notifier.problems() if not unset else ():  # unset: reported
                self._add(self.document.issue((*path, key), message))
            if isinstance(notifier, EmailNotifier):
                notifier = msgspec.structs.replace(
                    notifier,
                    **{
                        key: self._absolute(value)
                        for key in ("password_file", "ca_file")
                        if (value := getattr(notifier, key))
                    },
                )
            notifiers.append(notifier)
        return tuple(notifiers), tuple(muted)

    def _absolute_or_none(self, value: str | None) -> str | None:
        return None if value is None else self._absolute(value)

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


def _storage_path(backup: BackupConfig, index: int) -> KeyPath:
    """Where a backup's `index`-th target is written: `storage` or `storage[index]`."""
    return ("storage", index) if isinstance(backup.storage, tuple) else ("storage",)

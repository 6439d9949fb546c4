"""`defaults:` under each backup: the deep merge, and where each merged key came from. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from db_backup.config.document import KeyPath


@dataclass
class Origin:
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


def same_storage_kind(inherited: Any, own: Any) -> bool:
    """May `own` storage settings merge key by key over `inherited` ones? Only one target
    each, of the same kind; anything else (a list, another kind) replaces what is inherited."""
    if own is None:
        return True
    if not isinstance(inherited, dict) or not isinstance(own, dict):
        return False
    return bool(inherited.get("kind", "local") == own.get("kind", "local"))


def default_storage_kind(storage: Any) -> Any:
    """`kind: local` is implied when a storage mapping names no kind."""
    if isinstance(storage, dict) and "kind" not in storage:
        return {"kind": "local", **storage}
    if isinstance(storage, list):
        return [default_storage_kind(item) for item in storage]
    return storage

"""Plain data → typed structs with msgspec, and its errors in a person's words.

msgspec reports "Expected `int`, got `str` - at `$.backups[0].port`"; this turns that into a
key path the document can locate and a message such as 'expected int, got "abc"', with the
allowed choices where a field is a Literal. Secrets are never echoed.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

from db_backup.config.document import KeyPath
from db_backup.config.schema import ByteSize, Duration, StorageConfig, is_secret
from db_backup.units import parse_duration, parse_size

MSGSPEC_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)


PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def decode_custom(target: type[Any], value: Any) -> Any:
    if target is Duration:
        return Duration(parse_duration(value))
    if target is ByteSize:
        return ByteSize(parse_size(value))
    raise NotImplementedError(target)


def struct_fields(struct: type[Any]) -> dict[str, Any]:
    info = msgspec.inspect.type_info(struct)
    fields: dict[str, Any] = {}
    if isinstance(info, msgspec.inspect.StructType):
        if info.tag_field:
            fields[info.tag_field] = msgspec.inspect.LiteralType((info.tag,))
        for field_info in info.fields:
            fields[field_info.encode_name] = field_info.type
    return fields


def nested_struct(type_info: Any, value: Any) -> type[Any] | None:
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


def item_type(type_info: Any) -> Any:
    """The element type of a list-like field (or list-like member of a union), if any."""
    candidates = (
        type_info.types if isinstance(type_info, msgspec.inspect.UnionType) else (type_info,)
    )
    for candidate in candidates:
        if isinstance(candidate, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
            return candidate.item_type
    return None


_STORAGE_KINDS = tuple(
    msgspec.inspect.type_info(kind).tag  # type: ignore[attr-defined]
    for kind in typing.get_args(StorageConfig)
)


def lookup(data: Any, path: KeyPath) -> Any:
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
        if isinstance(part, int):  # an element of a list: `on: [failures]`
            type_info = item_type(type_info)
            continue
        if not isinstance(type_info, msgspec.inspect.StructType):
            return ()
        type_info = struct_fields(type_info.cls).get(part)
    if isinstance(type_info, msgspec.inspect.UnionType):  # `on: failure` or `on: [failure]`
        members = [item_type(type_info), *type_info.types]
        literal = next((t for t in members if isinstance(t, msgspec.inspect.LiteralType)), None)
        return tuple(literal.values) if literal else ()
    if isinstance(type_info, msgspec.inspect.LiteralType):
        return tuple(type_info.values)
    return ()


def kinds_of(target: Any) -> tuple[str, ...]:
    """The `kind:` tags of a union of tagged structs (notifiers), else the storage kinds."""
    members = typing.get_args(target)
    tags = tuple(msgspec.inspect.type_info(m).tag for m in members)  # type: ignore[attr-defined]
    return tags or _STORAGE_KINDS


def humanize(
    message: str, path: KeyPath, value: Any, target: type[Any], *, secret: bool = False
) -> str:
    """msgspec's "Expected `int`, got `str`" → 'expected int, got "abc"'; `secret`: the
    value is never shown."""
    secret = secret or is_secret(path)
    shown = "***" if secret else (f'"{value}"' if isinstance(value, str) else repr(value))
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        return f"missing required key {missing.group(1)!r}"
    text = message.replace("`", "")
    text = text[:1].lower() + text[1:]
    if text.startswith("invalid enum value") or text.startswith("invalid value"):
        tagged = path[-1:] in (("kind",), ("type",))
        choices = _choices(target, path) or (kinds_of(target) if tagged else ())
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

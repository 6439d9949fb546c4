"""A config file's YAML as plain data, with where every key and value sits in the file.

ruamel.yaml parses in round-trip mode, which keeps positions; the tree becomes plain dicts,
lists and strings plus two position indexes, so every later step can say file:line:column.
Merge keys (`<<: *anchor`) are located where the merged value is written. The document is
bounded (size, values after alias expansion, depth): a hostile file is refused quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from db_backup.errors import ConfigError, ConfigIssue

KeyPath = tuple[str | int, ...]


Position = tuple[int, int]  # 0-based line, column as ruamel reports them


# Bounds on a config document (see Document): generous for any real config.
MAX_CONFIG_CHARACTERS = 1_000_000


MAX_CONFIG_VALUES = 100_000


MAX_CONFIG_DEPTH = 50


@dataclass
class Document:
    """Plain data from the YAML plus where each key and value sits in the file."""

    file: str
    data: Any
    value_positions: dict[KeyPath, Position] = field(default_factory=dict)
    key_positions: dict[KeyPath, Position] = field(default_factory=dict)

    values: int = 0  # seen by _index, aliases counted each time they are used

    @classmethod
    def parse(cls, text: str, file: str) -> Document:
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
            problem = without_values(exc.problem or exc.context or "invalid YAML")
            if mark is None:
                raise ConfigError([ConfigIssue(file, None, None, "", problem)]) from None
            issue = ConfigIssue(file, mark.line + 1, mark.column + 1, "", f"YAML: {problem}")
            raise ConfigError([issue]) from None
        except YAMLError as exc:
            issue = ConfigIssue(file, None, None, "", f"YAML: {without_values(str(exc))}")
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


def without_values(problem: str) -> str:
    """ruamel's duplicate-key message quotes both values, which may be secrets: drop them."""
    return re.sub(r' with value ".*?"(?: \(original value: ".*?"\))?', "", problem, flags=re.S)


def format_path(path: KeyPath) -> str:
    """("backups", 1, "port") → "backups[1].port"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text

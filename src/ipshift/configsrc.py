"""Configuration source: YAML text in, plain data with a line per key path out.

Theory of operation: the YAML text is composed once into nodes (libyaml's
parser when PyYAML has it), which gives every key path, such as
``interfaces.eth0.addresses[1]``, its line number and catches keys given
twice (PyYAML would keep the last one silently); the plain data is
constructed from the same nodes. When pydantic later refuses the data,
``_from_validation_error`` turns its first error into
``file:line: key.path: message``, the line being that of the longest prefix
of the error's location that the file has. Every failure is one
:class:`ConfigError` -- never a traceback.

This module does no I/O: :mod:`ipshift.config` reads the file and holds the
models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A configuration problem, printable as one line."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


# --------------------------------------------------------------------------- YAML with lines


@dataclass(frozen=True, slots=True)
class _Located:
    data: Any
    lines: Mapping[str, int]


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _walk(node: yaml.Node, path: str, lines: dict[str, int], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(file, line, _join(path, key), f"given twice (first on line {seen[key]})")
            seen[key] = line
            child = _join(path, key)
            lines[child] = line
            _walk(value_node, child, lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = _join(path, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, file)


# libyaml's parser when PyYAML has it (ten times faster on a file with thousands of addresses)
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, file: str) -> _Located:
    try:
        # one parse: the node tree gives the line numbers, the data is constructed from it
        loader = _SAFE_LOADER(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(file, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, "", f"YAML error: {exc}".splitlines()[0]) from None
    if node is None or data is None:
        raise ConfigError(file, 1, "", "the file is empty: it needs at least 'interfaces:'")
    if not isinstance(data, dict):
        raise ConfigError(file, node.start_mark.line + 1, "", "the top level must be a mapping of keys")
    lines: dict[str, int] = {}
    _walk(node, "", lines, file)
    return _Located(data, lines)


def _loc_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path = _join(path, part)
    return path


def _best_line(lines: Mapping[str, int], loc: tuple[int | str, ...]) -> tuple[int | None, str]:
    """The line of the longest prefix of ``loc`` that exists in the file, and that prefix's path."""
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    for n in range(len(parts), -1, -1):
        path = _loc_path(tuple(parts[:n]))
        if path in lines:
            return lines[path], path
    return None, ""


def _error_text(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("literal_error",):
        return f"{err.get('input')!r}: {msg[0].lower()}{msg[1:]}"
    if kind in ("greater_than_equal", "less_than_equal", "int_parsing", "int_type", "bool_parsing",
                "bool_type", "too_short", "list_type", "dict_type", "model_type", "string_type",
                "int_from_float"):
        return f"{err.get('input')!r}: {msg[0].lower()}{msg[1:]}"
    return msg


def _from_validation_error(exc: ValidationError, located: _Located, file: str) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    line, found = _best_line(located.lines, loc)
    if err["type"] == "missing":
        path = _loc_path(loc)
    else:
        path = found or _loc_path(loc)
    return ConfigError(file, line, path, _error_text(err))

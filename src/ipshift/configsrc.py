"""Configuration source: YAML text in, plain data with a line per key path out.

Theory of operation: the YAML text is composed once into nodes (libyaml's
parser when PyYAML has it), which gives every key path, such as
``interfaces.eth0.addresses[1]``, its line number and catches keys given
twice (PyYAML would keep the last one silently); the plain data is
constructed from the same nodes. When pydantic later refuses the data,
``_from_validation_error`` turns its first error into
``file:line: key.path: message``, the line being that of the longest prefix
of the error's location that the file has. Every failure is one
:class:`ConfigError` -- never a traceback -- and one short line: input it
echoes is abbreviated (:func:`abbreviate`: the first ``MAX_ECHO`` characters
and how long it was), and a key path or message that is still long is cut
(``MAX_PATH``, ``MAX_MESSAGE``), so a 5 MB value yields a line of a few
hundred characters, not of 5 MB. Numbers too long for Python to convert
(``sys.get_int_max_str_digits()``) are refused with their line before the
data is constructed.

This module does no I/O: :mod:`ipshift.config` reads the file and holds the
models.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

__all__ = ["ConfigError", "abbreviate"]

MAX_ECHO = 60  # characters of a value an error message quotes
MAX_PATH = 80  # characters of a key path in an error message
MAX_MESSAGE = 180  # characters of an error message after its path


def abbreviate(value: Any, keep: int = MAX_ECHO) -> str:
    """``repr(value)`` for an error message: when long, its first ``keep`` characters and how long it
    was -- a message quotes the input it refuses, never megabytes of it."""
    text = repr(value)
    if len(text) <= keep + 2:
        return text
    if isinstance(value, (str, bytes)):
        size = f"{len(value)} characters" if isinstance(value, str) else f"{len(value)} bytes"
    elif isinstance(value, (list, tuple, dict, set)):
        size = f"a {type(value).__name__} of {len(value)} items"
    else:
        size = f"{len(text)} characters written out"
    return f"{text[:keep]}... ({size})"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class ConfigError(Exception):
    """A configuration problem, printable as one line."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = _clip(path, MAX_PATH)
        self.message = _clip(message, MAX_MESSAGE)
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


_INT_TAG = "tag:yaml.org,2002:int"


def _walk(node: yaml.Node, path: str, lines: dict[str, int], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        limit = sys.get_int_max_str_digits()
        if node.tag == _INT_TAG and limit and len(node.value) > limit:
            raise ConfigError(file, node.start_mark.line + 1, path,
                              f"{abbreviate(node.value)}: a number of more than {limit} digits")
    elif isinstance(node, yaml.MappingNode):
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
    lines: dict[str, int] = {}
    try:
        # one parse: the node tree gives the line numbers, the data is constructed from it
        loader = _SAFE_LOADER(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _walk(node, "", lines, file)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise ConfigError(file, line, "", f"YAML error: {exc.reason} (character {exc.position})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(file, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, "", f"YAML error: {exc}".splitlines()[0]) from None
    except (ValueError, OverflowError) as exc:  # a value the constructors cannot make (see _walk)
        raise ConfigError(file, None, "", f"cannot read a value: {exc}") from None
    if node is None or data is None:
        raise ConfigError(file, 1, "", "the file is empty: it needs at least 'interfaces:'")
    if not isinstance(data, dict):
        raise ConfigError(file, node.start_mark.line + 1, "", "the top level must be a mapping of keys")
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
    if kind == "too_long":
        ctx = err.get("ctx") or {}
        return f"{ctx.get('actual_length', 'too many')} items: at most {ctx.get('max_length')} are allowed"
    if kind in ("literal_error", "greater_than_equal", "less_than_equal", "int_parsing", "int_type",
                "bool_parsing", "bool_type", "too_short", "list_type", "dict_type", "model_type",
                "string_type", "int_from_float"):
        return f"{abbreviate(err.get('input'))}: {msg[0].lower()}{msg[1:]}"
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

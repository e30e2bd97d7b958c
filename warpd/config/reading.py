"""Reading a configuration file safely: bounded in size, depth and expansion, every failure a ConfigError.

A configuration file is written by an operator but may be hostile or simply
broken (a generated file, a paste gone wrong).  Whatever it holds, reading it
ends quickly with either data or one message naming the problem: never an
"internal error" (exit 1, which systemd restarts forever), never minutes of CPU
on a YAML alias bomb.  The same bounds apply to values set from the environment
(:func:`data_problems`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import yaml

from warpd.errors import ConfigError
from warpd.redact import redact

# Far above any real configuration (the commented example is 7 KB, 40 levels deep would be absurd),
# far below what makes parsing or validation slow.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 50_000
MAX_INT_DIGITS = 30  # no setting needs more; Python refuses past 4,300 with an exception of its own

Path = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate and non-string keys, and bounds nesting and alias expansion.

    PyYAML keeps the last of two equal keys without a word, which hides a
    pasted-twice ``batch_size``; merge keys (``<<: *defaults``) stay allowed.
    Aliases share nodes, so a tiny file can stand for a tree of billions of
    values (a "billion laughs"): :meth:`get_single_node` measures the tree the
    aliases expand to before anything walks it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    problem=f"nested more than {MAX_DEPTH} levels deep",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _measure(node, {}, set(), 0)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            # "!!map [1, 2]" or "!!set x": PyYAML's own check raises the ConstructorError for it
            return super().construct_mapping(node, deep=deep)
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise yaml.constructor.ConstructorError(
                    problem="keys must be strings (quote it)", problem_mark=key_node.start_mark
                )
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key_node.value!r} (first at line {seen[key_node.value]})",
                    problem_mark=key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def _scalar(self, node: yaml.ScalarNode, build: Any, what: str) -> Any:
        # PyYAML lets int()/float() raise a bare ValueError (no line) for "!!int 'x'" or 5,000 digits
        text = str(node.value).replace("_", "")
        if what == "an integer" and sum(c.isdigit() for c in text) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                problem=f"integer with more than {MAX_INT_DIGITS} digits", problem_mark=node.start_mark
            )
        try:
            return build(self, node)
        except (ValueError, OverflowError):
            raise yaml.constructor.ConstructorError(
                problem=f"not {what} (a value tagged {node.tag.rsplit(':', 1)[-1]!r} must be one)",
                problem_mark=node.start_mark,
            ) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        return self._scalar(node, yaml.SafeLoader.construct_yaml_int, "an integer")

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        return self._scalar(node, yaml.SafeLoader.construct_yaml_float, "a number")

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # YAML reads an unquoted 2020-13-45 as a date, and datetime raises a bare ValueError on its month
        try:
            return yaml.SafeLoader.construct_yaml_timestamp(self, node)
        except (ValueError, OverflowError):
            raise yaml.constructor.ConstructorError(
                problem="reads as a date or time but is not a valid one (quote it if it is text)",
                problem_mark=node.start_mark,
            ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def _measure(node: yaml.Node, sizes: dict[int, int], open_: set[int], depth: int) -> int:
    """Values in the tree *node* expands to; ComposerError past the bounds or on a recursive alias."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(
            problem="an alias refers to a node that contains it (recursive alias)",
            problem_mark=node.start_mark,
        )
    if depth > MAX_DEPTH:
        raise yaml.composer.ComposerError(
            problem=f"aliases expand to more than {MAX_DEPTH} levels of nesting", problem_mark=node.start_mark
        )
    open_.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _measure(child, sizes, open_, depth + 1)
        if total > MAX_NODES:
            raise yaml.composer.ComposerError(
                problem=f"expands to more than {MAX_NODES:,} values (aliases repeated too often?)",
                problem_mark=node.start_mark,
            )
    open_.discard(key)
    sizes[key] = total
    return total


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def read_file(path: str) -> dict[str, Any]:
    """The file's top-level mapping; ConfigError for a missing, unreadable, oversized or malformed file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            redact(f"{path}: cannot read the configuration file: {exc.strerror or exc}")
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            redact(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; is this the right file?")
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(redact(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})")) from None
    if path.lower().endswith(".json"):
        data = _parse_json(path, text)
    else:
        try:
            loader = _StrictLoader(text)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            raise ConfigError(redact(f"{path}: {_describe_yaml_error(exc)}")) from None
        except RecursionError:
            raise ConfigError(redact(f"{path}: invalid YAML: nested too deeply")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            redact(
                f"{path}: the top level must be a mapping (source:, destination:, ...), not {_show_kind(data)}"
            )
        )
    problems = data_problems(data)
    if problems:
        raise ConfigError(redact(f"{path}: {problems[0]}"))
    return data


def _parse_json(path: str, text: str) -> Any:
    try:
        return json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_int=_json_int, parse_constant=_json_constant
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(
            redact(f"{path}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}")
        ) from None
    except ValueError as exc:
        raise ConfigError(redact(f"{path}: invalid JSON: {exc}")) from None
    except RecursionError:
        raise ConfigError(redact(f"{path}: invalid JSON: nested too deeply")) from None


def _show_kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"a single value ({type(value).__name__})"


def format_path(path: Path) -> str:
    """``("schemas", 0, "tables", 1, "batch_size")`` -> ``"schemas[0].tables[1].batch_size"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{shown(part)}" if out else shown(part))
    return out or "(top level)"


def shown(name: object) -> str:
    """A key or variable name for a message: as written, or quoted and escaped when it holds a character
    that is not printable (a newline would forge a second problem line, an escape sequence would drive the
    operator's terminal)."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def data_problems(data: Any) -> list[str]:
    """What no setting can hold, wherever it came from: too deep, too many values, a number that is not
    finite or too long, a string with a lone surrogate (not encodable, so not printable).  One line each."""
    problems: list[str] = []
    count = 0
    for path, value in _walk(data, ()):
        count += 1
        if count > MAX_NODES:
            return [f"more than {MAX_NODES:,} values"]
        if len(path) > MAX_DEPTH:
            return [f"{format_path(path[:MAX_DEPTH])}: nested more than {MAX_DEPTH} levels deep"]
        for text in (value, path[-1] if path else None):
            if isinstance(text, str) and _has_surrogate(text):
                problems.append(
                    f"{format_path(path)}: holds an invalid character (a lone UTF-16 surrogate, or bytes "
                    "that are not UTF-8 in an environment variable)"
                )
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{format_path(path)}: {value} is not a finite number")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_INT_DIGITS:
            problems.append(f"{format_path(path)}: integer with more than {MAX_INT_DIGITS} digits")
    return list(dict.fromkeys(problems))


def _walk(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    # iterative: a recursive walk would itself hit the recursion limit on hostile nesting
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        yield where, item
        if len(where) > MAX_DEPTH:
            continue
        if isinstance(item, dict):
            stack.extend((where + (str(k),), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((where + (i,), v) for i, v in reversed(list(enumerate(item))))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    # Built from the parts, not str(exc): that quotes the offending line, which may hold a password.
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({context} at line {context_mark.line + 1})"
    return f"{where}invalid YAML: {problem}"

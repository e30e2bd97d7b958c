"""Read a configuration file, apply environment and command-line overrides, validate, build the model.

Precedence: file < environment (``CARTRIDGE_WARP_...``) < command line.  The
merged data is validated once against ``schema.json`` and checked for
consistency (duplicate names, a ``type`` that contradicts its URI); every
problem found is reported together, one line each, ``<path>: <problem>``,
so an operator fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from warpd.config.crosschecks import cross_problems
from warpd.config.model import (
    ENDPOINT_TYPES,
    SECRET_OPTION,
    CliOverrides,
    Config,
    build_config,
    scheme_to_type,
)
from warpd.config.reading import MAX_INT_DIGITS, data_problems, format_path, read_file, shown
from warpd.errors import ConfigError
from warpd.redact import redact, remember_secret, remember_uri_secrets

ENV_PREFIX = "CARTRIDGE_WARP_"
# Command-line settings, not configuration keys: the entry points may read them, the loader skips them.
RESERVED_ENV = frozenset({"CARTRIDGE_WARP_CONFIG", "CARTRIDGE_WARP_MODE"})

Path = tuple[str | int, ...]
Problem = tuple[Path, str]  # (where, for sorting; the full line shown to the operator)

# Appended to "required"/"must list" problems at these paths: where else the value can come from.
_HINTS: dict[Path, str] = {
    ("source", "connection_string"): (
        f"set it in the file, with --source, or {ENV_PREFIX}SOURCE__CONNECTION_STRING"
    ),
    ("destination", "connection_string"): (
        f"set it in the file, with --destination, or {ENV_PREFIX}DESTINATION__CONNECTION_STRING"
    ),
    ("schemas",): "list at least one schema in the file, or name one with --schema",
}
_ENDPOINT_KEYS = ("type", "connection_string", "database")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def load_config(
    path: str | None, *, environ: Mapping[str, str] | None = None, cli: CliOverrides | None = None
) -> Config:
    """Load, override, validate and resolve the configuration; ConfigError lists every problem."""
    environ = os.environ if environ is None else environ
    data = read_file(path) if path is not None else {}
    origins: dict[Path, str] = {}
    problems = apply_environment(data, environ, origins)
    apply_cli(data, cli or CliOverrides(), origins)
    _remember_secrets(data)
    unusable = data_problems(data)
    if unusable:
        # values no check below could even walk or print (too deep, lone surrogates, ...)
        raise ConfigError(redact("\n".join(unusable)))
    _normalise(data)
    problems += validation_problems(data, origins)
    problems += consistency_problems(data, origins, environ)
    if problems:
        raise ConfigError(format_problems(problems))
    return build_config(data)


def _remember_secrets(data: Mapping[str, Any]) -> None:
    """Have :func:`redact` hide this configuration's passwords from here on, whatever their characters."""
    for section in ("source", "destination"):
        endpoint = data.get(section)
        if not isinstance(endpoint, dict):
            continue
        remember_uri_secrets(endpoint.get("connection_string"))
        for key, value in endpoint.items():
            if isinstance(value, str) and SECRET_OPTION.search(str(key)):
                remember_secret(value)


@functools.cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package (shared: do not modify the returned dict)."""
    text = resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(config_schema())


def format_problems(problems: list[Problem]) -> str:
    def order(problem: Problem) -> tuple[Any, ...]:
        return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in problem[0]), problem[1]

    lines = dict.fromkeys(redact(line) for _, line in sorted(problems, key=order))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Environment and command-line overrides


class _OverrideError(Exception):
    """An override that cannot be applied; the message completes "<VARIABLE>: "."""


def apply_environment(
    data: dict[str, Any], environ: Mapping[str, str], origins: dict[Path, str]
) -> list[Problem]:
    """Apply every ``CARTRIDGE_WARP_`` variable to *data*; return the problems, each naming its variable."""
    problems: list[Problem] = []
    overrides: list[tuple[Path, str, str]] = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV:
            continue
        variable = shown(name)
        segments = name[len(ENV_PREFIX) :].split("__")
        if not all(segments):
            problems.append(((), f"{variable}: empty key (separate keys with exactly two underscores)"))
            continue
        if any(s.isascii() and s.isdigit() and len(s) > 6 for s in segments):
            problems.append(((), f"{variable}: list index too large"))
            continue
        path = tuple(int(s) if s.isascii() and s.isdigit() else s.lower() for s in segments)
        overrides.append((path, variable, value))
    # Index order, so SCHEMAS__0__... exists before SCHEMAS__1__... appends after it.
    overrides.sort(key=lambda o: tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in o[0]))
    for path, variable, value in overrides:
        try:
            _assign(data, path, _coerce(value, _schema_at(path), variable))
        except _OverrideError as exc:
            problems.append((path, f"{variable}: {exc}"))
        else:
            origins[path] = variable
    return problems


def apply_cli(data: dict[str, Any], cli: CliOverrides, origins: dict[Path, str]) -> None:
    """Apply the command-line settings, which win over file and environment."""
    for path, value, flag in (
        (("source", "connection_string"), cli.source, "--source"),
        (("destination", "connection_string"), cli.destination, "--destination"),
        (("dry_run",), cli.dry_run, "--dry-run"),
        (("state_dir",), cli.state_dir, "--state-dir"),
        (("monitoring", "log_level"), cli.log_level, "--log-level"),
    ):
        if value is None:
            continue
        try:
            _assign(data, path, value)
        except _OverrideError:
            continue  # the file has a non-mapping where a section belongs; validation reports it
        origins[path] = flag
    if cli.schema is not None:
        if data.get("schemas") is None:
            data["schemas"] = []
        schemas = data["schemas"]
        if isinstance(schemas, list) and not any(
            isinstance(s, dict) and s.get("name") == cli.schema for s in schemas
        ):
            # Single mode runs a schema the file does not describe with every default.
            schemas.append({"name": cli.schema})
            origins[("schemas", len(schemas) - 1)] = "--schema"


def _deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = config_schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _schema_at(path: Path) -> Mapping[str, Any] | None:
    """The JSON Schema node for *path*; None inside a connector's free-form options."""
    node = _deref(config_schema())
    for depth, segment in enumerate(path):
        where = format_path(path[:depth]) if depth else "the top level"
        kind = node.get("type")
        if kind == "array":
            if not isinstance(segment, int):
                raise _OverrideError(
                    f"{where} is a list: address an entry by its index, e.g. ...__0__{shown(str(segment).upper())}"
                )
            node = node.get("items", {})
        elif kind == "object":
            properties = node.get("properties", {})
            if isinstance(segment, int):
                raise _OverrideError(f"{where} is a mapping, not a list: use a key name instead of {segment}")
            if segment not in properties:
                if node.get("additionalProperties", True) is not False:
                    return None  # free-form connector options
                raise _OverrideError(f"unknown key {segment!r} in {where}{_suggestion(segment, properties)}")
            node = properties[segment]
        else:
            raise _OverrideError(f"{where} is a single value and has no key {str(segment)!r}")
        node = _deref(node)
    return node


def _coerce(value: str, node: Mapping[str, Any] | None, variable: str) -> Any:
    """Turn the variable's text into the type the schema declares at its path."""
    text = value.strip()
    if node is None:
        # Connector options have no declared type; read plain integers and booleans as such, like YAML would.
        if re.fullmatch(r"-?(0|[1-9][0-9]*)", text) and len(text) <= MAX_INT_DIGITS:
            return int(text)
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return value
    kind = node.get("type")
    if kind == "integer":
        if re.fullmatch(r"[+-]?[0-9]+", text):
            if len(text.lstrip("+-")) > MAX_INT_DIGITS:
                raise _OverrideError(f"an integer with more than {MAX_INT_DIGITS} digits")
            return int(text)
        raise _OverrideError(f"{_shown(value)} is not an integer")
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and len(text) <= 64:
            return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else number
        raise _OverrideError(f"{_shown(value)} is not a number")
    if kind == "boolean":
        if text.lower() in _BOOLEANS:
            return _BOOLEANS[text.lower()]
        raise _OverrideError(f"{_shown(value)} is not a boolean (use true/false, yes/no or 1/0)")
    if kind == "array":
        if _deref(node.get("items", {})).get("type") == "object":
            raise _OverrideError(
                f"a list of sections cannot be set from one variable; set its entries' keys, e.g. {variable}__0__NAME"
            )
        return [item.strip() for item in value.split(",") if item.strip()]
    if kind == "object":
        raise _OverrideError(f"is a section; set its keys with {variable}__<KEY>")
    return value


def _shown(value: str) -> str:
    """An override's text for a one-line message: quoted, escaped, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + '..."'


def _assign(data: dict[str, Any], path: Path, value: Any) -> None:
    """Set *path* in *data* to *value*, creating sections and appending list entries on the way."""
    node: Any = data
    for depth, segment in enumerate(path):
        last = depth == len(path) - 1
        empty: Any = None if last else ([] if isinstance(path[depth + 1], int) else {})
        if isinstance(node, dict):
            if last:
                node[segment] = value
                return
            if node.get(segment) is None:
                node[segment] = empty
            node = node[segment]
        elif isinstance(node, list) and isinstance(segment, int):
            if segment > len(node):
                raise _OverrideError(
                    f"index {segment} is past the end of {format_path(path[:depth])}, which has "
                    f"{len(node)} entries (number entries from 0 without gaps)"
                )
            if segment == len(node):
                node.append(value if last else empty)
            elif last:
                node[segment] = value
            if last:
                return
            node = node[segment]
        if not isinstance(node, dict | list) or isinstance(node, list) != isinstance(path[depth + 1], int):
            kind = "list" if isinstance(path[depth + 1], int) else "mapping"
            raise _OverrideError(f"{format_path(path[: depth + 1])} in the file is not a {kind}")


def _normalise(data: dict[str, Any]) -> None:
    # Absent sections become empty ones so the error names the key that is actually needed.
    for section, empty in (("source", {}), ("destination", {}), ("schemas", [])):
        if data.get(section) is None:
            data[section] = empty
    monitoring = data.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("log_level"), str):
        level = monitoring["log_level"].upper()
        if level in config_schema()["$defs"]["monitoring"]["properties"]["log_level"]["enum"]:
            monitoring["log_level"] = level


# ---------------------------------------------------------------------------
# Validation


def _suggestion(key: str, valid: Mapping[str, Any]) -> str:
    """``; did you mean 'batch_size'?`` or, with nothing close, the list of valid keys."""
    names = sorted(valid)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys here: {', '.join(names)}"


def _show(value: Any) -> str:
    """A value as the operator wrote it: YAML words for null/booleans, no dumps of whole sections."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
}


def _describe(error: ValidationError) -> Iterator[tuple[Path, str]]:
    path: Path = tuple(error.absolute_path)
    value, rule, schema = error.instance, error.validator_value, error.schema
    if error.validator == "additionalProperties":
        allowed = schema.get("properties", {})
        for key in sorted((k for k in value if k not in allowed), key=str):
            yield path + (key,), "unknown key" + _suggestion(str(key), allowed)
    elif error.validator == "required":
        for key in rule:
            if key not in value:
                yield (
                    path + (key,),
                    "required" + (f" ({_HINTS[path + (key,)]})" if path + (key,) in _HINTS else ""),
                )
    elif error.validator == "type":
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in ([rule] if isinstance(rule, str) else rule))
        yield path, f"expected {expected}, got {_show(value)}"
    elif error.validator == "enum":
        if not isinstance(value, str) and schema.get("type") == "string":
            return  # the type error at the same path says it better
        message = f"{_show(value)} is not one of {', '.join(repr(v) for v in rule)}"
        close = difflib.get_close_matches(str(value), [str(v) for v in rule], n=1, cutoff=0.6)
        yield path, message + (f"; did you mean {close[0]!r}?" if close else "")
    elif error.validator == "minItems":
        hint = f" ({_HINTS[path]})" if path in _HINTS else ""
        yield path, f"must list at least {rule} entr{'y' if rule == 1 else 'ies'}{hint}"
    elif error.validator == "minLength":
        yield path, "must not be empty"
    elif error.validator == "uniqueItems":
        yield path, "lists the same entry more than once"
    elif error.validator == "pattern":
        yield path, f"{_show(value)} is not valid: must be {schema.get('description', 'of the form ' + rule)}"
    else:
        yield path, error.message


def _origin(path: Path, origins: Mapping[Path, str]) -> str:
    for depth in range(len(path), 0, -1):
        if path[:depth] in origins:
            return f" (set by {origins[path[:depth]]})"
    return ""


def validation_problems(data: Mapping[str, Any], origins: Mapping[Path, str]) -> list[Problem]:
    """Every JSON Schema violation, as ``<path>: <problem>`` lines, noting overrides that caused them."""
    problems = []
    for error in _validator().iter_errors(data):
        for path, message in _describe(error):
            problems.append((path, f"{format_path(path)}: {message}{_origin(path, origins)}"))
    return problems


def _duplicates(entries: Sequence[tuple[Path, Any]], what: str) -> Iterator[Problem]:
    first: dict[str, Path] = {}
    for path, name in entries:
        if not isinstance(name, str):
            continue
        if name in first:
            yield (
                path,
                f"{format_path(path)}: duplicate {what} {name!r} (already at {format_path(first[name][:-1])})",
            )
        else:
            first[name] = path


def consistency_problems(
    data: Mapping[str, Any],
    origins: Mapping[Path, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """What a JSON Schema cannot say: unique names, a known URI scheme that agrees with ``type``, URIs the
    connectors can use, one writer per destination schema, distinct replica ids, a safe metrics directory."""
    problems = _consistency(data) + cross_problems(data, os.environ if environ is None else environ)
    return [(path, line + _origin(path, origins or {})) for path, line in problems]


def _consistency(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for section in ("source", "destination"):
        endpoint = data.get(section)
        if not isinstance(endpoint, dict):
            continue
        bigquery = endpoint.get("type") == "bigquery" or str(
            endpoint.get("connection_string", "")
        ).startswith("bigquery:")
        for key in endpoint:
            if bigquery and key == "dataset":
                continue  # a BigQuery destination's key (docs/bigquery.md), not a misspelt "database"
            # Connector options are free-form, so a misspelt connection_string would pass silently.
            close = difflib.get_close_matches(str(key), _ENDPOINT_KEYS, n=1, cutoff=0.8)
            if close and close[0] != key:
                problems.append(
                    (
                        (section, key),
                        f"{format_path((section, key))}: unknown key; did you mean {close[0]!r}?",
                    )
                )
        uri = endpoint.get("connection_string")
        if not isinstance(uri, str) or not uri:
            continue
        if isinstance(endpoint.get("type"), str) and endpoint["type"] not in ENDPOINT_TYPES:
            continue  # a plugin connector's type: its own URI check judges the string (check_endpoint)
        try:
            inferred = scheme_to_type(uri)
        except ConfigError as exc:
            problems.append(((section, "connection_string"), f"{section}.connection_string: {exc}"))
            continue
        declared = endpoint.get("type")
        if declared in ENDPOINT_TYPES and declared != inferred:
            problems.append(
                (
                    (section, "type"),
                    f"{section}.type: {declared!r} contradicts the connection string, whose scheme means "
                    f"{inferred!r}; correct one of them (type may be left out)",
                )
            )
    problems += _supervisor_problems(data)
    schemas = data.get("schemas")
    if isinstance(schemas, list):
        named: list[tuple[Path, Any]] = [
            (("schemas", i, "name"), s.get("name")) for i, s in enumerate(schemas) if isinstance(s, dict)
        ]
        problems += _duplicates(named, "schema name")
        for i, schema in enumerate(schemas):
            tables = schema.get("tables") if isinstance(schema, dict) else None
            if isinstance(tables, list):
                table_names: list[tuple[Path, Any]] = [
                    (("schemas", i, "tables", j, "name"), t.get("name"))
                    for j, t in enumerate(tables)
                    if isinstance(t, dict)
                ]
                problems += _duplicates(table_names, "table name")
    return problems


def _supervisor_problems(data: Mapping[str, Any]) -> list[Problem]:
    section = data.get("supervisor")
    if not isinstance(section, dict):
        return []
    base, cap = section.get("restart_backoff_base", 1.0), section.get("restart_backoff_cap", 60.0)
    if isinstance(base, int | float) and isinstance(cap, int | float) and cap < base:
        path: Path = ("supervisor", "restart_backoff_cap")
        return [(path, f"{format_path(path)}: {cap} is less than restart_backoff_base ({base})")]
    return []

"""Fuzzed configurations: whatever a file, the environment or the command line holds, the answer is
either a valid configuration or exit 2 with a message, never a traceback, a hang or a password.

Hypothesis builds configuration documents from the keys of the shipped JSON Schema
(``warpd/config/schema.json``): a valid skeleton (a source and destination of each built-in kind,
stream and batch schemas, tables, per-level settings) that is then mutated (values of the wrong type
or out of range, huge, unicode and NUL strings, unknown and near-miss keys, missing required keys,
sections replaced by scalars), serialised as YAML or JSON and mutated again as text (duplicate keys,
alias bombs, recursive aliases, deep nesting, tags, truncation, non-mapping top levels, several
documents), plus raw bytes and invalid UTF-8, plus hostile ``CARTRIDGE_WARP_...`` variables and
command-line overrides.  Every connection string carries a password made of distinctive fragments.
The loader interpolates nothing: ``${HOME}`` and ``$(id)`` are among the hostile strings, and
:func:`test_dollar_strings_are_text` checks they stay text.

The property, in process: :func:`warpd.config.load_config` (which runs the JSON Schema, the
consistency checks and the cross-checks that ``--validate-config`` and start-up run, without
connecting) returns a Config or raises ConfigError whose message is non-empty, one printable line
per problem, and free of the password; any other exception fails the example, and so does an
example that runs longer than :data:`EXAMPLE_SECONDS` (a SIGALRM guard, since hypothesis's own
deadline is off: a busy 2-core CI machine makes timing noise, and a hang is what matters).
A smaller number of examples runs the real command, ``python -m warpd --validate-config``, and checks
what the operator sees: exit 0 or 2, a message, no traceback, no password.

Reproducibility: CI runs the ``ci`` profile, ``derandomize=True`` and no example database, so every
run executes the same examples (hypothesis derives them from each test's source; the version is
pinned in setup.cfg): a red CI reproduces with the same command anywhere, and a green one does not
turn red without a change to the code.  A fixed database could not do that (CI starts from a fresh
clone each time).  Searching for new failures is a developer's job: ``WARP_FUZZ=explore`` runs 20
times as many random examples (and keeps failures in ``.hypothesis/``); each failure found is fixed
and kept below as an ``@example``, so CI checks it forever after (``WARP_FUZZ=examples`` runs those alone).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, example, given, note, settings
from hypothesis import strategies as st
from test_cli import assert_no_traceback, run_cli

import warpd.redact
from warpd.config import CliOverrides, config_schema, load_config
from warpd.errors import ConfigError

EXAMPLE_SECONDS = 15  # a valid example takes milliseconds; the bounded alias bomb about 0.1 s

_PROFILE = os.environ.get("WARP_FUZZ", "ci")
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# the @example regressions alone: to check that each still fails without its fix
settings.register_profile("examples", phases=[Phase.explicit], deadline=None)
_BASE = settings.get_profile(_PROFILE)
_SCALE = 20 if _PROFILE == "explore" else 1


def fuzz_settings(examples: int) -> settings:
    return settings(_BASE, max_examples=examples * _SCALE)


# ---------------------------------------------------------------------------
# The guard and the property


class Hung(Exception):
    """An example ran past EXAMPLE_SECONDS."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hung(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def fresh_secret_memory() -> Iterator[None]:
    """Each example starts with no remembered password, as a new process does: a password remembered
    by an earlier example must not hide a leak in this one."""
    saved = warpd.redact._secrets
    warpd.redact._secrets = warpd.redact._Secrets()
    try:
        yield
    finally:
        warpd.redact._secrets = saved


@dataclass(frozen=True)
class Secret:
    """A password of distinctive fragments joined by a character a URI may choke on."""

    fragments: tuple[str, ...]
    joiner: str

    @property
    def text(self) -> str:
        return self.joiner.join(self.fragments)

    def leaks(self, output: str) -> list[str]:
        forms = {self.text, quote(self.text, safe=""), *self.fragments}
        return sorted(form for form in forms if form in output)


def check_message(message: str, secret: Secret | None) -> None:
    """A configuration error as the operator reads it: problems one per line, printable, no password."""
    assert message.strip(), "empty message"
    assert_no_traceback(message)
    for line in message.split("\n"):
        assert line.strip(), f"empty line in {message!r}"
        assert line.isprintable(), f"unprintable character in {line!r}"
    if secret is not None:
        assert not secret.leaks(message), (secret.leaks(message), message)


def validate(
    path: str | None, environ: Mapping[str, str], cli: CliOverrides, secret: Secret | None
) -> str | None:
    """The in-process property; returns the error message, or None for a valid configuration."""
    with fresh_secret_memory(), time_limit(EXAMPLE_SECONDS):
        try:
            config = load_config(path, environ=environ, cli=cli)
        except ConfigError as exc:
            message = str(exc)
        else:
            # what --validate-config prints about a valid one
            shown = f"{config.schema_names} {config.source.redacted()} {config.destination.redacted()}"
            shown += repr(config.source) + repr(config.destination)
            if secret is not None:
                assert not secret.leaks(shown), (secret.leaks(shown), shown)
            if cli.schema is not None:
                config.schema(cli.schema)
            event("valid")
            return None
    event("refused")
    check_message(message, secret)
    return message


# ---------------------------------------------------------------------------
# Values: valid ones from the schema, hostile ones from anywhere

SCHEMA = config_schema()
DEFS = SCHEMA["$defs"]
BATCH_ONLY = {"schedule", "sync", "cursor_column", "cursor_field", "safety_lag", "delete_detection"}


def deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = DEFS[node["$ref"].rsplit("/", 1)[-1]]
    return node


NAMES = st.sampled_from(["shop", "crm", "billing", "orders", "customers", "a", "b", "c", "Shop_2", "日本"])
DURATIONS = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e6),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**4), st.sampled_from(["", "ms", "s", "m", "h", "d"])),
)

POSITIVE_DURATIONS = st.one_of(
    st.integers(1, 10**6),
    st.floats(0.5, 1e6),
    st.builds(lambda n, u: f"{n}{u}", st.integers(1, 10**4), st.sampled_from(["", "s", "m", "h", "d"])),
)


def valid_value(node: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """A value the schema accepts at *node* (settings only; sections are built by hand)."""
    node = deref(node)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == ["string", "number"]:
        return DURATIONS
    if kind == "integer":
        return st.integers(node.get("minimum", -(10**6)), node.get("maximum", 10**6))
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        return st.floats(
            low, node.get("maximum", 1e6), exclude_min="exclusiveMinimum" in node, allow_nan=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(
            valid_value(node["items"]) if "enum" in deref(node["items"]) else NAMES,
            min_size=node.get("minItems", 0),
            max_size=3,
            unique=bool(node.get("uniqueItems")),
        )
    if kind == "object":
        props = node.get("properties", {})
        return st.fixed_dictionaries({}, optional={k: valid_value(v) for k, v in props.items()})
    return NAMES  # strings: names, patterns, globs


CONTROL = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\x1b"]
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\n",
        "line\nforged: problem",
        "\r\n",
        "\x1b[2J",
        "\u202eevil",
        "\ufeff",
        "🙂" * 50,
        "9" * 5000,
        "1" * 31,
        "-1",
        "0",
        "1e309",
        "-0.0",
        ".nan",
        ".inf",
        "NaN",
        "15x",
        "1.5.5s",
        " 15 m ",
        "٣",
        "²",
        "*/99 * * * *",
        "60 * * * *",
        "* * *",
        "@reboot",
        "0 0 31 2 *",
        "* * * * * * *",
        "~",
        "null",
        "yes",
        "*",
        "[",
        "%",
        "%zz",
        "{{ x }}",
        "${HOME}",
        "$(id)",
        "../../etc/passwd",
        "/dev/zero",
    ]
)
STRINGS = st.one_of(ODD_STRINGS, st.text(max_size=30), st.text(st.sampled_from(CONTROL), max_size=5))
HOSTILE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**40), 10**40),
    st.sampled_from([0, -1, 65536, 70000, 2**32, 2**64, 10**31, -(10**31)]),
    st.floats(),
    STRINGS,
    st.text(max_size=20).map(lambda s: s * 1000),
)
HOSTILE_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3),
    max_leaves=6,
)

SCHEMA_KEYS = sorted(
    {*SCHEMA["properties"], *DEFS["schema"]["properties"], *DEFS["table"]["properties"]}
    | {*DEFS["retry"]["properties"], *DEFS["supervisor"]["properties"], *DEFS["monitoring"]["properties"]}
    | {
        "connection_string",
        "type",
        "database",
        "dataset",
        "server_id",
        "project",
        "location",
        "every",
        "cron",
    }
)


def _near_miss(key: str, i: int) -> str:
    i %= len(key)
    return key[:i] + key[i + 1 :] if i % 2 else key[:i] + key[i].upper() + key[i + 1 :]


HOSTILE_KEYS = st.one_of(
    st.sampled_from(SCHEMA_KEYS),
    st.builds(_near_miss, st.sampled_from(SCHEMA_KEYS), st.integers(0, 40)),
    STRINGS,
    st.integers(),
    st.booleans(),
    st.none(),
)


# ---------------------------------------------------------------------------
# Connection strings, each with the example's password

SECRETS = st.builds(
    Secret,
    st.tuples(
        *[st.text(string.ascii_letters + string.digits, min_size=10, max_size=12).map("Pw{}".format)] * 2
    ),
    st.sampled_from(["", "@", ":", "/", "?", "#", "[", "]", "%", " ", "+", "&", "'", '"', "\\", "é", "日"]),
)
SOURCE_KINDS = ["mysql", "mongodb", "bigquery"]
DESTINATION_KINDS = ["postgresql", "mysql", "bigquery"]
SCHEMES = [
    "mysql",
    "mariadb",
    "postgresql",
    "postgres",
    "mongodb",
    "mongodb+srv",
    "bigquery",
    "MySQL",
    "sqlite",
]


def good_uri(kind: str, secret: Secret, role: str) -> str:
    password = quote(secret.text, safe="")
    return {
        "mysql": f"mysql://warp:{password}@127.0.0.1:3306/{'shop' if role == 'source' else ''}",
        "mongodb": f"mongodb://warp:{password}@127.0.0.1:27017/shop",
        "postgresql": f"postgresql://warp:{password}@127.0.0.1:5432/warp_test",
        "bigquery": "bigquery://my-project?location=US",
    }[kind]


@st.composite
def bad_uris(draw: st.DrawFn, secret: Secret) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    raw, encoded = secret.text, quote(secret.text, safe="")
    password = draw(st.sampled_from([raw, encoded]))
    port = draw(st.one_of(st.integers(-5, 10**7).map(str), st.sampled_from(["", "abc", "٣", "²", "0x1"])))
    host = draw(
        st.sampled_from(["127.0.0.1", "", "[::1]", "[::1", "h,h2", "h:1,h:2", "ho st", "h\x00", "日本"])
    )
    query = draw(
        st.sampled_from(
            [
                "",
                "?sslmode=bogus",
                "?target_session_attrs=x",
                "?location=EU&max_bytes_billed=²",
                "?max_bytes_billed=-1",
                "?job_timeout=nan",
                "?min_flush_interval=1e999",
                "?api_endpoint=ftp://x",
                "?api_endpoint=http://x&credentials=/k.json",
                "?unknown=1",
                "?replicaSet=",
                "?authSource=%zz",
                "?serverSelectionTimeoutMS=-5",
                "?%",
                "?=",
                "#frag",
            ]
        )
    )
    template = draw(st.integers(0, 8))
    if template == 0:
        uri = f"{scheme}://warp:{password}@{host}:{port}/db{query}"
    elif template == 1:
        uri = f"warp:{password}@{host}/db"  # no scheme
    elif template == 2:
        uri = f"{draw(st.text(max_size=8))}://warp:{password}@{host}{query}"
    elif template == 3:
        uri = f"{scheme}://warp:{password}@{host}{query}"
    elif template == 4:
        uri = f"{scheme}://:{password}@{host}:{port}"  # no user name
    elif template == 5:
        uri = f"{scheme}://warp:{password}"  # no @HOST: parsers take the password for the port
    elif template == 6:
        project = draw(st.sampled_from(["my-project", "", "My Project", "x:y", "[p", "p]"]))
        uri = f"bigquery://{project}{query}"
    else:
        base = f"{scheme}://warp:{password}@{host}/db{query}"
        at = draw(st.integers(0, len(base)))
        uri = base[:at] + draw(STRINGS) + base[at:]
    return uri


# ---------------------------------------------------------------------------
# Documents: a valid skeleton, mutated


@dataclass
class Document:
    data: dict[str, Any]
    secret: Secret
    source_kind: str


def _settings(draw: st.DrawFn, level: Mapping[str, Any], skip: set[str], at_most: int) -> dict[str, Any]:
    keys = sorted(k for k in level["properties"] if k not in skip)
    chosen = draw(st.lists(st.sampled_from(keys), max_size=at_most, unique=True))
    return {key: draw(valid_value(level["properties"][key])) for key in chosen}


@st.composite
def schema_entries(draw: st.DrawFn, name: str, batch: bool) -> dict[str, Any]:
    skip = {"name", "mode", "tables", "destination_schema", "source_database", "schedule", "sync"}
    if not batch:
        skip |= BATCH_ONLY
    entry: dict[str, Any] = {"name": name, **_settings(draw, DEFS["schema"], skip, 3)}
    if batch:
        entry["mode"] = "batch"
        every = {"every": draw(POSITIVE_DURATIONS)}
        cron = {"cron": draw(st.sampled_from(["*/15 * * * *", "0 3 * * 1-5", "@daily"]))}
        entry["schedule"] = draw(st.sampled_from([every, cron]))
    elif draw(st.booleans()):
        entry["mode"] = "stream"
    tables = draw(st.lists(NAMES, max_size=3, unique=True))
    table_skip = {"name", "sync", "cursor_field", "partition_filter"} | (set() if batch else BATCH_ONLY)
    entry_tables = []
    for table in tables:
        settings_ = _settings(draw, DEFS["table"], table_skip | {"cursor_column"}, 2)
        if batch and draw(st.booleans()):
            settings_["cursor_column"] = "updated_at"
        entry_tables.append({"name": table, **settings_})
    if entry_tables or draw(st.booleans()):
        entry["tables"] = entry_tables
    return entry


@st.composite
def skeletons(draw: st.DrawFn) -> Document:
    secret = draw(SECRETS)
    source_kind = draw(st.sampled_from(SOURCE_KINDS))
    destination_kind = draw(st.sampled_from(DESTINATION_KINDS))
    source: dict[str, Any] = {"connection_string": good_uri(source_kind, secret, "source")}
    destination: dict[str, Any] = {"connection_string": good_uri(destination_kind, secret, "destination")}
    if draw(st.booleans()):
        source["type"] = source_kind
    if source_kind == "mysql" and draw(st.booleans()):
        source["server_id"] = draw(st.integers(1, 10**6))
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    schemas = [
        draw(schema_entries(name, batch=source_kind == "bigquery" or draw(st.booleans()))) for name in names
    ]
    top_skip = {"retry"}
    data: dict[str, Any] = {"source": source, "destination": destination, "schemas": schemas}
    data.update(_settings(draw, SCHEMA, top_skip | set(data), 3))
    return Document(data, secret, source_kind)


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _places(item, (*path, i))


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def documents(draw: st.DrawFn) -> Document:
    """A skeleton with 0-4 mutations (the first kept valid by chance, the rest almost never)."""
    doc = draw(skeletons())
    for _ in range(draw(st.integers(0, 4))):
        places = list(_places(doc.data))
        path = draw(st.sampled_from(places))
        target = _at(doc.data, path)
        parent = _at(doc.data, path[:-1]) if path else None
        action = draw(st.sampled_from(["replace", "delete", "add", "wrap", "uri", "swap"]))
        if action == "replace" and path:
            parent[path[-1]] = draw(HOSTILE_VALUES)
        elif action == "delete" and path:
            del parent[path[-1]]
        elif action == "add" and isinstance(target, dict):
            target[draw(HOSTILE_KEYS)] = draw(
                st.one_of(HOSTILE_VALUES, st.sampled_from([{}, [], {"name": "x"}]))
            )
        elif action == "add" and isinstance(target, list):
            target.append(draw(HOSTILE_VALUES))
        elif action == "wrap" and path:
            parent[path[-1]] = draw(st.sampled_from([[target], {"value": target}, json.dumps(target)]))
        elif action == "uri":
            section = doc.data.get(draw(st.sampled_from(["source", "destination"])))
            if isinstance(section, dict):
                section["connection_string"] = draw(bad_uris(doc.secret))
        elif action == "swap" and isinstance(target, dict) and "name" in target:
            # a schema or table entry gets settings of the wrong level or mode
            key = draw(
                st.sampled_from(sorted(DEFS["schema"]["properties"]) + sorted(DEFS["table"]["properties"]))
            )
            target[key] = draw(valid_value((DEFS["schema"]["properties"] | DEFS["table"]["properties"])[key]))
    return doc


# ---------------------------------------------------------------------------
# Text: serialised, then mutated as text


def _bomb(width: int, depth: int) -> str:
    text = "b0: &b0 [" + ",".join(['"lol"'] * width) + "]\n"
    for i in range(1, depth + 1):
        text += f"b{i}: &b{i} [" + ",".join([f"*b{i - 1}"] * width) + "]\n"
    return text


def _duplicate(text: str, key: str, as_json: bool) -> str:
    if as_json:
        return text.replace("{", "{" + json.dumps(key) + ": 1, ", 1)
    return text + f"{json.dumps(key)}: 1\n"


TAGS = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!binary 'not base64 ~'",
    "!!int 'x'",
    "!!float 'x'",
    "!!int 0x1F",
    "!!timestamp 2020-99-99",
    "2020-01-01",
    "!!set {a, b}",
    "!!omap [a: 1, a: 2]",
    "!!pairs [a: 1]",
    "!!str",
    "!custom x",
    "!!map [1, 2]",
    "*undefined",
    "&a x",
    "1_000_000",
    "0o17",
    "+.inf",
    "-.inf",
    "0b102",
    "1:20:30",
    "? complex key",
]


@st.composite
def config_texts(draw: st.DrawFn) -> tuple[str, str, Document]:
    """(file suffix, text, document it came from)."""
    doc = draw(documents())
    as_json = draw(st.booleans())
    if as_json:
        text = json.dumps(doc.data, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    else:
        text = yaml.safe_dump(
            doc.data,
            default_flow_style=draw(st.sampled_from([False, True, None])),
            allow_unicode=draw(st.booleans()),
            sort_keys=False,
        )
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(str(k) for k in doc.data) or ["source"]))
        change = draw(st.integers(0, 8))
        if change == 0:
            text = _duplicate(text, key, as_json)
        elif change == 1 and not as_json:
            text += _bomb(draw(st.integers(2, 12)), draw(st.integers(1, 9)))
            text += draw(st.sampled_from(["global_table_whitelist: *b{}\n", "x{}: *b{}\n", ""])).replace(
                "{}", "1"
            )
        elif change == 2:
            depth = draw(st.integers(20, 3000))
            opening, closing = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ('{"a": ', "}")]))
            value = opening * depth + "1" + closing * depth
            text = (text[:-1] + f', "deep": {value}}}') if as_json else text + f"deep: {value}\n"
        elif change == 3 and not as_json:
            text += f"{key}_tagged: {draw(st.sampled_from(TAGS))}\n"
        elif change == 4:
            text = text[: draw(st.integers(0, len(text)))]
        elif change == 5:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.one_of(STRINGS, st.sampled_from(TAGS))) + text[at:]
        elif change == 6:
            text = draw(
                st.sampled_from(
                    [
                        "- a\n- b\n",
                        "42\n",
                        "'text'\n",
                        "null\n",
                        "",
                        "---\na: 1\n---\nb: 2\n",
                        "[1, 2]",
                        '"x"',
                        "...\n",
                        "%YAML 1.1\n%YAML 1.1\n---\na: 1\n",
                        "%TAG ! tag:x,2000:\n---\n!y z\n",
                        "\t",
                    ]
                )
            )
        elif change == 7 and not as_json:
            text = "%YAML 1.1\n---\n" + text + draw(st.sampled_from(["...\n", "---\n", "--- x\n"]))
        elif change == 8 and not as_json:
            text = (
                "defaults: &d {batch_size: 10}\n"
                + text
                + draw(
                    st.sampled_from(
                        ["merged: {<<: *d}\n", "m2: {<<: [*d, 5]}\n", "m3: {<<: 5}\n", "m4: *d\n"]
                    )
                )
            )
    return (".json" if as_json else draw(st.sampled_from([".yaml", ".yml", ".conf"]))), text, doc


# ---------------------------------------------------------------------------
# The environment and the command line


def _env_paths() -> list[str]:
    """Variable names (after CARTRIDGE_WARP_) for the schema's keys, list entries 0 and 1."""
    out: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str, depth: int) -> None:
        node = deref(node)
        if depth > 5:
            return
        if node.get("type") == "object" and "properties" in node:
            for key, child in node["properties"].items():
                walk(child, f"{prefix}__{key.upper()}" if prefix else key.upper(), depth + 1)
            if node.get("additionalProperties") is not False:
                out.extend(f"{prefix}__{k}" for k in ("SERVER_ID", "PASSWORD", "DATASET", "PROJECT"))
        elif node.get("type") == "array" and deref(node.get("items", {})).get("type") == "object":
            out.append(prefix)
            for i in (0, 1):
                walk(node["items"], f"{prefix}__{i}", depth + 1)
        else:
            out.append(prefix)

    walk(SCHEMA, "", 0)
    return sorted(set(out))


ENV_PATHS = _env_paths()


@st.composite
def env_names(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(ENV_PATHS))
    change = draw(st.integers(0, 9))
    if change == 1:
        name = name.replace("__", draw(st.sampled_from(["_", "___", "____", "__ __"])), 1)
    elif change == 2:
        name += draw(st.sampled_from(["__", "__X", "__0", "__NAME", "___", "__" + "9" * 7, "__٣"]))
    elif change == 3:
        name = name.replace(
            "__0", draw(st.sampled_from(["__5", "__-1", "__00", "__1000000", "__" + "9" * 50]))
        )
    elif change == 4:
        name = draw(st.sampled_from(["", "_", "__", "SOURCE", "SCHEMAS", "MONITORING", "CONFIG", "MODE"]))
    elif change == 5:
        name = name.lower()
    elif change == 6:
        name = name + draw(STRINGS.map(lambda s: s.replace("\x00", "")))
    return "CARTRIDGE_WARP_" + name


ENV_VALUES = st.one_of(
    STRINGS,
    st.sampled_from(
        ["true", "FALSE", "1,2,,3", " , ", "0", "1", "+5", "1_000", "1e3", "0x10", "\udcff\udcfe"]
    ),
    st.sampled_from(["a\udcffb", "\udc80"]),  # what os.environ makes of bytes that are not UTF-8
    st.builds(lambda n: "9" * n, st.integers(25, 6000)),
)


@st.composite
def environments(draw: st.DrawFn, secret: Secret) -> dict[str, str]:
    env = draw(st.dictionaries(env_names(), ENV_VALUES, max_size=4))
    if draw(st.booleans()):
        key = draw(st.sampled_from(["SOURCE", "DESTINATION"]))
        env[f"CARTRIDGE_WARP_{key}__CONNECTION_STRING"] = draw(
            st.one_of(
                bad_uris(secret), st.just(good_uri("mysql" if key == "SOURCE" else "postgresql", secret, key))
            )
        )
    return env


@st.composite
def cli_overrides(draw: st.DrawFn, secret: Secret) -> CliOverrides:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.none(), strategy)) if draw(st.integers(0, 3)) == 0 else None

    return CliOverrides(
        source=maybe(st.one_of(bad_uris(secret), st.just(good_uri("mysql", secret, "source")))),
        destination=maybe(
            st.one_of(bad_uris(secret), st.just(good_uri("postgresql", secret, "destination")))
        ),
        schema=maybe(st.one_of(NAMES, STRINGS)),
        dry_run=maybe(st.booleans()),
        state_dir=maybe(STRINGS),
        log_level=maybe(st.one_of(st.sampled_from(["debug", "INFO", "Warning", "error"]), STRINGS)),
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="warp-fuzz-") as directory:
        yield directory


def _write(workdir: str, suffix: str, content: str | bytes) -> str:
    path = os.path.join(workdir, "config" + suffix)
    with open(path, "wb") as handle:
        handle.write(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
    return path


# ---------------------------------------------------------------------------
# In process

# The password of the regression examples below (the generated ones draw their own).
KNOWN = Secret(("PwRegress0001", "PwRegress0002"), "/")
KNOWN_SOURCE = "mysql://warp:PwRegress0001%2FPwRegress0002@127.0.0.1:3306/shop"
KNOWN_DESTINATION = "postgresql://warp:PwRegress0001%2FPwRegress0002@127.0.0.1:5432/warp_test"
HEAD = f"source: {{connection_string: '{KNOWN_SOURCE}'}}\ndestination: {{connection_string: '{KNOWN_DESTINATION}'}}\n"


def known(text: str, suffix: str = ".yaml") -> tuple[str, str, Document]:
    return suffix, text, Document({}, KNOWN, "mysql")


@fuzz_settings(300)
@given(config=config_texts())
# An unquoted date that is no date (month 13) made PyYAML's datetime raise: "internal error", exit 1.
@example(config=known(HEAD + "schemas: [{name: a}]\nstate_dir: 2020-13-45\n"))
@example(config=known(HEAD + "schemas: [{name: a}]\nx: !!timestamp 2020-99-99\n"))
# "!!map [1, 2]": a sequence tagged as a mapping reached the duplicate-key check, a TypeError.
@example(config=known(HEAD + "schemas: [{name: a}]\nx: !!map [1, 2]\ny: !!set x\n"))
# A key holding a NUL, a newline or an escape sequence was printed raw: a forged problem line.
@example(config=known(HEAD + 'schemas: [{name: a, "\\0": 1, "a\\nforged: problem": 2, "\\e[2J": 3}]\n'))
# A URI without @HOST: its "port" is the password, and the MySQL check echoed the URI.
@example(config=known("source: {connection_string: 'mysql://warp:PwRegress0001'}\nschemas: [{name: a}]\n"))
# An unescaped "/" in a password ends a bigquery:// URI's host: "warp:PwRegress0001" was echoed as the project.
@example(
    config=known(
        f"source: {{connection_string: 'bigquery://warp:{KNOWN.text}@127.0.0.1/db'}}\n"
        f"destination: {{connection_string: '{KNOWN_DESTINATION}'}}\nschemas: [{{name: a}}]\n"
    )
)
# An unmatched "[" (a password not percent-encoded) in a bigquery:// URI: urlsplit's ValueError, exit 1.
@example(
    config=known(
        "source: {connection_string: 'bigquery://warp:PwRegress0001[PwRegress0002@127.0.0.1/db'}\n"
        f"destination: {{connection_string: '{KNOWN_DESTINATION}'}}\nschemas: [{{name: a, mode: batch}}]\n"
    )
)
def test_fuzzed_file_is_valid_or_a_configuration_error(workdir, config):
    suffix, text, doc = config
    note(f"file{suffix}:\n{text[:3000]}")
    validate(_write(workdir, suffix, text), {}, CliOverrides(), doc.secret)


@st.composite
def override_cases(draw: st.DrawFn) -> tuple[Document, dict[str, str], CliOverrides, bool]:
    """(document, environment, command line, whether the document is given as a file)."""
    doc = draw(documents())
    return doc, draw(environments(doc.secret)), draw(cli_overrides(doc.secret)), draw(st.booleans())


def _known_case(env: dict[str, str], cli: CliOverrides | None = None) -> tuple[Any, ...]:
    return Document({"schemas": [{"name": "a"}]}, KNOWN, "mysql"), env, cli or CliOverrides(), True


@fuzz_settings(150)
@given(case=override_cases())
# A variable name holding a newline or an escape sequence was printed raw.
@example(
    case=_known_case({"CARTRIDGE_WARP_SCHEMAS__0__X\nforged: problem": "1", "CARTRIDGE_WARP_\x1b[2J": "1"})
)
@example(
    case=_known_case(
        {"CARTRIDGE_WARP_SCHEMAS__0\u2028": "1"}, CliOverrides(source="mysql://warp:PwRegress0001")
    )
)
# "²".isdigit() is true, and int("²") raised a bare ValueError from the BigQuery URI check.
@example(case=_known_case({"CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": "bigquery://p?max_bytes_billed=²"}))
@example(
    case=_known_case({"CARTRIDGE_WARP_SOURCE__MAX_BYTES_BILLED": "²"}, CliOverrides(source="bigquery://p"))
)
def test_fuzzed_environment_and_command_line(workdir, case):
    doc, env, cli, as_file = case
    path = _write(workdir, ".yaml", yaml.safe_dump(doc.data, allow_unicode=True)) if as_file else None
    validate(path, env, cli, doc.secret)


@fuzz_settings(100)
@given(
    content=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda text, at, junk: text.encode()[:at] + junk + text.encode()[at:],
            st.sampled_from(
                ["source: {connection_string: 'mysql://h/db'}\nschemas: [{name: a}]\n", "a: 1\n"]
            ),
            st.integers(0, 60),
            st.sampled_from(
                [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\xfe\xff", b"\x80\x80"]
            ),
        ),
    ),
    suffix=st.sampled_from([".yaml", ".json"]),
)
# A private-use character as a key was printed raw.
@example(content=b"\xee\x80\x80:", suffix=".yaml")
def test_raw_bytes_are_valid_or_a_configuration_error(workdir, content, suffix):
    validate(_write(workdir, suffix, content), {}, CliOverrides(), None)


def test_dollar_strings_are_text(workdir):
    text = HEAD + "schemas: [{name: a, destination_schema: '${HOME}'}]\nstate_dir: $(id)/${HOME}\n"
    config = load_config(_write(workdir, ".yaml", text), environ={"HOME": "/root"})
    assert config.state_dir == "$(id)/${HOME}"
    assert config.schemas[0].destination_schema == "${HOME}"


# ---------------------------------------------------------------------------
# Through the real command


def _env_for_subprocess(env: Mapping[str, str]) -> dict[str, str]:
    # a real environment holds no NUL; lone surrogates other than os.environ's own (\udc80-\udcff) cannot be set
    out = {}
    for key, value in env.items():
        try:
            os.fsencode(key), os.fsencode(value)
        except UnicodeEncodeError:
            continue
        if "\x00" not in key + value and "=" not in key and key:
            out[key] = value
    return out


@st.composite
def command_cases(draw: st.DrawFn) -> tuple[tuple[str, str, Document], dict[str, str], list[str]]:
    """(file, environment, extra arguments) for one run of the command."""
    config = draw(config_texts())
    env = _env_for_subprocess(draw(environments(config[2].secret)))
    args = draw(st.sampled_from([[], ["--mode", "multi"]]))
    level = draw(st.one_of(st.none(), st.sampled_from(["debug", "bogus", "", " info ", "\u00df"])))
    return config, env, args + ([] if level is None else ["--log-level", level])


@fuzz_settings(10)
@given(case=command_cases())
# An unknown --log-level or CARTRIDGE_WARP_MONITORING__LOG_LEVEL was a traceback, exit 1.
@example(case=(known(HEAD + "schemas: [{name: a}]\n"), {}, ["--log-level", "bogus"]))
@example(
    case=(
        known(HEAD + "schemas: [{name: a}]\n"),
        {"CARTRIDGE_WARP_MONITORING__LOG_LEVEL": "nope"},
        ["--mode", "multi"],
    )
)
def test_fuzzed_configuration_through_the_command(workdir, case):
    (suffix, text, doc), env, extra = case
    result = run_cli(
        "--validate-config", "--config", _write(workdir, suffix, text), *extra, env=env, timeout=60
    )
    output = result.stdout + result.stderr
    note(output)
    assert result.returncode in (0, 2), (result.returncode, output)
    assert_no_traceback(output)
    assert not doc.secret.leaks(output), (doc.secret.leaks(output), output)
    if result.returncode == 2:
        event("refused")
        head, _, problems = result.stderr.partition("invalid configuration:\n")
        assert head.endswith(("cartridge-warp: ", "warpd: ")), output
        check_message("\n".join(line.removeprefix("  ") for line in problems.splitlines()), doc.secret)
    else:
        event("valid")
        assert "configuration is valid" in result.stdout, output

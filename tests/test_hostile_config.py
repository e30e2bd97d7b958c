"""Configuration a hostile (or careless) operator can write, and credentials that must never show.

Each test runs the real command (``python -m warpd``) or its ``main()`` and
asserts what the operator sees: the exit code (2 for anything wrong with the
configuration, so systemd's ``RestartPreventExitStatus=2`` stops restarting),
a one-line message naming the problem, and no secret in any output.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import MYSQL_HOST, MYSQL_PORT, PG_DSN, ROOT, Databases, wait_until, write_config
from lifeline import tied_to_this_process
from test_cli import assert_no_traceback, config_error, run_cli

from warpd.config import load_config
from warpd.connectors.registry import source_factory
from warpd.errors import ConfigError

EXAMPLES = Path(ROOT) / "etc" / "cartridge-warp"
SRC = f"mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}"
HEAD = f'source: {{connection_string: "{SRC}"}}\ndestination: {{connection_string: "{PG_DSN}"}}\n'


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _one_problem(result: subprocess.CompletedProcess) -> str:
    """The single problem line of a configuration error (exit 2, no traceback)."""
    err = config_error(result)
    lines = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert len(lines) == 1, err
    return lines[0]


def _bomb() -> str:
    text = HEAD + "schemas: [{name: a}]\n"
    text += 'global_table_whitelist: &a ["l","l","l","l","l","l","l","l","l"]\n'
    previous = "a"
    for anchor in "bcdefghi":
        text += f"x{anchor}: &{anchor} [" + ",".join([f"*{previous}"] * 9) + "]\n"
        previous = anchor
    return text


def _json_schema_entry(raw: str) -> str:
    """A JSON configuration whose schema entry holds *raw* JSON text (which json.dumps could not write)."""
    text = json.dumps({"source": {"connection_string": SRC}, "destination": {"connection_string": PG_DSN}})
    return text[:-1] + ', "schemas": [{"name": "a", ' + raw + "}]}"


# ---------------------------------------------------------------------------
# item 24: every hostile file exits 2 with one line, at once

HOSTILE_FILES = {
    "int-5000-digits.yaml": (
        HEAD + "schemas: [{name: a, batch_size: " + "9" * 5000 + "}]\n",
        "more than 30 digits",
    ),
    "int-5000-digits.json": (_json_schema_entry('"batch_size": ' + "9" * 5000), "more than 30 digits"),
    "nested-1000.yaml": (
        HEAD + "schemas: [{name: a}]\nglobal_table_whitelist: " + "[" * 1000 + "]" * 1000 + "\n",
        "nested more than 32 levels",
    ),
    "nested-1000.json": ('{"global_table_whitelist": ' + "[" * 1000 + "]" * 1000 + "}", "nested"),
    "recursive-alias.yaml": (
        HEAD + "schemas: [{name: a}]\nglobal_table_whitelist: &a [*a]\n",
        "recursive alias",
    ),
    "alias-bomb.yaml": (_bomb(), "expands to more than 50,000 values"),
    "int-tag.yaml": (HEAD + "schemas: [{name: a, batch_size: !!int 'x'}]\n", "not an integer"),
    "float-tag.yaml": (HEAD + "schemas: [{name: a, max_batch_latency_ms: !!float 'abc'}]\n", "not a number"),
    "lone-surrogate.json": (
        _json_schema_entry('"table_whitelist": ["a\\ud800"]'),
        "schemas[0].table_whitelist[0]: holds an invalid character",
    ),
    "retry-forever.yaml": (
        HEAD + "schemas: [{name: a}]\nretry: {max_attempts: 18446744073709551616}\n",
        "retry.max_attempts: 18446744073709551616 is greater than the maximum of 1000",
    ),
    "nan.yaml": (
        HEAD + "schemas: [{name: a}]\nretry: {max_delay_seconds: .nan}\n",
        "retry.max_delay_seconds: nan is not a finite number",
    ),
    "huge.yaml": (HEAD + "schemas: [{name: a}]\n" + "# padding\n" * 120_000, "larger than 1024 KiB"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_file_is_a_configuration_error(tmp_path, name):
    text, expected = HOSTILE_FILES[name]
    path = _write(tmp_path, name, text)
    # the timeout only guards the suite: before the fix the alias bomb took 38-60 s and 440 MB
    line = _one_problem(run_cli("--validate-config", "--config", path, timeout=60))
    assert expected in line, line
    # start-up refuses it the same way, before creating any state
    state = tmp_path / "state"
    assert (
        _one_problem(run_cli("--config", path, "--schema", "a", "--state-dir", str(state), timeout=60))
        == line
    )
    assert not state.exists()


HOSTILE_ENV = {
    "CARTRIDGE_WARP_SCHEMAS__0__BATCH_SIZE": ("9" * 5000, "more than 30 digits"),
    "CARTRIDGE_WARP_SOURCE__SERVER_ID": ("9" * 5000, "source.server_id: must be an integer from 1 to"),
    "CARTRIDGE_WARP_RETRY__MAX_ATTEMPTS": ("18446744073709551616", "is greater than the maximum of 1000"),
    "CARTRIDGE_WARP_MAX_BATCH_LATENCY_MS": ("1" * 400, "is not a number"),
    "CARTRIDGE_WARP_SCHEMAS__0__DESTINATION_SCHEMA": ("bad\udcffbytes", "holds an invalid character"),
    "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": (
        "mysql://warp:Bad\udcffPassword@h/db",
        "source.connection_string: holds an invalid character",
    ),
    "CARTRIDGE_WARP_SCHEMAS__" + "9" * 5000 + "__NAME": ("x", "list index too large"),
}


@pytest.mark.parametrize("variable", sorted(HOSTILE_ENV), ids=lambda v: v[:45])
def test_hostile_environment_value_is_a_configuration_error(tmp_path, variable):
    value, expected = HOSTILE_ENV[variable]
    path = _write(tmp_path, "c.yaml", HEAD + "schemas: [{name: a}]\n")
    line = _one_problem(run_cli("--validate-config", "--config", path, env={variable: value}))
    assert expected in line, line


# ---------------------------------------------------------------------------
# item 14: one destination schema, one writer


@pytest.mark.parametrize(
    "schemas",
    [
        "[{name: a, destination_schema: shared}, {name: b, destination_schema: shared}]",
        "[{name: shop}, {name: b, destination_schema: shop}]",  # the default is the name
    ],
)
def test_two_schemas_writing_one_destination_schema_are_refused(tmp_path, schemas):
    path = _write(tmp_path, "c.yaml", HEAD + f"schemas: {schemas}\n")
    line = _one_problem(run_cli("--validate-config", "--config", path))
    assert "both write destination schema" in line and "own destination_schema" in line, line
    names = ("'a'", "'b'") if "shared" in schemas else ("'shop'", "'b'")
    assert all(name in line for name in names), line
    # warpd refuses to start it too
    err = config_error(run_cli("--mode", "multi", "--config", path, "--state-dir", str(tmp_path / "s")))
    assert "both write destination schema" in err


# ---------------------------------------------------------------------------
# item 23: one replica id per schema process


def test_shipped_example_gives_each_schema_its_own_server_id():
    config = load_config(str(EXAMPLES / "config.yaml"), environ={})
    make = source_factory("mysql")
    ids = [
        make(
            config.source.connection_string, s.source_database, s.name, s.source_options(config.source)
        ).server_id
        for s in config.schemas
    ]
    assert ids == [
        4201,
        4202,
        4203,
        4204,
    ]  # source.server_id is the base, schema i adds i (docs/configuration.md)
    # without server_id each schema derives its own from its name
    derived = load_config(None, environ={}, cli=_cli(SRC, schema="x"))
    one = make(SRC, "x", "x", derived.schemas[0].source_options(derived.source)).server_id
    assert one not in (0, 4201)


def _cli(source: str, schema: str | None = None):
    from warpd.config import CliOverrides

    return CliOverrides(source=source, destination=PG_DSN, schema=schema)


def test_server_id_past_the_range_for_its_schemas_is_refused(tmp_path):
    text = HEAD.replace('"}\n', '", server_id: 4294967295}\n', 1) + "schemas: [{name: a}, {name: b}]\n"
    line = _one_problem(run_cli("--validate-config", "--config", _write(tmp_path, "c.yaml", text)))
    assert line.startswith("source.server_id: must be an integer from 1 to 4,294,967,294"), line


# ---------------------------------------------------------------------------
# item 25: validation checks what start-up checks


@pytest.mark.parametrize(
    ("option", "uri", "expected"),
    [
        # the "port" of mysql://warp:secret (no @HOST) is the password: the URI is never echoed
        ("--source", "mysql://h:abc", "source.connection_string: the port is not a number"),
        ("--source", "mysql://warp:Pw4NoHost99", "source.connection_string: the port is not a number"),
        ("--source", "mysql://h:99999/db", "the port is out of range"),
        ("--source", "mysql://", "names no host"),
        ("--source", "mongodb://h:99999/db", "pymongo cannot parse it (Port must be an integer"),
        ("--source", "mongodb://", "pymongo cannot parse it"),
        (
            "--destination",
            "postgresql://h:99999/db",
            "destination.connection_string: the port is out of range",
        ),
        (
            "--destination",
            "postgresql://u:s3cr%zzet@h/db",
            "libpq cannot parse it (invalid percent-encoded token)",
        ),
        # libpq refuses these values before connecting; start-up used to retry them as an outage
        ("--destination", "postgresql://h/db?sslmode=bogus", "sslmode: 'bogus' is not one of disable, allow"),
        (
            "--destination",
            "postgresql://h/db?target_session_attrs=any2",
            "target_session_attrs: 'any2' is not",
        ),
        ("--destination", "postgresql://h/db?gssencmode=on", "gssencmode: 'on' is not one of"),
        ("--destination", "postgresql://h/db?channel_binding=yes", "channel_binding: 'yes' is not one of"),
        (
            "--destination",
            "mysql://warp@h:99999/",
            "destination.connection_string: the port is out of range",
        ),
        ("--destination", "mongodb://h/db", "destination.type: no destination connector 'mongodb'"),
    ],
)
def test_validate_config_refuses_what_start_up_refuses(tmp_path, option, uri, expected):
    base = {"--source": f"{SRC}/db", "--destination": PG_DSN}
    base[option] = uri
    args = ["--source", base["--source"], "--destination", base["--destination"], "--schema", "db"]
    line = _one_problem(run_cli(*args, "--validate-config"))
    assert expected in line, line
    assert "zzet" not in line and "Pw4NoHost99" not in line
    state = tmp_path / "state"
    assert _one_problem(run_cli(*args, "--state-dir", str(state))) == line
    assert not state.exists()


# ---------------------------------------------------------------------------
# item 17: the metrics directory never eats the state


def test_metrics_dir_on_the_state_dir_is_refused_and_state_survives(tmp_path):
    from warpd.state.store import StateStore

    state = tmp_path / "state"
    StateStore(str(state)).close()
    path = _write(
        tmp_path, "c.yaml", HEAD + "schemas: [{name: a}]\nmonitoring: {prometheus: {enabled: true}}\n"
    )
    for directory in (state, tmp_path):  # the state directory itself, or a parent of it
        result = run_cli(
            "--config",
            path,
            "--schema",
            "a",
            "--state-dir",
            str(state),
            env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
        )
        line = _one_problem(result)
        assert line.startswith("PROMETHEUS_MULTIPROC_DIR: "), line
        assert (state / "state.db").exists()


def test_metrics_setup_deletes_only_prometheus_files(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    theirs = ["counter_12.db", "gauge_livemax_12.db", "histogram_7.db"]
    others = ["keep.db", "state.db-backup.db", "notes.txt"]
    for name in theirs + others:
        (metrics_dir / name).write_bytes(b"x")
    code = "from warpd import metrics; metrics.setup(None)"
    env = {**os.environ, "PYTHONPATH": ROOT, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
    assert sorted(os.listdir(metrics_dir)) == sorted(others)
    # a directory holding a state file is refused outright
    (metrics_dir / "state.db").write_bytes(b"")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "is (or contains) a state directory" in result.stderr
    assert (metrics_dir / "keep.db").exists()


# ---------------------------------------------------------------------------
# item 15: who may read the state


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run_until_store_exists(tmp_path: Path, state: Path) -> subprocess.CompletedProcess:
    # the database does not exist: the store is created, then the source check fails (exit 1)
    missing = f"{SRC}/warp_t_missing_{uuid.uuid4().hex[:8]}"
    return run_cli("--source", missing, "--destination", PG_DSN, "--schema", "s", "--state-dir", str(state))


def test_state_dir_and_files_are_private(tmp_path):
    state = tmp_path / "new" / "state"
    old = os.umask(0o022)
    try:
        result = _run_until_store_exists(tmp_path, state)
    finally:
        os.umask(old)
    assert result.returncode == 1, result.stderr
    assert _mode(state) == 0o700
    files = [state / f"state.db{suffix}" for suffix in ("", "-wal", "-shm")]
    assert files[0].exists()
    for f in files:
        if f.exists():
            assert _mode(f) == 0o600, (f, oct(_mode(f)))


def test_existing_world_readable_state_is_tightened_with_a_warning(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    (state / "state.db").write_bytes(b"")
    os.chmod(state / "state.db", 0o644)
    result = _run_until_store_exists(tmp_path, state)
    assert result.returncode == 1, result.stderr
    assert "is open to every user (mode 0755)" in result.stderr and "chmod o-rwx" in result.stderr
    assert _mode(state / "state.db") == 0o640  # the directory grants its group access: 0640, never world


# ---------------------------------------------------------------------------
# items 15 and 26: passwords with every URI-special character, through every surface

SPECIALS = ["@", ":", "/", "?", "#", "[", "]", "%", " ", "\n", "+", "&", "=", "'", '"', "\\", "é", "€", "日"]


def _password(i: int, char: str) -> tuple[str, list[str]]:
    """A password around *char*, and the fragments that must never show (each distinctive)."""
    parts = [f"Qz{i:02d}Hx", f"Kp{i:02d}Lv", f"Wm{i:02d}Jr"]
    return char.join(parts[:2]) + char + char + parts[2], parts


@pytest.fixture(scope="module")
def source_db():
    d = Databases(f"warp_t_{uuid.uuid4().hex[:10]}")
    try:
        yield d
    finally:
        d.drop()


@pytest.fixture(scope="module")
def mongo_server():
    from tests.mongo_wire import MongoTestServer

    server = MongoTestServer().start()
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leaks(text: str, password: str, fragments: list[str]) -> list[str]:
    forms = {password, quote(password, safe=""), repr(password)[1:-1], *fragments}
    return [form for form in forms if form in text]


def _files_text(directory: Path) -> str:
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            out.append((Path(root) / name).read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def _uri(scheme: str, password: str, encode: bool, source_db: Databases, mongo_server) -> tuple[str, str]:
    secret = quote(password, safe="") if encode else password
    if scheme == "mysql":  # wrong password for a real user: access denied
        return "--source", f"mysql://warp:{secret}@{MYSQL_HOST}:{MYSQL_PORT}/{source_db.name}"
    if scheme == "postgresql":  # no such role: the server refuses the connection
        return "--destination", f"postgresql://warp_nobody:{secret}@127.0.0.1:5432/warp_test"
    host = mongo_server.uri.split("://", 1)[1]  # the test server has no users: authentication fails
    return (
        "--source",
        f"mongodb://warp:{secret}@{host.split('/')[0]}/{source_db.name}?serverSelectionTimeoutMS=3000",
    )


def _surfaces(
    common: list[str], runs: list[list[str]], state: Path | None, codes: set[int]
) -> tuple[list[str], list[int]]:
    """The output of each run that happens (a run refused with exit 2 ends the list), then the state
    directory's files (status file, metrics files, state.db) and ``warpctl status``."""
    outputs, returncodes = [], []
    for extra in runs:
        result = run_cli(*common, *extra, "--log-level", "DEBUG")
        outputs.append(result.stdout + result.stderr)
        assert_no_traceback(outputs[-1])
        assert result.returncode in (0, 1, 2), outputs[-1]
        returncodes.append(result.returncode)
        if result.returncode == 2:
            break  # refused before connecting: start-up refuses it the same way (tests above)
    codes.update(returncodes)
    if state is not None and state.exists():
        outputs.append(_files_text(state))
        status = subprocess.run(
            [sys.executable, "-m", "warpd.supervisor.warpctl", "--state-dir", str(state), "status"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
            cwd=ROOT,
        )
        outputs.append(status.stdout + status.stderr)
    return outputs, returncodes


@pytest.mark.parametrize("scheme", ["mysql", "postgresql", "mongodb"])
def test_special_character_passwords_never_show(tmp_path, scheme, source_db, mongo_server):
    """Each special character as written (unescaped) in a URI: --validate-config, then start-up when it
    is accepted; and one password holding every one of them, percent-encoded, through --validate-config,
    --dry-run and a real failed connection (driver exceptions and log lines), the state directory's files
    (status, metrics, state.db) and warpctl status."""
    config = write_config(
        tmp_path,
        f"retry: {{max_attempts: 1}}\nmonitoring: {{prometheus: {{enabled: true, port: {_free_port()}}}}}\n",
    )
    codes: set[int] = set()
    cases = [(_password(i, char), False, [char]) for i, char in enumerate(SPECIALS)]
    every = "".join(f"Ev{i:02d}Zy{char}" for i, char in enumerate(SPECIALS))
    cases.append(((every, [f"Ev{i:02d}Zy" for i in range(len(SPECIALS))]), True, SPECIALS))
    for n, ((password, fragments), encode, chars) in enumerate(cases):
        option, uri = _uri(scheme, password, encode, source_db, mongo_server)
        args = {"--source": source_db.source_uri, "--destination": source_db.dest_uri, option: uri}
        common = [
            "--source",
            args["--source"],
            "--destination",
            args["--destination"],
            "--schema",
            source_db.name,
        ]
        state = tmp_path / f"state-{n}"
        start = ["--config", config, "--state-dir", str(state)]
        runs = [["--validate-config"], ["--dry-run"], start] if encode else [["--validate-config"], start]
        outputs, returncodes = _surfaces(common, runs, state, codes)
        text = "\n".join(outputs)
        assert not _leaks(text, password, fragments), (chars, _leaks(text, password, fragments), text)
        if returncodes[0] == 0:
            assert "***" in outputs[0], outputs[0]  # --validate-config shows the URIs, redacted
        if encode:
            # an encoded password is a valid URI: the runs got as far as a real connection and failed there
            assert returncodes[0] == 0 and returncodes[-1] == 1, (
                returncodes,
                text,
            )  # the dry run may not connect
            assert "access denied" in text.lower() or "warp_nobody" in text or "log in" in text, text
    assert 1 in codes and 2 in codes  # refused and failed-connection paths were both exercised


def test_password_on_the_command_line_is_hidden_from_proc_cmdline(tmp_path):
    dbs = Databases(f"warp_t_{uuid.uuid4().hex[:10]}")
    secret = "Pw4ProcCmdline Zx9@end"
    # the local PostgreSQL trusts loopback, so any password connects and the process keeps streaming
    destination = f"postgresql://warp:{quote(secret, safe='')}@127.0.0.1:5432/warp_test"
    log_path = tmp_path / "out.log"
    cmd = [sys.executable, "-m", "warpd", "--source", dbs.source_uri, "--destination", destination]
    cmd += ["--schema", dbs.name, "--state-dir", str(tmp_path / "state")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARTRIDGE_WARP_")}
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                tied_to_this_process(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, "PYTHONPATH": ROOT},
                cwd=ROOT,
            )
            try:
                wait_until(
                    lambda: "streaming changes from" in log_path.read_text() or proc.poll() is not None,
                    90,
                    "streaming",
                )
                assert proc.poll() is None, log_path.read_text()
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode("utf-8", "replace")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    finally:
        dbs.drop()
    output = log_path.read_text()
    for form in (secret, quote(secret, safe=""), "Pw4ProcCmdline"):
        assert form not in cmdline, cmdline
        assert form not in output, output
    assert "--destination carries a password" in output
    assert "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING" in output


def test_loader_refuses_a_password_the_parser_would_split(tmp_path):
    # libpq ends the user info at the first "@": the rest of the password would become the host name
    from warpd.config import CliOverrides

    cli = CliOverrides(
        source=SRC + "/db", destination="postgresql://warp:Pa55@word99@127.0.0.1/warp_test", schema="db"
    )
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={}, cli=cli)
    assert "its host part holds an '@'" in str(err.value) and "word99" not in str(err.value)


def test_redact_the_cases_the_issue_reproduced():
    from warpd.redact import redact

    # a raw "@" in a password (Python's and MySQL's parsers accept it): everything up to the last "@"
    assert redact("mysql://warp:p@ssw0rd@h:3306/db") == "mysql://warp:***@h:3306/db"
    # libpq quotes the token it could not decode
    assert "s3cr" not in redact('invalid dsn: invalid percent-encoded token: "s3cr%zzet"')


def test_command_line_password_is_gone_before_anything_is_read(tmp_path):
    """The retitle comes first: a process blocked opening its configuration (a FIFO nobody writes yet)
    already shows a redacted command line; before the fix it still showed the password there."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    secret = "Pw4FirstThing Zx9"
    source = f"mysql://warp:{quote(secret, safe='')}@{MYSQL_HOST}:{MYSQL_PORT}/db"
    cmd = [sys.executable, "-m", "warpd", "--source", source, "--destination", PG_DSN, "--schema", "db"]
    cmd += ["--config", str(fifo), "--validate-config"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": ROOT},
        cwd=ROOT,
    )
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    try:
        wait_until(
            lambda: cmdline.read_bytes().startswith(b"cartridge-warp"), 30, "the process to retitle itself"
        )
        shown = cmdline.read_bytes().decode("utf-8", "replace")
        assert proc.poll() is None  # still waiting for its configuration: nothing was read yet
    finally:
        with open(fifo, "w") as writer:  # let it go on: an empty file is a valid (empty) configuration
            writer.write("")
        output = proc.communicate(timeout=60)[0].decode()
    for form in (secret, quote(secret, safe=""), "Pw4FirstThing"):
        assert form not in shown, shown
    assert "mysql://warp:***@" in shown
    assert proc.returncode == 0, output
    assert "--source carries a password" in output and "Pw4FirstThing" not in output

"""The ``cartridge-warp`` command as an operator meets it: exit codes, messages, plans and progress.

Every test runs the real process; the ones that need databases use the real
local MariaDB and PostgreSQL through the ``dbs`` and ``warp`` fixtures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import MYSQL_HOST, MYSQL_PORT, ROOT, Warp, converged, mysql_root, wait_until, write_config
from lifeline import tied_to_this_process

EXAMPLES = Path(ROOT) / "etc" / "cartridge-warp"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``cartridge-warp`` to completion and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CARTRIDGE_WARP_")}
    full_env.update({"PYTHONPATH": ROOT, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "warpd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert 'File "' not in text, text


def config_error(result: subprocess.CompletedProcess) -> str:
    """Check a configuration error's shape (exit 2, on stderr, no traceback) and return stderr."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert_no_traceback(result.stdout + result.stderr)
    assert "invalid configuration" in result.stderr, result.stderr
    return result.stderr


VALID = """\
source:
  connection_string: "mysql://warp:warp@127.0.0.1:3306/shop"
destination:
  connection_string: "postgresql://warp:warp@127.0.0.1:5432/warp_test"
schemas:
  - name: shop
    tables:
      - name: orders
        batch_size: 100
      - name: customers
        batch_size: {batch_size}
"""


# ---------------------------------------------------------------------------
# 1. configuration errors


def test_batch_size_below_minimum_names_path_and_problem(tmp_path):
    path = write_config(tmp_path, VALID.format(batch_size=0))
    err = config_error(run_cli("--config", path, "--state-dir", str(tmp_path / "state")))
    assert "schemas[0].tables[1].batch_size: 0 is less than the minimum of 1" in err
    assert not (tmp_path / "state").exists(), "an invalid configuration must not create the state directory"


def test_validate_config_reports_the_same_error(tmp_path):
    path = write_config(tmp_path, VALID.format(batch_size=0))
    err = config_error(run_cli("--config", path, "--validate-config"))
    assert "schemas[0].tables[1].batch_size: 0 is less than the minimum of 1" in err


def test_unknown_key_is_named(tmp_path):
    path = write_config(tmp_path, VALID.format(batch_size=10) + "bogus_option: 1\n")
    err = config_error(run_cli("--config", path, "--state-dir", str(tmp_path / "state")))
    assert "bogus_option" in err
    assert "unknown key" in err


def test_misspelt_nested_key_is_named_with_its_path(tmp_path):
    text = VALID.format(batch_size=10).replace("batch_size: 100", "batch_sise: 100")
    err = config_error(run_cli("--config", write_config(tmp_path, text), "--validate-config"))
    assert "schemas[0].tables[0].batch_sise" in err
    assert "batch_size" in err  # the suggestion


def test_missing_file_is_named(tmp_path):
    missing = str(tmp_path / "does-not-exist.yaml")
    err = config_error(run_cli("--config", missing, "--state-dir", str(tmp_path / "state")))
    assert missing in err
    assert "No such file" in err or "cannot read" in err


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "source:\n  connection_string: [unclosed\nschemas: []\n")
    err = config_error(run_cli("--config", path, "--state-dir", str(tmp_path / "state")))
    assert path in err
    assert "YAML" in err
    assert re.search(r"line \d+", err), err


def test_bad_environment_override_names_the_variable(tmp_path):
    result = run_cli(
        "--source",
        "mysql://warp:warp@127.0.0.1:3306/shop",
        "--destination",
        "postgresql://warp:warp@127.0.0.1:5432/warp_test",
        "--schema",
        "shop",
        "--state-dir",
        str(tmp_path / "state"),
        env={"CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS": "abc"},
    )
    err = config_error(result)
    assert "CARTRIDGE_WARP_GLOBAL_MAX_PARALLEL_STREAMS" in err
    assert "abc" in err
    assert "integer" in err


# ---------------------------------------------------------------------------
# 2. passwords never appear in any output


SRC_PASSWORD = "Src!Pw7q2Zk"  # '!' travels percent-encoded in the URI
DST_PASSWORD = "DstPw9xW4mQ"


@pytest.fixture
def password_user(dbs):
    """A throwaway MariaDB user whose password is distinctive (dropped afterwards)."""
    user = f"warp_pw_{uuid.uuid4().hex[:8]}"
    conn = mysql_root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (SRC_PASSWORD,))
            cur.execute(
                f"GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* "
                f"TO '{user}'@'%'"
            )
            cur.execute(f"GRANT ALL ON `{dbs.name}`.* TO '{user}'@'%'")
        yield user
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.close()


def _assert_no_password(text: str) -> None:
    for secret in (SRC_PASSWORD, quote(SRC_PASSWORD, safe=""), DST_PASSWORD):
        assert secret not in text, f"password {secret!r} leaked:\n{text}"


def test_passwords_never_appear_in_any_output(dbs, warp, password_user, tmp_path):
    dbs.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40))")
    dbs.many("INSERT INTO items VALUES (%s, %s)", [(i, f"item {i}") for i in range(1, 201)])
    src = f"mysql://{password_user}:{quote(SRC_PASSWORD, safe='')}@{MYSQL_HOST}:{MYSQL_PORT}/{dbs.name}"
    dst = f"postgresql://warp:{DST_PASSWORD}@127.0.0.1:5432/warp_test"  # local PostgreSQL trusts loopback
    uris = ["--source", src, "--destination", dst]
    state = str(tmp_path / "pw-state")
    outputs: list[str] = []

    def check(result: subprocess.CompletedProcess, rc: int) -> None:
        text = result.stdout + result.stderr
        outputs.append(text)
        assert result.returncode == rc, (result.returncode, text)
        assert_no_traceback(text)

    base = ["--schema", dbs.name, "--state-dir", state]
    # succeeding: validation and dry run print the (redacted) URIs
    check(run_cli(*uris, *base, "--validate-config"), 0)
    check(run_cli(*uris, *base, "--dry-run", "--log-level", "DEBUG"), 0)
    # the same through the environment
    check(
        run_cli(
            *base,
            "--dry-run",
            env={
                "CARTRIDGE_WARP_SOURCE__CONNECTION_STRING": src,
                "CARTRIDGE_WARP_DESTINATION__CONNECTION_STRING": dst,
            },
        ),
        0,
    )
    # failing: bad configuration holding the URIs
    bad = write_config(
        tmp_path,
        f'source: {{connection_string: "{src}"}}\n'
        f'destination: {{connection_string: "{dst}"}}\n'
        f"schemas: [{{name: {dbs.name}, batch_size: 0}}]\nnonsense: 1\n",
    )
    check(run_cli("--config", bad, "--state-dir", state), 2)
    # failing: a source URI that is not a MySQL one, a bad port
    check(run_cli("--source", src.replace("mysql://", "mysqlx://"), "--destination", dst, *base), 2)
    check(run_cli("--source", src.replace(f":{MYSQL_PORT}/", ":99999/"), "--destination", dst, *base), 2)
    # failing: wrong source password (the correct one still must not show) and unreachable destination
    wrong = src.replace(quote(SRC_PASSWORD, safe=""), "Nope" + quote(SRC_PASSWORD, safe=""))
    check(run_cli("--source", wrong, "--destination", dst, *base, "--log-level", "DEBUG"), 1)
    fast_fail = write_config(tmp_path, "retry: {max_attempts: 2, initial_delay_seconds: 0.1}\n")
    unreachable = dst.replace(":5432/", ":1/")
    check(
        run_cli(
            "--source",
            src,
            "--destination",
            unreachable,
            *base,
            "--config",
            fast_fail,
            "--log-level",
            "DEBUG",
        ),
        1,
    )
    # succeeding: a real run (snapshot, streaming, clean stop) with DEBUG logging
    w = warp(extra=[*uris, "--log-level", "DEBUG"])
    wait_until(lambda: "streaming changes from" in w.output or not w.alive(), 90, "streaming to start")
    dbs.sql("INSERT INTO items VALUES (1000, 'late')")
    wait_until(lambda: not converged(dbs), 60, "the insert to arrive")
    assert w.stop(signal.SIGTERM) == 0, w.output
    outputs.append(w.output)
    assert "***" in "".join(outputs)
    _assert_no_password("\n".join(outputs))


# ---------------------------------------------------------------------------
# 3. dry run


def _pg_schema_exists(dbs) -> bool:
    return bool(dbs.pg_rows("SELECT 1 FROM pg_namespace WHERE nspname = %s", (dbs.name,)))


@pytest.mark.parametrize("how", ["flag", "env"])
def test_dry_run_prints_the_plan_and_writes_nothing(dbs, warp, tmp_path, how):
    dbs.sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, customer VARCHAR(40) NOT NULL, total DECIMAL(10,2))")
    dbs.sql(
        "CREATE TABLE order_items (order_id BIGINT, line_no INT, sku VARCHAR(20), "
        "PRIMARY KEY (order_id, line_no))"
    )
    dbs.many("INSERT INTO orders VALUES (%s, %s, %s)", [(i, f"c{i}", i * 1.5) for i in range(1, 51)])
    config = write_config(
        tmp_path,
        f"global_max_parallel_streams: 3\nschemas:\n  - name: {dbs.name}\n"
        "    tables:\n      - name: orders\n        batch_size: 777\n",
    )
    extra = ["--dry-run"] if how == "flag" else []
    env = {"CARTRIDGE_WARP_DRY_RUN": "true"} if how == "env" else {}
    w = warp(config=config, extra=extra, env=env)
    assert w.wait(90) == 0, w.output
    out = w.output
    assert_no_traceback(out)
    assert "nothing will be written" in out.lower()
    assert re.search(r"table orders\b", out) and re.search(r"table order_items\b", out), out
    assert "key: id;" in out
    assert "key: order_id, line_no;" in out
    assert "max_parallel_streams=3" in out
    assert "batch_size=777" in out
    assert "batch_size=5000" in out  # order_items: the built-in default
    # what the destination declared, and the bulk format negotiated with the source
    assert "destination PostgreSQL: names up to 63 bytes" in out, out
    assert "rows of an initial copy encoded by the source server (postgresql-copy-text)" in out, out
    assert f'CREATE TABLE IF NOT EXISTS "{dbs.name}"."orders"' in out
    assert f'CREATE TABLE IF NOT EXISTS "{dbs.name}"."order_items"' in out
    assert not _pg_schema_exists(dbs), "a dry run created the PostgreSQL schema"
    state_dir = os.path.dirname(w.log_path)
    assert not os.path.exists(os.path.join(state_dir, "state.db")), os.listdir(state_dir)


def test_dry_run_of_a_batch_schema_shows_its_schedule_and_each_tables_sync(dbs, warp, tmp_path):
    dbs.sql("CREATE TABLE orders (id BIGINT PRIMARY KEY, changed DATETIME(6) NOT NULL)")
    dbs.sql("CREATE TABLE ref (code VARCHAR(5) PRIMARY KEY)")
    config = write_config(
        tmp_path,
        f"schemas:\n  - name: {dbs.name}\n    mode: batch\n    schedule: {{every: 15m}}\n"
        "    tables:\n      - name: orders\n        cursor_column: changed\n        safety_lag: 2m\n",
    )
    w = warp(config=config, extra=["--dry-run"])
    assert w.wait(90) == 0, w.output
    out = w.output
    assert "batch mode: every 15m" in out
    assert "batch: incremental by changed, safety_lag 120s, delete_detection none" in out
    assert "batch: full refresh" in out
    assert not _pg_schema_exists(dbs), "a dry run created the PostgreSQL schema"


# ---------------------------------------------------------------------------
# 4. shipped examples


def _mysql_examples() -> list[Path]:
    found = [
        p
        for p in sorted(EXAMPLES.iterdir())
        if p.suffix in (".yaml", ".yml", ".json") and "mysql" in p.read_text(encoding="utf-8")
    ]
    assert found, f"no MySQL example in {EXAMPLES}"
    return found


@pytest.mark.parametrize("example", _mysql_examples(), ids=lambda p: p.name)
def test_validate_config_accepts_shipped_examples(example):
    result = run_cli("--validate-config", "--config", str(example))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert_no_traceback(result.stdout + result.stderr)
    assert "valid" in result.stdout


def test_validate_config_of_one_schema_of_a_shipped_example():
    result = run_cli("--validate-config", "--config", str(EXAMPLES / "config.yaml"), "--schema", "billing")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "billing" in result.stdout


# ---------------------------------------------------------------------------
# 5. progress when not on a terminal


def test_snapshot_progress_is_logged_when_output_is_a_file(dbs, warp, tmp_path):
    dbs.sql("CREATE TABLE events (id INT PRIMARY KEY, kind VARCHAR(10), payload VARCHAR(100))")
    dbs.sql("INSERT INTO events SELECT seq, 'k', REPEAT('x', 50) FROM seq_1_to_3000")
    dbs.sql("CREATE TABLE tags (id INT PRIMARY KEY, tag VARCHAR(10))")
    dbs.sql("INSERT INTO tags SELECT seq, CONCAT('t', seq) FROM seq_1_to_1500")
    w = warp(config=write_config(tmp_path, "snapshot_chunk_size: 500\n"))
    wait_until(lambda: "streaming changes from" in w.output or not w.alive(), 90, "the snapshot to finish")
    assert w.stop() == 0, w.output
    out = w.output
    assert re.search(rf"snapshot {dbs.name}\.events: done, 3,?000 rows", out), out
    assert re.search(rf"snapshot {dbs.name}\.tags: done, 1,?500 rows", out), out
    assert "\r" not in out and "\x1b[" not in out, "terminal control codes in a log file"
    assert converged(dbs) == []


def test_snapshot_progress_is_a_live_line_on_a_terminal(dbs, tmp_path):
    """On a TTY the snapshot redraws one line per table with rows, percentage, rate and ETA."""
    import pty
    import select

    dbs.sql("CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(100))")
    dbs.sql("INSERT INTO big SELECT seq, REPEAT('x', 80) FROM seq_1_to_60000")
    cfg = write_config(tmp_path, "snapshot_chunk_size: 2000\n")
    primary, secondary = pty.openpty()
    os.makedirs(tmp_path / "state", exist_ok=True)
    w = Warp(dbs, str(tmp_path / "state"), cfg, [], {})  # only its command line: the output goes to the pty
    proc = subprocess.Popen(
        tied_to_this_process(w.cmd), stdin=secondary, stdout=secondary, stderr=secondary, cwd=ROOT, env=w.env
    )
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 120
        while b"streaming changes from" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        os.close(primary)
    text = screen.decode("utf-8", "replace")
    live = re.findall(
        rf"\r\x1b\[Ksnapshot {dbs.name}\.big: ([\d,]+)/~[\d,]+ rows +[\d.]+% [\d,]+ rows/s ETA "
        rf"(\d+:\d\d:\d\d|\?)",
        text,
    )
    assert live, text[-3000:]
    assert re.search(rf"snapshot {dbs.name}\.big: done, 60,000 rows", text), text[-3000:]


# ---------------------------------------------------------------------------
# 6. and 7. modes and usage


def test_mode_multi_is_the_supervisor(tmp_path):
    # the daemon itself runs in test_daemon.py; here: it validates like warpd and refuses --schema
    result = run_cli("--mode", "multi", "--config", str(EXAMPLES / "config.yaml"), "--validate-config")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "4 schema(s) (shop, billing, catalog, reports)" in result.stdout
    result = run_cli("--mode", "multi", "--config", str(EXAMPLES / "config.yaml"), "--schema", "shop")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert_no_traceback(result.stdout + result.stderr)
    assert "--schema: single mode only" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--mode", "bogus"], ["--no-such-option"], ["--mode"]],
    ids=["bad-mode", "unknown-option", "missing-value"],
)
def test_usage_errors_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage:" in result.stderr
    assert_no_traceback(result.stderr)


def test_single_mode_without_schema_on_a_multi_schema_file_exits_2(tmp_path):
    result = run_cli("--config", str(EXAMPLES / "config.yaml"), "--state-dir", str(tmp_path / "s"))
    err = config_error(result)
    assert "--schema" in err and "shop" in err and "billing" in err


def test_a_connector_plugin_that_fails_to_load_is_named_in_the_error(tmp_path: Path) -> None:
    """An installed plugin whose import fails is reported with the reason, not silently missing."""
    site = tmp_path / "site"
    (site / "warp_broken_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "warp_broken_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: warp-broken-plugin\nVersion: 1.0\n"
    )
    (site / "warp_broken_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[warpd.connectors]\nsnowflake = warp_broken_plugin\n"
    )
    (site / "warp_broken_plugin.py").write_text(
        "raise ImportError('the snowflake driver is not installed: pip install snowflake-connector')\n"
    )
    config = write_config(
        tmp_path,
        VALID.format(batch_size=10).replace(
            '  connection_string: "postgresql://warp:warp@127.0.0.1:5432/warp_test"',
            '  type: snowflake\n  connection_string: "snowflake://acct/db"',
        ),
    )
    err = config_error(run_cli("--config", config, "--validate-config", env={"PYTHONPATH": f"{ROOT}:{site}"}))
    assert "no destination connector 'snowflake'" in err
    assert "snowflake = warp_broken_plugin failed to load" in err
    assert "pip install snowflake-connector" in err

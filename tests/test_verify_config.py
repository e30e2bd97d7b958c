"""``verify: {every: ..., repair: ...}`` (docs/verify.md, docs/configuration.md): resolution and the
refusals ``--validate-config`` (and start-up, and a reload) print with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from warpd.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {
    "source": {"connection_string": "mysql://u@127.0.0.1:3306/shop"},
    "destination": {"connection_string": "postgresql://u@127.0.0.1:5432/dw"},
}


def write(tmp_path: Any, **top: Any) -> str:
    path = os.path.join(str(tmp_path), "config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({**BASE, **top}, f)
    return path


def validate(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpd", "--config", path, "--validate-config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        check=False,
    )  # fmt: skip


def test_a_schemas_keys_win_over_the_top_levels_key_by_key(tmp_path: Any) -> None:
    path = write(
        tmp_path,
        verify={"every": "24h", "repair": True},
        schemas=[
            {"name": "a"},
            {"name": "b", "verify": {"every": "2s"}},
            {"name": "c", "verify": {"repair": False}},
            {"name": "d", "mode": "batch", "schedule": {"every": "1h"}},
        ],
    )
    config = load_config(path)
    got = {s.name: (s.verify.every, s.verify.repair) if s.verify else None for s in config.schemas}
    assert got == {"a": (86400.0, True), "b": (2.0, True), "c": (86400.0, False), "d": None}
    assert load_config(write(tmp_path, schemas=[{"name": "a"}])).schemas[0].verify is None


@pytest.mark.parametrize(
    ("top", "schema", "message"),
    [
        ({}, {"every": 0}, "schemas[0].verify.every: must be longer than 0"),
        ({"every": "0s"}, None, "verify.every: must be longer than 0"),
        ({}, {"every": "soon"}, "schemas[0].verify.every: 'soon' is not valid"),
        ({}, {"every": "1h", "when": "now"}, "when"),
        ({}, {"repair": True}, "schemas[0].verify: says how to verify but not how often: add every"),
        ({}, {"every": "1h", "repair": "yes"}, "schemas[0].verify.repair"),
    ],
)
def test_bad_verify_values_exit_2_with_the_path(tmp_path: Any, top: Any, schema: Any, message: str) -> None:
    entry: dict[str, Any] = {"name": "shop"}
    if schema is not None:
        entry["verify"] = schema
    path = write(tmp_path, schemas=[entry], **({"verify": top} if top else {}))
    run = validate(path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_batch_schemas_verify_is_refused(tmp_path: Any) -> None:
    schema = {"name": "shop", "mode": "batch", "schedule": {"every": "1h"}, "verify": {"every": "24h"}}
    run = validate(write(tmp_path, schemas=[schema]))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "schemas[0].verify: a scheduled verify runs beside a stream" in run.stderr

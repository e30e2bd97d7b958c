"""What the benchmarks against the local BigQuery emulator share: its client, its version and pid (for its
CPU time), and the BigQuery drivers' versions for the report header.

Imported as ``bq_common`` by the scripts beside it; it imports ``common`` first, which puts this
checkout's ``warpd/`` first on ``sys.path``.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from common import ROOT, package_version

PROJECT = "warp"  # the emulator's project (scripts/setup-bigquery-emulator.sh)
DEFAULT_ENDPOINT = "http://127.0.0.1:9050"


def emulator_pid(endpoint: str) -> int | None:
    """The emulator's pid from the set-up script's pid file (scripts/setup-bigquery-emulator.sh)."""
    port = endpoint.rstrip("/").rsplit(":", 1)[-1]
    homes = [os.environ.get("WARP_BQ_EMULATOR_HOME", "")]
    homes += ["/var/lib/cartridge-warp-bq-emulator"]
    homes += [
        os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cartridge-warp-bq-emulator"
        )
    ]
    for home in filter(None, homes):
        for path in glob.glob(os.path.join(home, f"emulator-{port}.pid")):
            try:
                with open(path, encoding="ascii") as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"emulator" in f.read():
                        return pid
            except (OSError, ValueError):
                continue
    return None


def emulator_version() -> str:
    pins = {}
    try:
        with open(os.path.join(ROOT, "scripts", "bigquery-emulator-requirements.txt"), encoding="utf-8") as f:
            for line in f:
                name, _, version = line.strip().partition("==")
                if name in ("local-bigquery", "duckdb"):
                    pins[name] = version
    except OSError:
        pass
    return f"local-bigquery {pins.get('local-bigquery', '?')} (DuckDB {pins.get('duckdb', '?')})"


def bq_client(endpoint: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def bigquery_drivers() -> str:
    return f"google-cloud-bigquery {package_version('google-cloud-bigquery')}, pyarrow {package_version('pyarrow')}"

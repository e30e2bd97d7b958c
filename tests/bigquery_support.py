"""The BigQuery back end for the tests: the local emulator, through the real client library.

``scripts/setup-bigquery-emulator.sh`` (run by ``make setup-db``, ``make test`` and ``.ci/run``)
installs the emulator and starts it on 127.0.0.1:9050, its Storage Read API (gRPC) on 127.0.0.1:9060.
``WARP_TEST_BIGQUERY_ENDPOINT`` (and ``WARP_TEST_BIGQUERY_READ_ENDPOINT``, its gRPC host:port) point the
tests at another one; ``WARP_TEST_BIGQUERY_PROJECT`` runs them against real BigQuery in that project
(Application Default Credentials).  An emulator that does not answer fails the test, with the command that starts
it: BigQuery coverage must not vanish quietly.  ``WARP_TEST_BIGQUERY=off`` skips the BigQuery tests
instead, on purpose.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

PROJECT = "warp"
DEFAULT_ENDPOINT = "http://127.0.0.1:9050"
DEFAULT_READ_ENDPOINT = "127.0.0.1:9060"


def real_project() -> str | None:
    """``WARP_TEST_BIGQUERY_PROJECT``: run the BigQuery tests against real BigQuery in this project
    (Application Default Credentials) instead of the emulator."""
    return os.environ.get("WARP_TEST_BIGQUERY_PROJECT") or None


def emulated() -> bool:
    return real_project() is None


def endpoint() -> str:
    """The emulator's base URL (no trailing slash)."""
    return os.environ.get("WARP_TEST_BIGQUERY_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def read_endpoint() -> str:
    """The emulator's Storage Read API, gRPC ``host:port`` (the ``read_api_endpoint`` of a source)."""
    return os.environ.get("WARP_TEST_BIGQUERY_READ_ENDPOINT", DEFAULT_READ_ENDPOINT)


def enabled() -> bool:
    return os.environ.get("WARP_TEST_BIGQUERY", "").strip().lower() != "off"


@functools.cache
def _unreachable(base: str) -> str | None:
    """Why the emulator at ``base`` cannot be used, or None when it answers like BigQuery."""
    url = f"{base}/bigquery/v2/projects/{PROJECT}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        return f"GET {url}: {exc}"
    return None


def require_emulator() -> None:
    """Skip when ``WARP_TEST_BIGQUERY=off``; fail, saying how to start it, when the emulator does not answer."""
    if not enabled():
        pytest.skip("WARP_TEST_BIGQUERY=off: BigQuery emulator tests switched off")
    if real_project():
        return
    problem = _unreachable(endpoint())
    if problem is not None:
        pytest.fail(
            f"no BigQuery emulator at {endpoint()} ({problem}): run `make setup-db` "
            "(scripts/setup-bigquery-emulator.sh), point WARP_TEST_BIGQUERY_ENDPOINT at one, "
            "or set WARP_TEST_BIGQUERY=off to skip these tests",
            pytrace=False,
        )


def client() -> bigquery.Client:
    """A client of the emulator in project ``warp``, with anonymous credentials (or of real BigQuery)."""
    require_emulator()
    if real_project():
        return bigquery.Client(project=real_project())
    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint()),
    )


@contextmanager
def temporary_dataset(bq: bigquery.Client, prefix: str = "warp_t") -> Iterator[str]:
    """A new dataset ``<prefix>_<random>`` for one test, deleted with its contents afterwards."""
    dataset_id = f"{prefix}_{uuid.uuid4().hex[:12]}"
    bq.create_dataset(bigquery.Dataset(f"{bq.project}.{dataset_id}"))
    try:
        yield dataset_id
    finally:
        bq.delete_dataset(f"{bq.project}.{dataset_id}", delete_contents=True, not_found_ok=True)


def destination_uri(min_flush_interval: float = 0.2) -> str:
    """The ``--destination`` of a test run (a short flush interval: the tests wait for convergence)."""
    project = real_project()
    if project:
        return f"bigquery://{project}?min_flush_interval={min_flush_interval:g}"
    return f"bigquery://{PROJECT}?api_endpoint={endpoint()}&min_flush_interval={min_flush_interval:g}"


def documented_name(name: str) -> str:
    """docs/bigquery.md, "Names" (without the length and collision rules), written out independently of
    the connector's code: what a source name becomes at BigQuery."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    reserved = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier")
    if out[0].isdigit() or out.lower().startswith(reserved):
        out = "c_" + out
    if out != name:
        out += "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return out


def valid_column_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,299}", name) is not None

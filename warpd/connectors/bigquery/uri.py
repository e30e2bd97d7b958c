"""``bigquery://PROJECT?location=...&credentials=...`` connection strings.

The project is the URI's host part (empty: the one Application Default
Credentials name); the dataset is the schema's ``destination_schema`` (a
destination) or ``source_database`` (a source).  Query parameters:

- ``location``: where datasets are created and jobs run (``US``, ``EU``, ``europe-west1``...);
- ``credentials``: path of a service-account key file (the path may be shown, the key never is);
  without it, Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, the
  metadata server);
- ``api_endpoint``: another API root, e.g. ``http://127.0.0.1:9050`` for a local emulator (then
  anonymous credentials unless ``credentials`` is given);
- ``min_flush_interval``: seconds between two merges into one table (default 5; destination only);
- ``job_timeout``: seconds one load or query job may take before it counts as failed and is retried
  (default 300);
- ``max_bytes_billed``: bytes one query job may bill at most; a query over it fails without cost
  (``maximum_bytes_billed``; source only);
- ``read_api``: how the source reads a query's rows: ``auto`` (default: the Storage Read API when it
  can be used, else REST), ``storage`` or ``rest`` (source only);
- ``read_api_endpoint``: the Storage Read API's gRPC ``host:port``, needed with ``api_endpoint``
  (plain, without TLS, when ``api_endpoint`` is ``http://``; source only).

See docs/bigquery.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

from warpd.errors import ConfigError

DEFAULT_MIN_FLUSH_INTERVAL = 5.0
DEFAULT_JOB_TIMEOUT = 300.0
KNOWN = ("location", "credentials", "api_endpoint", "min_flush_interval", "job_timeout")
SOURCE_KNOWN = (
    "location",
    "credentials",
    "api_endpoint",
    "job_timeout",
    "max_bytes_billed",
    "read_api",
    "read_api_endpoint",
)
READ_APIS = ("auto", "storage", "rest")
ROLE_KNOWN = {"destination": KNOWN, "source": SOURCE_KNOWN}
# Google Cloud project ids: 6-30 lower-case letters, digits and hyphens (and the legacy
# "domain.com:project" form); the emulator takes any simple name
_PROJECT = re.compile(r"^(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{0,62}$")
# a gRPC endpoint: host (a name, an IPv4 address or a bracketed IPv6 one) and port
_HOST_PORT = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$")


@dataclass(frozen=True)
class BigQueryTarget:
    project: str | None
    location: str | None = None
    credentials: str | None = None
    api_endpoint: str | None = None
    min_flush_interval: float = DEFAULT_MIN_FLUSH_INTERVAL
    job_timeout: float = DEFAULT_JOB_TIMEOUT
    max_bytes_billed: int | None = None
    read_api: str = "auto"
    read_api_endpoint: str | None = None


def _bytes(where: str, text: str) -> int:
    # isascii: "²".isdigit() is true and int("²") raises
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"{where}: max_bytes_billed={text!r} must be a whole number of bytes, 1 or more")
    return int(text)


def _seconds(where: str, name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ConfigError(f"{where}: {name}={text!r} must be a number of seconds from {low:g} to {high:g}")
    return value


def _split(uri: str, where: str) -> SplitResult:
    try:
        return urlsplit(uri)
    except ValueError:  # an unmatched "[" or "]" (Invalid IPv6 URL): never echo the URI
        raise ConfigError(
            f"{where}: cannot be parsed as a URI (an unmatched [ or ]); a BigQuery URI is bigquery://PROJECT"
        ) from None


def parse_uri(uri: str, role: str = "destination") -> BigQueryTarget:
    """The target a ``bigquery://`` URI names for a ``role`` (``"destination"`` or ``"source"``); raises
    ConfigError naming the problem."""
    where = f"{role}.connection_string"
    known = ROLE_KNOWN[role]
    dataset_key = "destination_schema" if role == "destination" else "source_database"
    parts = _split(uri, where)
    if parts.scheme.lower() != "bigquery":
        raise ConfigError(f"{where}: a BigQuery {role} is written bigquery://PROJECT")
    if parts.username or parts.password:
        raise ConfigError(
            f"{where}: a bigquery:// URI carries no user or password; give a "
            "service-account key file with ?credentials=/path/key.json, or use Application Default Credentials"
        )
    project = unquote(parts.netloc) or None
    if project is not None and not _PROJECT.match(project):
        # bigquery://user:secret (a pasted database URI) has "user:secret" as its host: never echo that
        shown = "the project (the host part)" if re.search(r"[:@\s]", project) else repr(project)
        raise ConfigError(
            f"{where}: {shown} is not a Google Cloud project id "
            "(lower-case letters, digits and hyphens, starting with a letter)"
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"{where}: the dataset is not part of a bigquery:// URI; it is the "
            f"schema's {dataset_key} (default: the schema name)"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in known:
            raise ConfigError(f"{where}: unknown parameter {key!r}; known: {', '.join(known)}")
        params[key] = value
    endpoint = params.get("api_endpoint") or None
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: api_endpoint must be an http:// or https:// URL")
    if endpoint is not None and urlsplit(endpoint).scheme == "http" and params.get("credentials"):
        raise ConfigError(
            f"{where}: credentials with an http:// api_endpoint would send the access "
            "token unencrypted; use https://, or leave credentials out (an emulator takes anonymous ones)"
        )
    read_api = params.get("read_api") or "auto"
    if read_api not in READ_APIS:
        raise ConfigError(f"{where}: read_api={read_api!r} must be one of {', '.join(READ_APIS)}")
    read_endpoint = params.get("read_api_endpoint") or None
    if read_endpoint is not None and not _HOST_PORT.match(read_endpoint):
        raise ConfigError(
            f"{where}: read_api_endpoint={read_endpoint!r} must be the Storage Read API's gRPC host:port "
            "(no scheme), e.g. 127.0.0.1:9060"
        )
    return BigQueryTarget(
        project=project,
        location=params.get("location") or None,
        credentials=params.get("credentials") or None,
        api_endpoint=endpoint,
        min_flush_interval=_seconds(
            where,
            "min_flush_interval",
            params.get("min_flush_interval", str(DEFAULT_MIN_FLUSH_INTERVAL)),
            0,
            3600,
        ),
        job_timeout=_seconds(
            where, "job_timeout", params.get("job_timeout", str(DEFAULT_JOB_TIMEOUT)), 1, 86400
        ),
        max_bytes_billed=_bytes(where, params["max_bytes_billed"])
        if params.get("max_bytes_billed")
        else None,
        read_api=read_api,
        read_api_endpoint=read_endpoint,
    )


def check_uri(uri: str) -> None:
    parse_uri(uri)


def check_source_uri(uri: str) -> None:
    parse_uri(uri, "source")


# keys of a ``source:``/``destination:`` section of type bigquery that the connection string can also say
OPTION_KEYS = ("project", *dict.fromkeys((*KNOWN, *SOURCE_KNOWN)))


def with_options(uri: str, options: dict[str, object]) -> str:
    """``uri`` with the BigQuery keys of a ``source:``/``destination:`` section folded in (``project`` as the host,
    the others as query parameters; a key set in both places takes the section's value)."""
    from urllib.parse import urlencode

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri  # parse_uri names the problem, for the right section
    project = options.get("project")
    netloc = quote(str(project), safe="") if project else parts.netloc
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key in OPTION_KEYS[1:]:
        if options.get(key) is not None:
            params[key] = str(options[key])
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(params), ""))

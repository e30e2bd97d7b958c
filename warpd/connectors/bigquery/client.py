"""The BigQuery client both connectors use: construction, error classification and bounded jobs.

Every API call runs without the client's own retries (they wait up to ten
minutes): the engine retries what :func:`is_transient` says with the
configured policy, and each job is bounded by ``job_timeout``
(:func:`wait`).  ``role`` (``"source"`` or ``"destination"``) only names the
connector in messages.  Credentials are never logged: a key file that cannot
be used is named by the kind of fault only.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from warpd.connectors.bigquery.uri import BigQueryTarget
from warpd.errors import FatalError
from warpd.redact import redact

log = logging.getLogger(__name__)

API_TIMEOUT = 60.0  # seconds for one HTTP call (jobs are bounded by job_timeout)
# error reasons (https://cloud.google.com/bigquery/docs/error-messages) worth retrying
_TRANSIENT_REASONS = {
    "backendError",
    "internalError",
    "jobBackendError",
    "jobInternalError",
    "rateLimitExceeded",
    "tableUnavailable",
}
# a MERGE that met another DML job on the same table: BigQuery asks to retry it
_CONCURRENT = re.compile(r"concurrent update|could not serialize access", re.I)


def reason(exc: BaseException) -> str:
    """The first error reason of a Google API error (``invalidQuery``, ``quotaExceeded``...), or ''."""
    errors = getattr(exc, "errors", None) or []
    for err in errors:
        if isinstance(err, dict) and err.get("reason"):
            return str(err["reason"])
    return ""


def message(exc: BaseException) -> str:
    """An exception's message, redacted, for logs and errors."""
    return redact(str(getattr(exc, "message", None) or exc).strip())


def api_timeout(target: BigQueryTarget) -> float:
    """Seconds for one HTTP call: no longer than a job may take (a call that hangs is abandoned and retried)."""
    return min(API_TIMEOUT, target.job_timeout)


def credentials(target: BigQueryTarget, role: str) -> Any:
    if target.credentials:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_file(target.credentials)
        except (OSError, ValueError) as exc:
            # the message of a malformed key could quote it: name the file and the kind of fault only
            raise FatalError(
                f"BigQuery {role}: cannot use the service-account key file named by credentials= "
                f"({type(exc).__name__}); check the path, that the cartridge-warp user can read it, and "
                "that it is a JSON key of a service account"
            ) from None
    if target.api_endpoint:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return None  # Application Default Credentials, found by the client


def open_client(target: BigQueryTarget, application_name: str, role: str) -> Any:
    """A ``google.cloud.bigquery.Client`` for ``target`` (FatalError naming the fix when none can be made)."""
    try:
        from google.api_core.client_info import ClientInfo
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery
    except ImportError:
        raise FatalError(
            f"the BigQuery {role} needs google-cloud-bigquery and pyarrow: pip install 'cartridge-warp[bigquery]'"
        ) from None
    import google.auth.exceptions

    options = ClientOptions(api_endpoint=target.api_endpoint) if target.api_endpoint else None
    try:
        return bigquery.Client(
            project=target.project,
            credentials=credentials(target, role),
            location=target.location,
            client_options=options,
            client_info=ClientInfo(user_agent=application_name.replace(" ", "-")),
        )
    except google.auth.exceptions.DefaultCredentialsError:
        raise FatalError(
            f"BigQuery {role}: no credentials found; set GOOGLE_APPLICATION_CREDENTIALS, run "
            "'gcloud auth application-default login', or give ?credentials=/path/key.json in the URI"
        ) from None
    except OSError as exc:
        raise FatalError(f"BigQuery {role}: cannot create the client: {message(exc)}") from None


def is_transient(exc: BaseException) -> bool:
    """Whether a BigQuery error is worth retrying (FatalError for an exceeded quota, which no retry fixes)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, (FutureTimeout, TimeoutError, ConnectionError)):
        return True
    import google.auth.exceptions

    if isinstance(exc, google.auth.exceptions.TransportError):  # the token's refresh met the network
        return True
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - the client depends on requests
        pass
    if isinstance(
        exc,
        (
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
        ),
    ):
        return True
    if isinstance(exc, gexc.GoogleAPICallError):
        why = reason(exc)
        if why == "quotaExceeded":
            raise FatalError(
                f"BigQuery quota exceeded, which no retry fixes: {message(exc)} (see the quota named "
                "there in the Google Cloud console, IAM & Admin > Quotas; docs/bigquery.md)"
            ) from None
        if why in _TRANSIENT_REASONS or _CONCURRENT.search(str(exc)):
            return True
    return False


def wait(job: Any, target: BigQueryTarget, **result_args: Any) -> Any:
    """A job's result within ``job_timeout``; a job over it is cancelled (best effort) and the timeout
    raised, which :func:`is_transient` retries."""
    try:
        return job.result(timeout=target.job_timeout, retry=None, **result_args)
    except FutureTimeout:
        try:
            job.cancel(retry=None, timeout=api_timeout(target))
        except Exception as exc:  # noqa: BLE001 - the timeout is what to report
            log.warning("could not cancel BigQuery job %s after job_timeout: %s", job.job_id, message(exc))
        raise

"""The BigQuery Storage Read API, as the BigQuery source uses it (``read_api``, docs/bigquery.md).

The source still runs each read as one query job (pinned ``FOR SYSTEM_TIME AS OF``, ordered,
``max_bytes_billed`` set); only the job's result table is read differently: over gRPC in Arrow
record batches instead of ``jobs.getQueryResults`` JSON pages.  The session has **one** stream, the
only way the Storage Read API keeps the rows of an ``ORDER BY`` in their order (google-cloud-bigquery
does the same for ordered queries), so every chunk's resume point stays right.

Calls run without the client library's own retries, as every other BigQuery call here: the engine
retries what :func:`~warpd.connectors.bigquery.client.is_transient` says.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from warpd.connectors.bigquery.uri import BigQueryTarget
from warpd.errors import FatalError


class ReadApiUnavailable(Exception):
    """The Storage Read API cannot be used here; the message says why, for the log or the error."""


def open_read_client(target: BigQueryTarget, credentials: Any, application_name: str) -> Any:
    """A ``BigQueryReadClient`` for ``target``; ReadApiUnavailable when none can be made.

    Against real BigQuery it talks to the API's default endpoint with the REST client's credentials.
    With ``api_endpoint`` (an emulator or another API root) it needs ``read_api_endpoint``; when
    ``api_endpoint`` is plain ``http://`` (an emulator) that gRPC endpoint is plain too."""
    try:
        import grpc
        from google.api_core.client_options import ClientOptions
        from google.api_core.gapic_v1.client_info import ClientInfo
        from google.cloud.bigquery_storage_v1 import BigQueryReadClient
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )
    except ImportError:
        raise ReadApiUnavailable(
            "google-cloud-bigquery-storage is not installed (pip install 'cartridge-warp[bigquery]')"
        ) from None
    info = ClientInfo(user_agent=application_name.replace(" ", "-"))
    endpoint = target.read_api_endpoint
    if endpoint is None and target.api_endpoint is not None:
        raise ReadApiUnavailable(
            f"api_endpoint is {target.api_endpoint} and no read_api_endpoint names its Storage Read API "
            "(gRPC host:port)"
        )
    if endpoint is not None and (target.api_endpoint or "").startswith("http://"):
        channel = grpc.insecure_channel(endpoint)
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel), client_info=info)
    options = ClientOptions(api_endpoint=endpoint) if endpoint is not None else None
    return BigQueryReadClient(credentials=credentials, client_options=options, client_info=info)


def open_session(client: Any, billing_project: str, table: Any, timeout: float) -> Any:
    """A one-stream Arrow read session of ``table`` (a ``TableReference``: a query job's destination)."""
    from google.cloud.bigquery_storage_v1 import types

    return client.create_read_session(
        parent=f"projects/{billing_project}",
        read_session=types.ReadSession(
            table=f"projects/{table.project}/datasets/{table.dataset_id}/tables/{table.table_id}",
            data_format=types.DataFormat.ARROW,
        ),
        max_stream_count=1,
        retry=None,
        timeout=timeout,
    )


def batches(client: Any, session: Any) -> Iterator[Any]:
    """The session's rows as pyarrow RecordBatches, in the table's order (nothing for an empty table,
    which gets no stream)."""
    import pyarrow

    if not session.streams:
        return
    if len(session.streams) != 1:  # asked for one: more would interleave and lose the order
        raise FatalError(
            f"BigQuery source: the Storage Read API gave {len(session.streams)} streams where one was asked "
            "for, so the rows would lose their order; set read_api: rest"
        )
    schema = pyarrow.ipc.read_schema(pyarrow.py_buffer(session.arrow_schema.serialized_schema))
    # retry=None: a reconnect that fails raises (the stream itself resumes one cut mid-way at its offset)
    for response in client.read_rows(session.streams[0].name, retry=None):
        if response.row_count:
            data = pyarrow.py_buffer(response.arrow_record_batch.serialized_record_batch)
            yield pyarrow.ipc.read_record_batch(data, schema)

"""What the binlog reader refuses to skip: events it cannot turn into exact changes, and XA.

The rule (docs/limitations.md): a row event or a statement-logged data change
on a replicated table that the reader cannot turn into changes stops the
schema with :class:`UnreplicableEvent`, naming the table, the position and the
fix; it is never dropped while the checkpoint moves on.  The decisions live
here, apart from the event loop in :mod:`warpd.connectors.mysql.binlog`, so
each can be tested without a server of every kind (MySQL's compressed
transactions cannot be produced on MariaDB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymysqlreplication.constants import NONE_SOURCE

from warpd.connectors.base import Event, Position
from warpd.errors import FatalError

# Event types that carry rows and that pymysqlreplication hands over undecoded
# (as NotImplementedEvent).  MariaDB's V1 compressed events are decoded by libfixes.
_UNDECODABLE_EVENTS = {
    0x14: "a pre-GA write-rows event",
    0x15: "a pre-GA update-rows event",
    0x16: "a pre-GA delete-rows event",
    0x28: "a compressed transaction (MySQL binlog_transaction_compression=ON)",
    0xA5: "a compressed statement (MariaDB log_bin_compress=ON)",
    0xA6: "a compressed write-rows event (MariaDB log_bin_compress=ON)",
    0xA7: "a compressed update-rows event (MariaDB log_bin_compress=ON)",
    0xA8: "a compressed delete-rows event (MariaDB log_bin_compress=ON)",
    0xA9: "a compressed write-rows event (MariaDB log_bin_compress=ON)",
    0xAA: "a compressed update-rows event (MariaDB log_bin_compress=ON)",
    0xAB: "a compressed delete-rows event (MariaDB log_bin_compress=ON)",
}

_FIX_BY_EVENT = {
    0x28: "run `SET GLOBAL binlog_transaction_compression = OFF` (and in every session that set it), "
    "and remove it from the server's configuration.",
}
_FIX_COMPRESSED = "run `SET GLOBAL log_bin_compress = OFF` and remove it from the server's configuration."

FIX_ROW_FORMAT = (
    "set binlog_format=ROW globally (`SET GLOBAL binlog_format = 'ROW'` and in [mysqld]) and make sure "
    "no session or application sets binlog_format=STATEMENT or MIXED."
)
FIX_ROW_IMAGE = (
    "set binlog_row_image=FULL globally (`SET GLOBAL binlog_row_image = 'FULL'` and in [mysqld]) and "
    "make sure no session sets MINIMAL or NOBLOB."
)


class UnreplicableEvent(FatalError):
    """The binlog holds a change the reader cannot turn into exact row changes."""


def unreplicable(
    what: str, database: str, table: str | None, here: Position, txn_start: Position, fix: str
) -> UnreplicableEvent:
    """The error that stops the schema at an event (ending at ``here``) it must not skip."""
    subject = f"table {database}.{table}" if table else f"database {database} (the table cannot be told)"
    ways_out = (
        f"`warpctl pause <schema>.{table}` (its changes are skipped from here on; `warpctl resume` copies "
        "the table again), or exclude the table (table_blacklist) and restart"
        if table
        else "exclude the tables concerned (table_blacklist) and restart, or reset the schema's state "
        "after fixing the server so every table is copied again"
    )
    return UnreplicableEvent(
        f"MySQL source: {what} on {subject}, in the event ending at binlog {here['file']}:{here['pos']} "
        f"(transaction starting at {txn_start['file']}:{txn_start['pos']}), cannot be replicated exactly; "
        f"the schema stops before it and its checkpoint stays there. Fix the source: {fix} "
        f"To get past the events already in the binlog: {ways_out}."
    )


def undecodable_event(event_type: int) -> tuple[str, str] | None:
    """(what it is, the fix) for an event type that carries rows the reader cannot decode, else None."""
    what = _UNDECODABLE_EVENTS.get(event_type)
    if what is None:
        return None
    return what, _FIX_BY_EVENT.get(event_type, _FIX_COMPRESSED)


def missing_columns(none_sources: Mapping[str, str] | None) -> list[str]:
    """Columns a row image leaves out although the table has them (binlog_row_image MINIMAL or NOBLOB).

    The event's column bitmap says so (pymysqlreplication reports such a column
    as None from the "cols bitmap").  A column added to the table after the
    event was logged is not in the event at all, and is not reported here: an
    older event replayed over a newer shape is a full image of its time.
    """
    if not none_sources:
        return []
    return [name for name, source in none_sources.items() if source == NONE_SOURCE.COLS_BITMAP]


# -- XA --------------------------------------------------------------------------------

XaId = tuple[int, bytes, bytes]  # format id, gtrid, bqual

_XA_DECISION = re.compile(
    r"\s*XA\s+(COMMIT|ROLLBACK)\s+X'([0-9A-Fa-f]*)'\s*,\s*X'([0-9A-Fa-f]*)'\s*,\s*(\d+)", re.IGNORECASE
)


def xa_decision(statement: str) -> tuple[str, XaId | None] | None:
    """("COMMIT" or "ROLLBACK", the XID) for a binlogged XA COMMIT/ROLLBACK statement, else None.

    The server logs the XID as ``X'gtrid',X'bqual',formatID``; the XID is None
    when the statement is spelled otherwise.  ``XA COMMIT ... ONE PHASE`` is
    logged as an ordinary transaction and never reaches here.
    """
    words = statement.split(None, 2)
    if len(words) < 2 or words[0].upper() != "XA" or words[1].upper() not in ("COMMIT", "ROLLBACK"):
        return None
    m = _XA_DECISION.match(statement)
    if m is None:
        return words[1].upper(), None
    return m.group(1).upper(), (int(m.group(4)), bytes.fromhex(m.group(2)), bytes.fromhex(m.group(3)))


@dataclass
class _Prepared:
    start: Position  # where the transaction's events begin
    rows: list[Event] = field(default_factory=list)


class XaTransactions:
    """Rows of XA transactions that are prepared but not yet committed or rolled back.

    MariaDB (10.5+) and MySQL binlog an XA transaction's rows at XA PREPARE and
    its outcome later, possibly after other transactions.  The rows are held
    here until XA COMMIT (applied) or XA ROLLBACK (dropped), and
    :meth:`hold` keeps the reported checkpoint at the start of the oldest
    undecided one, so a restart reads its rows again.
    """

    def __init__(self) -> None:
        self._prepared: dict[XaId, _Prepared] = {}  # in log order
        # prepared without a row of this schema: nothing to hold, but not "unknown" when decided
        self._empty: set[XaId] = set()

    def prepared(self, xid: XaId, start: Position, rows: list[Event]) -> None:
        if rows:
            self._prepared[xid] = _Prepared(dict(start), rows)
        else:
            self._empty.add(xid)

    def decide(self, xid: XaId | None) -> list[Event] | None:
        """The rows of a decided transaction; None when it was prepared before the stream's start."""
        if xid is None:
            return None
        if xid in self._empty:
            self._empty.discard(xid)
            return []
        found = self._prepared.pop(xid, None)
        return None if found is None else found.rows

    def hold(self) -> Position | None:
        """The position the checkpoint must not pass, or None when no XA transaction is undecided."""
        for prepared in self._prepared.values():
            return prepared.start
        return None

"""Where a supervisor may reach into a running schema: paused tables, copies beside the stream.

:class:`~warpd.engine.runner.SchemaRunner` calls these at three points of its
loop.  The base class does nothing (a runner built for ``--dry-run`` plans
has it); a running schema, in single mode or under warpd, uses
:class:`warpd.engine.control.ChildControl`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from warpd.engine.batch import FinalState


class EngineHooks:
    """No-op hooks: every table is applied, nothing runs beside the stream."""

    def skips(self, table: str) -> bool:
        """True while ``table`` is paused: its changes are not applied (nor its snapshot started)."""
        return False

    def resyncing(self) -> frozenset[str]:
        """Tables being copied again beside the stream (their destination rows are incomplete)."""
        return frozenset()

    @contextmanager
    def applying(self, table: str, states: Mapping[Hashable, FinalState]) -> Iterator[None]:
        """Wraps the write of one streaming batch of ``table`` (``states`` by row key)."""
        yield

    @contextmanager
    def changing(self, event: Any) -> Iterator[None]:
        """Wraps applying a schema change or TRUNCATE (``event``) to the destination."""
        yield

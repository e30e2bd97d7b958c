"""The runner's maps of replicated tables, shared with the threads that read them.

The engine's thread owns :attr:`SchemaRunner.tables` (shapes) and
:attr:`SchemaRunner.plans` (where each goes): it changes them as schema
changes stream by (the source it drives reports shape changes through them).
The status writer, the control thread and resync copies read them from other
threads.  Every access holds one lock, iteration walks a copy, and
:meth:`LockedMap.snapshot` gives one consistent copy, so a reader never sees
a map half-way through a change nor fails with "dictionary changed size
during iteration".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from typing import TypeVar

V = TypeVar("V")


class LockedMap(MutableMapping[str, V]):
    """A ``dict`` whose every access holds a lock; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, V] = {}

    def __getitem__(self, key: str) -> V:
        with self._lock:
            return self._data[key]

    def __setitem__(self, key: str, value: V) -> None:
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        with self._lock:
            return self._data.get(key, default)

    def pop(self, key: str, *default: V | None) -> V | None:  # type: ignore[override]
        with self._lock:
            return self._data.pop(key, *default)

    def snapshot(self) -> dict[str, V]:
        """A consistent copy."""
        with self._lock:
            return dict(self._data)

    def __repr__(self) -> str:
        return f"LockedMap({self.snapshot()!r})"

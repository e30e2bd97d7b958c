"""The runner's maps of replicated tables, shared with the threads that read them.

The engine's thread owns :attr:`SchemaRunner.tables` (shapes) and
:attr:`SchemaRunner.plans` (where each goes): it changes them as it applies
the schema changes the source reports (a source reads them, through :meth:`LockedMap.view`,
and never writes them).
The status writer, the control thread and resync copies read them from other
threads.  Every change holds one lock, iteration walks a copy, and
:meth:`LockedMap.snapshot` gives one consistent copy, so a reader never sees
a map half-way through a change nor fails with "dictionary changed size
during iteration".  Reading one key takes no lock: a single ``dict`` lookup is
atomic (the binlog reader looks a table up for every row event).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TypeVar

V = TypeVar("V")


class LockedMap(MutableMapping[str, V]):
    """A ``dict`` whose every access holds a lock; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, V] = {}

    def __getitem__(self, key: str) -> V:
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
        return key in self._data

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        return self._data.get(key, default)

    def pop(self, key: str, *default: V | None) -> V | None:  # type: ignore[override]
        with self._lock:
            return self._data.pop(key, *default)

    def snapshot(self) -> dict[str, V]:
        """A consistent copy."""
        with self._lock:
            return dict(self._data)

    def view(self) -> Mapping[str, V]:
        """The map, read-only (what the engine hands a source)."""
        return _ReadOnly(self)

    def __repr__(self) -> str:
        return f"LockedMap({self.snapshot()!r})"


class _ReadOnly(Mapping[str, V]):
    def __init__(self, target: LockedMap[V]):
        self._target = target

    def __getitem__(self, key: str) -> V:
        return self._target._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._target)

    def __len__(self) -> int:
        return len(self._target)

    def __contains__(self, key: object) -> bool:
        return key in self._target._data

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        return self._target._data.get(key, default)

"""Foreign-key actions the source's change log does not carry: refuse, emulate or ignore them.

InnoDB runs ``ON DELETE``/``ON UPDATE`` ``CASCADE`` and ``SET NULL`` inside
the storage engine and writes no binlog event for the child rows it changes,
so a destination fed by the binlog alone keeps children the source deleted.
A source that knows this lists such constraints (``unlogged_cascades()``, see
:class:`~warpd.connectors.base.Source`); per child table, the setting
``foreign_key_cascades`` decides:

* ``refuse`` (default): the schema stops with a :class:`ConfigError` (exit 2)
  naming every constraint and the choices;
* ``ignore``: replicate without the actions, with a warning;
* ``emulate``: when a batch is applied, the same actions are applied first to
  the destination's child tables (recursively for grandchildren), derived from
  the parents' delete and key-update changes in source order, all in one
  destination transaction.

Why "first" is exact: a batch must never hold an upsert of a child row that
the source wrote *before* a cascading parent change and that the cascade could
reach, because applying the cascade before the upsert would resurrect it.
:meth:`ForeignKeyCascades.splits` says when such a parent change arrives, and
the engine then applies the pending batch before taking the change.  Within a
batch, every child upsert the cascade could reach therefore follows the
parent change at the source, and must survive it; deletes commute with the
cascade.  Replaying from an older checkpoint repeats the same steps in the
same order, so the destination converges as for ordinary changes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warpd.config import SchemaConfig
from warpd.connectors.base import Destination, ForeignKey, Op, RowChange, Source, TablePlan, Truncate
from warpd.engine.hooks import EngineHooks
from warpd.errors import ConfigError, FatalError
from warpd.state.store import StateStore
from warpd.types import TableSchema

log = logging.getLogger(__name__)

# InnoDB refuses a statement whose cascade goes deeper than 15 levels, so a deeper one here is a bug
MAX_DEPTH = 16
NULL_FIELD = r"\N"
_ACTION = {"CASCADE": "delete", "SET NULL": "set_null"}  # ON DELETE rule -> destination action
_UPDATE_ACTION = {"CASCADE": "update", "SET NULL": "set_null"}

Retry = Callable[[Callable[[], Any], str], Any]


@dataclass(frozen=True)
class _Edge:
    """One emulated constraint: what a parent delete and a parent key update do to the child."""

    fk: ForeignKey
    on_delete: str | None  # "delete", "set_null" or None
    on_update: str | None  # "update", "set_null" or None

    def old_key(self, row: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
        """The parent row's referenced values; None when any is NULL (MATCH SIMPLE: no child refers to it)."""
        if row is None:
            return None
        key = tuple(row.get(c) for c in self.fk.parent_columns)
        return None if any(v is None for v in key) else key

    def action(self, change: RowChange) -> tuple[str, tuple[Any, ...], tuple[Any, ...] | None] | None:
        """(action, old parent values, new ones for an update) that ``change`` causes; None if nothing."""
        if not change.foreign_key_checks or change.op is Op.INSERT:
            return None  # foreign_key_checks=0 at the source: InnoDB ran no action either
        old = self.old_key(change.before)
        if old is None:
            return None
        if change.op is Op.DELETE:
            return (self.on_delete, old, None) if self.on_delete else None
        assert change.after is not None
        new = tuple(change.after.get(c) for c in self.fk.parent_columns)
        if self.on_update is None or new == old:
            return None
        return self.on_update, old, new


@dataclass
class _Step:
    edge: _Edge
    action: str
    keys: list[list[str]]  # COPY fields: old values, then new ones for "update"
    source_ts: float | None


class ForeignKeyCascades:
    """One schema's foreign keys whose actions the change log lacks, and their emulation."""

    def __init__(self, schema_name: str, schema: SchemaConfig, source: Source, retry: Retry):
        self.schema_name = schema_name
        self.schema = schema
        self.source = source
        self._retry = retry
        #: True when at least one constraint is emulated: the engine then calls splits/note/apply
        self.active = False
        self._by_parent: dict[str, list[_Edge]] = {}  # emulated constraints by parent table
        self._into: dict[str, list[_Edge]] = {}  # emulated constraints by child table
        self._beyond: dict[int, frozenset[str]] = {}  # id(edge) -> tables its child's own cascades reach
        self._described: dict[str, str] = {}  # child table -> its constraints, as recorded
        self._found: dict[str, str] = {}  # child table -> its constraints, as last read
        self._warned: frozenset[str] = frozenset()
        self._warned_loose: frozenset[str] = frozenset()
        # upserts waiting in the batch: their tables, and per edge their foreign-key values
        self._upserted_tables: set[str] = set()
        self._upserted: dict[int, set[tuple[Any, ...]]] = {}

    # -- which constraints, and what to do about them ------------------------
    def refresh(self, tables: Mapping[str, TableSchema]) -> None:
        """Read the source's constraints again and apply the settings; raise ConfigError to refuse.

        ``tables`` are the shapes known so far (the emulation of SET NULL and
        ON UPDATE needs a keyed child).
        """
        lister = getattr(self.source, "unlogged_cascades", None)
        if lister is None:
            return
        found: list[ForeignKey] = self._retry(lister, "reading the source's foreign keys")
        relevant = [fk for fk in found if fk.cascades and self.schema.includes(fk.table)]
        refused: list[str] = []
        impossible: list[str] = []
        ignored: list[ForeignKey] = []
        emulated: list[ForeignKey] = []
        for fk in relevant:
            mode = self.schema.table_settings(fk.table).foreign_key_cascades
            if mode == "ignore":
                ignored.append(fk)
            elif mode == "emulate":
                reason = self._why_not_emulated(fk, tables.get(fk.table))
                if reason:
                    impossible.append(f"{fk.describe()}: {reason}")
                else:
                    emulated.append(fk)
            else:
                refused.append(fk.describe())
        if refused or impossible:
            raise ConfigError(self._refusal(refused, impossible))
        if ignored and frozenset(fk.describe() for fk in ignored) != self._warned:
            log.warning(
                "schema %s: foreign_key_cascades: ignore, so these actions are NOT replicated and the "
                "destination keeps child rows the source deletes or changes through them:\n%s",
                self.schema_name,
                "\n".join("  " + fk.describe() for fk in ignored),
            )
        self._warned = frozenset(fk.describe() for fk in ignored)
        self._build(emulated)
        modes = [("emulate", fk) for fk in emulated] + [("ignore", fk) for fk in ignored]
        described: dict[str, list[str]] = {}
        for mode, fk in modes:
            described.setdefault(fk.table, []).append(f"{mode}: {fk.describe()}")
        self._found = {t: "; ".join(sorted(d)) for t, d in described.items()}
        if emulated:
            log.info(
                "schema %s: emulating foreign-key actions the binlog does not carry:\n%s",
                self.schema_name,
                "\n".join("  " + fk.describe() for fk in emulated),
            )
        loose = [fk for fk in emulated if fk.loose_collation]
        if loose and frozenset(fk.describe() for fk in loose) != self._warned_loose:
            log.warning(
                "schema %s: these foreign keys compare strings under a collation (case, accents or "
                "trailing spaces do not count); the emulation matches exact values, so a child whose value "
                "differs from its parent's that way is not reached (docs/limitations.md):\n%s",
                self.schema_name,
                "\n".join(f"  {fk.describe()} (collation {fk.loose_collation})" for fk in loose),
            )
        self._warned_loose = frozenset(fk.describe() for fk in loose)

    def _why_not_emulated(self, fk: ForeignKey, child: TableSchema | None) -> str | None:
        if fk.parent_database is not None:
            return (
                f"the parent is in another database ({fk.parent_database}), whose changes this schema "
                "does not read"
            )
        if not self.schema.includes(fk.parent):
            return f"the parent table {fk.parent!r} is excluded, so its deletes are never seen"
        rewrites = fk.on_update in _UPDATE_ACTION or fk.on_delete == "SET NULL"
        if rewrites and child is not None and not child.key:
            return (
                f"{fk.table!r} has no primary key, and changing its rows in place would invalidate the "
                "whole-row hash that identifies them; configure key_columns for it"
            )
        return None

    def _refusal(self, refused: list[str], impossible: list[str]) -> str:
        lines = [
            f"schema {self.schema_name}: foreign keys whose ON DELETE / ON UPDATE actions change child "
            "rows without any binlog event (InnoDB does not log them), so the destination would keep "
            "rows the source deleted or changed:"
        ]
        lines += [f"  {d}" for d in refused]
        if impossible:
            lines.append("foreign_key_cascades: emulate cannot handle:")
            lines += [f"  {d}" for d in impossible]
        lines += [
            "Choose, for the schema or per child table (tables: [{name: ..., foreign_key_cascades: ...}]):",
            "  foreign_key_cascades: emulate  apply the same actions to the destination's child tables "
            "(the parent tables must be replicated too);",
            "  table_blacklist: [child]       do not replicate the child tables;",
            "  foreign_key_cascades: ignore   replicate without the actions, accepting that the destination "
            "keeps children the source removed or changed through them.",
            "See docs/configuration.md#foreign-key-cascades.",
        ]
        return "\n".join(lines)

    def _build(self, emulated: list[ForeignKey]) -> None:
        edges = [_Edge(fk, _ACTION.get(fk.on_delete), _UPDATE_ACTION.get(fk.on_update)) for fk in emulated]
        self._by_parent, self._into = {}, {}
        for edge in edges:
            self._by_parent.setdefault(edge.fk.parent, []).append(edge)
            self._into.setdefault(edge.fk.table, []).append(edge)
        self._beyond = {id(edge): frozenset(self._reachable(edge.fk.table)) for edge in edges}
        self._upserted_tables.clear()
        self._upserted = {id(edge): set() for edge in edges}
        self.active = bool(edges)

    def _reachable(self, table: str) -> set[str]:
        """Tables that a change of ``table``'s rows can reach through emulated constraints."""
        seen: set[str] = set()
        todo = [table]
        while todo:
            for edge in self._by_parent.get(todo.pop(), ()):
                if edge.fk.table not in seen:
                    seen.add(edge.fk.table)
                    todo.append(edge.fk.table)
        return seen

    def record(
        self,
        store: StateStore,
        tables: Mapping[str, TableSchema],
        position: Any,
        dest: Destination,
        plans: Mapping[str, TablePlan],
    ) -> None:
        """Index the emulated children's foreign-key columns; record the constraints when they changed.

        Each replicated child's constraints (and their mode) are stored as a
        schema version of the child.
        """
        for edges in self._into.values():
            for edge in edges:
                plan = plans.get(edge.fk.table)
                if plan is not None and all(c in plan.columns for c in edge.fk.columns):
                    self._retry(
                        functools.partial(dest.ensure_index, plan, edge.fk.columns),
                        f"indexing the foreign key {edge.fk.name!r} of {plan.dest_table!r}",
                    )
        for name in sorted(set(self._found) | set(self._described)):
            table = tables.get(name)
            text = self._found.get(name, "")
            if table is not None and self._described.get(name, "") != text:
                store.record_foreign_keys(self.schema_name, table, text, position)
        self._described = dict(self._found)

    def schema_changed(
        self,
        store: StateStore,
        tables: Mapping[str, TableSchema],
        position: Any,
        dest: Destination,
        plans: Mapping[str, TablePlan],
    ) -> None:
        """After DDL: constraints may have appeared, gone, or moved with a renamed table."""
        self.refresh(tables)
        self.record(store, tables, position, dest, plans)

    # -- while changes collect into a batch ----------------------------------
    def drives_children(self, table: str) -> bool:
        """Whether ``table``'s changes carry emulated actions into other tables."""
        return bool(self._by_parent.get(table))

    def splits(self, change: RowChange) -> bool:
        """Whether the pending batch must be applied before ``change`` joins it (see the module doc)."""
        edges = self._by_parent.get(change.table)
        if not edges or not self._upserted_tables:
            return False
        for edge in edges:
            act = edge.action(change)
            if act is None:
                continue
            if edge.fk.table in self._upserted_tables and act[1] in self._upserted[id(edge)]:
                return True  # a waiting child upsert refers to this very parent
            if self._beyond[id(edge)] & self._upserted_tables:
                return True  # a grandchild upsert may hang below a child this change reaches
        return False

    def note(self, change: RowChange) -> None:
        """``change`` joined the pending batch."""
        if change.op is Op.DELETE or change.after is None:
            return
        edges = self._into.get(change.table)
        if not edges:
            return
        self._upserted_tables.add(change.table)
        for edge in edges:
            self._upserted[id(edge)].add(tuple(change.after.get(c) for c in edge.fk.columns))

    # -- applying ------------------------------------------------------------
    def apply(
        self,
        changes: Sequence[RowChange],
        dest: Destination,
        plans: Mapping[str, TablePlan],
        hooks: EngineHooks,
        store: StateStore,
    ) -> None:
        """Apply the actions ``changes`` (one batch, source order) cause, before the batch itself.

        An action that reaches a child whose destination rows are incomplete
        (paused, or being copied again) cannot be followed further from them:
        every table below it is then copied again (a resync request, as
        ``warpctl resync`` makes), which reads the source after the action.
        """
        self._upserted_tables.clear()
        for keys in self._upserted.values():
            keys.clear()
        steps: list[_Step] = []
        for change in changes:
            for edge in self._by_parent.get(change.table, ()):
                act = edge.action(change)
                plan = plans.get(edge.fk.table)
                if act is None or plan is None:
                    continue
                action, old, new = act
                try:
                    fields = _encode(plan, edge.fk.columns, old)
                    if action == "update":
                        assert new is not None
                        fields += _encode(plan, edge.fk.columns, new)
                except (ValueError, TypeError, OverflowError):
                    continue  # a value the child column cannot hold: no destination row has it either
                last = steps[-1] if steps else None
                # consecutive deletes or SET NULLs of one constraint commute: one statement for all;
                # key updates stay one by one (1 -> 2 then 2 -> 3 must not become 1 -> 2)
                if last and last.edge is edge and last.action == action and action != "update":
                    last.keys.append(fields)
                    last.source_ts = change.source_ts
                else:
                    steps.append(_Step(edge, action, [fields], change.source_ts))
        if not steps:
            return

        copying = hooks.resyncing()
        stale: set[str] = set()

        def run() -> None:
            stale.clear()
            with dest.transaction() as cur:
                for step in steps:
                    self._step(dest, cur, step, plans, hooks.skips, copying, stale, 1)

        touched = {s.edge.fk.table for s in steps}.union(*(self._beyond[id(s.edge)] for s in steps))
        with contextlib.ExitStack() as stack:
            for table in sorted(touched):
                # Rows change outside the stream's per-key bookkeeping, as with a TRUNCATE: a copy of
                # the table running beside the stream starts over, reading the source after the action.
                stack.enter_context(hooks.changing(Truncate(table, changes[-1].position)))
            self._retry(run, "applying foreign-key actions to child tables")
        for table in sorted(stale & set(plans)):
            log.warning(
                "schema %s: foreign-key actions reached %r through a table that is paused or being copied "
                "again; copying %r again so it matches the source",
                self.schema_name,
                table,
                table,
            )
            store.add_request(
                self.schema_name, "resync", {"table": table, "why": "foreign-key actions it could not follow"}
            )

    def _step(
        self,
        dest: Destination,
        cur: Any,
        step: _Step,
        plans: Mapping[str, TablePlan],
        skips: Callable[[str], bool],
        copying: frozenset[str],
        stale: set[str],
        depth: int,
    ) -> None:
        child = step.edge.fk.table
        plan = plans.get(child)
        if plan is None:
            return  # not replicated any more
        if skips(child) or child in copying:
            # its rows in the destination are not the source's: what hangs below them cannot be found
            stale.update(self._beyond[id(step.edge)])
            if skips(child):
                return  # paused: copied again on resume

        if depth > MAX_DEPTH:
            raise FatalError(
                f"schema {self.schema_name}: foreign-key actions from {step.edge.fk.describe()} go deeper "
                f"than {MAX_DEPTH} levels, which InnoDB itself refuses; please report it"
            )
        below = [e for e in self._by_parent.get(child, ()) if e.fk.table in plans]
        returning = sorted({c for e in below for c in e.fk.parent_columns if c in plan.columns})
        changed = dest.cascade(
            cur, plan, step.action, step.edge.fk.columns, step.keys, returning, step.source_ts
        )
        log.debug("foreign key %s: %s on %d rows of %r", step.edge.fk.name, step.action, len(changed), child)
        if not changed:
            return
        for edge in below:
            action = edge.on_delete if step.action == "delete" else edge.on_update
            if action is None:
                continue
            if not all(c in returning for c in edge.fk.parent_columns):
                # the destination's shape lacks the referenced columns: the grandchildren cannot be
                # found from here, so they are copied again rather than left diverging
                stale.update({edge.fk.table} | self._beyond[id(edge)])
                continue
            at = [returning.index(c) for c in edge.fk.parent_columns]
            keys: list[list[str]] = []
            for before, after in changed:
                old = [before[i] for i in at]
                if NULL_FIELD in old:
                    continue  # MATCH SIMPLE: no grandchild refers to a key with a NULL part
                if after is None:
                    keys.append(old)
                    continue
                new = [after[i] for i in at]
                if new != old:
                    keys.append(old + new if action == "update" else old)
            if keys:
                self._step(
                    dest,
                    cur,
                    _Step(edge, action, keys, step.source_ts),
                    plans,
                    skips,
                    copying,
                    stale,
                    depth + 1,
                )


def _encode(plan: TablePlan, columns: Sequence[str], values: Sequence[Any]) -> list[str]:
    """The parent's values as COPY text of the child's foreign-key columns."""
    encoders = {c.name: enc for c, enc in zip(plan.source.columns, plan.encoders, strict=True)}
    return [encoders[c](v) for c, v in zip(columns, values, strict=True)]

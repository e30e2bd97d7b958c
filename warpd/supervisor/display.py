"""warpctl's tables: aligned columns a person reads at a glance in a terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

MAX_ERROR = 160  # characters of a last error shown in a table; --json has all of it


def position(value: Any) -> str:
    """``mysql-bin.000012:4711`` for a binlog position, compact JSON (shortened) for anything else."""
    if value is None:
        return "-"
    if isinstance(value, dict) and set(value) >= {"file", "pos"}:
        return f"{value['file']}:{value['pos']}"
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if digits else f"{int(value):,}"


def one_line(text: Any, limit: int = MAX_ERROR, at: Any = None) -> str:
    """``text`` on one line, shortened; with ``at`` (epoch seconds) prefixed by its age: ``(5m ago) ...``."""
    if not text:
        return "-"
    flat = " ".join(str(text).split())
    if at:
        flat = f"({ago(at)}) {flat}"
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def ago(stamp: Any) -> str:
    age = int(max(0.0, time.time() - float(stamp)))
    if age < 60:
        return f"{age}s ago"
    if age < 3600:
        return f"{age // 60}m ago"
    if age < 86400:
        return f"{age // 3600}h{age % 3600 // 60:02d}m ago"
    return f"{age // 86400}d ago"


def when(stamp: Any) -> str:
    if not stamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(stamp)))


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` lists the columns aligned right (numbers)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).rjust(widths[i]) if i in right else str(cell).ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def table_state(info: dict[str, Any]) -> str:
    state = str(info.get("state", "-"))
    if info.get("percent") is not None:
        state += f" {info['percent']:.0f}%"
    return state


def status(doc: dict[str, Any]) -> str:
    """``warpctl status``: one line per schema, one indented line per table."""
    header = [
        "SCHEMA / TABLE",
        "STATE",
        "PID",
        "POSITION",
        "LAG",
        "EVENTS/S",
        "APPLIED",
        "DEAD",
        "RESTARTS",
        "LAST ERROR",
    ]
    rows: list[list[str]] = []
    for schema in doc.get("schemas", []):
        tables = schema.get("tables") or {}
        rows.append(
            [
                schema["name"],
                schema.get("display") or schema.get("state", "-"),
                str(schema["pid"]) if schema.get("pid") else "-",
                position(schema.get("position")),
                seconds(schema.get("lag_seconds")),
                number(schema.get("events_per_second"), 1)
                if schema.get("events_per_second") is not None
                else "-",
                number(schema.get("rows_applied")),
                number(sum(int(t.get("dead_letters") or 0) for t in tables.values())),
                number(schema.get("restarts")),
                one_line(schema.get("last_error"), at=schema.get("last_error_at")),
            ]
        )
        for name, info in tables.items():
            rows.append(
                [
                    "  " + name,
                    table_state(info),
                    "",
                    "",
                    "",
                    "",
                    number(info.get("rows_applied")) if "rows_applied" in info else "-",
                    number(info.get("dead_letters")) if "dead_letters" in info else "-",
                    "",
                    one_line(info.get("last_error"), at=info.get("last_error_at")),
                ]
            )
    daemon = doc.get("daemon")
    head = ""
    if daemon:
        uptime = seconds(time.time() - float(daemon["started_at"])) if daemon.get("started_at") else "-"
        head = (
            f"warpd {daemon.get('version', '')}, pid {daemon.get('pid')}, up {uptime}"
            f"{', stopping' if daemon.get('stopping') else ''}; config {daemon.get('config') or '-'}\n\n"
        )
    if not rows:
        return head + "no schemas"
    return head + table(header, rows, right=(4, 5, 6, 7, 8)) + batch_runs(doc) + verifies(doc)


def verifies(doc: dict[str, Any]) -> str:
    """Scheduled verifies (``verify: {every: ...}``): per schema, the last result and the next run."""
    rows: list[list[str]] = []
    for schema in doc.get("schemas", []):
        verify = schema.get("verify")
        if not isinstance(verify, dict):
            continue
        last = verify.get("last") or {}
        result = str(last.get("result") or "-")
        if result == "different":
            result = f"different: {number(last.get('differing_keys'))} key(s)"
        if last.get("repaired_keys"):
            result += f", {number(last['repaired_keys'])} repaired"
        rows.append(
            [
                schema["name"],
                f"every {seconds(verify.get('every'))}" + (", repair" if verify.get("repair") else ""),
                when(last.get("finished_at")) if last.get("finished_at") else "never",
                result,
                "running" if verify.get("running_since") else when(verify.get("next_at")),
                one_line(last.get("error")),
            ]
        )
    if not rows:
        return ""
    header = ["VERIFY SCHEMA", "SCHEDULE", "LAST VERIFY", "RESULT", "NEXT", "ERROR"]
    return "\n\n" + table(header, rows)


def batch_runs(doc: dict[str, Any]) -> str:
    """The runs of batch-mode schemas: per table, its last run, rows moved, duration, next run, mark."""
    header = [
        "BATCH SCHEMA / TABLE",
        "SYNC",
        "LAST RUN",
        "RESULT",
        "ROWS",
        "DURATION",
        "NEXT RUN",
        "HIGH-WATER MARK",
    ]
    rows: list[list[str]] = []
    for schema in doc.get("schemas", []):
        batch = schema.get("batch")
        tables = {n: t for n, t in (schema.get("tables") or {}).items() if "sync" in t}
        if not batch and not tables:
            continue
        rows.append(
            [
                schema["name"],
                str((batch or {}).get("schedule") or "-"),
                "",
                "",
                "",
                "",
                when((batch or {}).get("next_run")) if (batch or {}).get("next_run") else "-",
                "",
            ]
        )
        for name, info in tables.items():
            last = info.get("last_run") or {}
            mark = info.get("high_water_mark")
            rows.append(
                [
                    "  " + name,
                    str(info.get("sync", "-")).replace("_", " "),
                    when(last.get("started_at")) if last.get("started_at") else "never",
                    str(last.get("status") or "-"),
                    number(last.get("rows"))
                    + (f" (-{number(last['deleted'])})" if last.get("deleted") else ""),
                    seconds(last.get("seconds")),
                    "",
                    one_line(str(mark), limit=40) if mark is not None else "-",
                ]
            )
    if not rows:
        return ""
    return "\n\n" + table(header, rows, right=(4, 5))


def checkpoints(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no checkpoints yet"
    rows = [
        [
            e["schema"],
            position(e.get("position")),
            str(e.get("batch", 0)),
            held(e.get("skip") or {}),
            when(e.get("source_ts")),
            when(e.get("updated_at")),
        ]
        for e in entries
    ]
    return table(
        ["SCHEMA", "POSITION", "BATCH", "APPLIED AFTER IT", "SOURCE TIME", "SAVED AT"], rows, right=(2,)
    )


def held(skip: dict[str, int]) -> str:
    """The row changes after a checkpoint's position applied already (a batch cut inside a source
    transaction), per table; ``-`` for none."""
    if not skip:
        return "-"
    return ", ".join(f"{t or 'any table'} {n}" for t, n in sorted(skip.items()))


def dead_letters(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead letters"
    rows = [
        [
            str(e["id"]),
            e["schema"],
            e["table"],
            e["operation"],
            when(e.get("recorded_at")),
            one_line(e.get("reason")),
        ]
        for e in entries
    ]
    return table(["ID", "SCHEMA", "TABLE", "OP", "RECORDED", "REASON"], rows, right=(0,))

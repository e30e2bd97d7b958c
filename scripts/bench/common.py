"""What both benchmarks share: progress lines, CPU accounting, the machine and commit measured, report rows.

``mysql_to_postgres.py`` and ``mongodb_to_postgres.py`` import it as ``common``
(Python puts a script's own directory first on ``sys.path``).  Importing it
also puts this checkout first on ``sys.path``, so both measure the ``warpd/``
next to them rather than an installed copy.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)

_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CPU accounting
def _system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class CpuWindow:
    """Share of the whole machine that was busy between start() and stop(), and one process's CPU time."""

    def __init__(self, pid: int | None = None):
        self.pid = pid
        self.busy0, self.total0 = _system_ticks()
        self.proc0 = process_cpu(pid) if pid else 0.0

    def stop(self) -> dict[str, Any]:
        busy, total = _system_ticks()
        out = {"machine_busy_pct": round(100.0 * (busy - self.busy0) / max(1, total - self.total0), 1)}
        if self.pid:
            out["warp_cpu_s"] = round(process_cpu(self.pid) - self.proc0, 2)
        return out


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads, live and exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_processes(seconds: float = 1.0) -> list[tuple[str, float]]:
    """Processes other than this one and the database servers that used CPU during ``seconds``."""

    def snapshot() -> dict[int, tuple[str, float]]:
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                except OSError:
                    continue
                out[int(entry)] = (cmd, process_cpu(int(entry)))
        return out

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    busy = [
        (cmd[:100], (cpu - before[pid][1]) / seconds)
        for pid, (cmd, cpu) in after.items()
        if pid in before and cmd and (cpu - before[pid][1]) / seconds >= 0.05
    ]
    return sorted(busy, key=lambda x: -x[1])


def wait_for_quiet(max_wait: float) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) for the machine to be idle; warn about what keeps it busy."""
    deadline = time.monotonic() + max_wait
    while True:
        w = CpuWindow()
        time.sleep(1.0)
        busy = w.stop()["machine_busy_pct"]
        if busy < 10.0 or time.monotonic() >= deadline:
            break
        say(f"the machine is {busy:.0f}% busy before the benchmark; waiting for it to settle")
        time.sleep(4.0)
    others = busy_processes() if busy >= 10.0 else []
    if busy >= 10.0:
        say(
            f"WARNING: the machine is {busy:.0f}% busy: the figures will be low. Busy: "
            + "; ".join(f"{cmd} ({100 * cpu:.0f}%)" for cmd, cpu in others[:3])
        )
    return {"machine_busy_pct_at_start": busy, "other_busy_processes": [c for c, _ in others[:5]]}


# --------------------------------------------------------------------------- the machine and the commit
def warpd_revision() -> str:
    """The commit measured, and whether warpd/ differs from it (read-only git; never touches the index)."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "diff", "--quiet", "HEAD", "--", "warpd"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=10,
            ).returncode
            != 0
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    from warpd import __version__

    return f"{__version__}, commit {head or '?'}" + (" + uncommitted changes in warpd/" if dirty else "")


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - informational only
        return "?"


def host_facts() -> dict[str, Any]:
    """CPU, cores, memory, kernel and Python of this machine (both benchmarks' report headers)."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def report_tail(fig: dict[str, Any], rows: list[tuple[str, str, str]]) -> list[str]:
    """A warning if the machine was busy at the start, then the aligned figure rows."""
    lines = []
    load = fig.get("load", {})
    if load.get("machine_busy_pct_at_start", 0) >= 10.0:
        lines.append(
            f"WARNING: the machine was {load['machine_busy_pct_at_start']}% busy before the start "
            f"({'; '.join(load['other_busy_processes'][:2])}): figures are low"
        )
    lines.append("")
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    return lines + [f"{a:<{w1}}  {b:>{w2}}  {c}".rstrip() for a, b, c in rows]


# --------------------------------------------------------------------------- report
def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"

"""What the benchmarks share: progress lines, CPU accounting, the machine and commit measured, report
rows, the cartridge-warp child process and py-spy profiles.

``mysql_to_postgres.py``, ``mysql_to_mysql.py`` and ``mongodb_to_postgres.py`` import it as ``common``
(Python puts a script's own directory first on ``sys.path``).  Importing it
also puts this checkout first on ``sys.path``, so both measure the ``warpd/``
next to them rather than an installed copy.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)

from warpd.state.store import StateStore  # noqa: E402 - this checkout's, put first just above

_T0 = time.monotonic()


class BenchError(RuntimeError):
    pass


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


def process_rss_mib(pid: int) -> float | None:
    """Resident set size of a process (VmRSS), MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread, from start() to stop()."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            rss = process_rss_mib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        rss = process_rss_mib(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic(), rss))
        return self.samples

    def at(self, when: float) -> float | None:
        """The first sample taken at or after ``when``."""
        return next((mib for t, mib in self.samples if t >= when), None)

    def peak(self) -> float | None:
        return max((mib for _, mib in self.samples), default=None)


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


def rate(rows: int, seconds: float, **more: Any) -> dict[str, Any]:
    """The figures of ``rows`` moved in ``seconds``: rows, seconds, rows_per_s, then ``more``."""
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds), **more}


def add_output_options(p: argparse.ArgumentParser, quiet_wait: float) -> None:
    """``--json`` and ``--quiet-wait``, which every benchmark takes."""
    p.add_argument("--json", action="store_true", help="print the figures as JSON too")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=quiet_wait,
        metavar="S",
        help=f"wait up to S seconds for an idle machine before starting (default {quiet_wait:g})",
    )


# --------------------------------------------------------------------------- the process
class Warp:
    """One ``python -m warpd --mode single`` child process, its log file and its state file."""

    def __init__(self, state_dir: str, log_path: str, args: list[str]):
        self.state_dir = state_dir
        self.log_path = log_path
        self.args = args  # --source/--destination/--schema or --config, after ``--mode single``
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._store: StateStore | None = None

    def start(self) -> float:
        cmd = [sys.executable, "-m", "warpd", "--mode", "single", *self.args, "--state-dir", self.state_dir]
        log = open(self.log_path, "ab")  # handed to the child; our copy is closed below
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self.started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"cartridge-warp exited with status {self.proc.returncode}; its log:\n" + self.log_tail()
            )

    def store(self) -> StateStore:
        """The state file, opened once the process has created it."""
        if self._store is None:
            path = os.path.join(self.state_dir, "state.db")
            while not os.path.exists(path):
                self.check_alive()
                time.sleep(0.02)
            self._store = StateStore(self.state_dir)
        return self._store

    def log_text(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, needle: str, occurrence: int = 1, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count(needle) >= occurrence:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.02)
        raise BenchError(f"timed out waiting for {needle!r} in the cartridge-warp log:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say(f"cartridge-warp did not stop within {timeout:.0f}s of SIGTERM; killing it")
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def finish(self) -> None:
        """Stop the process and close its state file; say how it exited when that was not cleanly."""
        rc = self.stop()
        self.close()
        if rc not in (None, 0):
            say(f"cartridge-warp exited with status {rc}:\n{self.log_tail()}")


# --------------------------------------------------------------------------- profiling
class Profiler:
    """py-spy record attached to a running process, stopped with SIGINT.  ``gil``: only the thread holding
    the GIL (on-CPU Python time); ``idle``: idle threads too (wall time, waits included)."""

    def __init__(self, out_dir: str | None, gil: bool = True, idle: bool = False):
        self.out_dir = out_dir
        self.gil = gil
        self.idle = idle
        self.proc: subprocess.Popen[bytes] | None = None
        self.path = ""
        # the virtualenv's py-spy when the script runs as .venv/bin/python without the venv on PATH
        beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
        self.py_spy = shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)
        if out_dir:
            if not self.py_spy:
                raise BenchError("--profile needs py-spy: pip install py-spy")
            os.makedirs(out_dir, exist_ok=True)

    def start(self, pid: int, name: str) -> None:
        if not self.out_dir:
            return
        self.path = os.path.join(self.out_dir, f"{name}.txt")
        assert self.py_spy is not None
        self.proc = subprocess.Popen(
            [
                self.py_spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--threads",
                "--full-filenames",
                "--rate",
                "100",
                "-o",
                self.path,
                *(["--gil"] if self.gil else []),
                *(["--idle"] if self.idle else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # attached

    def stop(self) -> str | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return self.path if os.path.exists(self.path) else None


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if path.startswith(ROOT + "/"):
        return path[len(ROOT) + 1 :]
    return os.path.basename(path)


def _stage(names: list[str], stages_of: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for label, markers in stages_of:
        if any(mk in n for n in names for mk in markers):
            return label
    return "other (imports, start-up, ...)"


def analyse_profile(
    path: str, stages_of: tuple[tuple[str, tuple[str, ...]], ...], top: int = 15
) -> dict[str, Any]:
    """Self and inclusive shares per file:function, per thread and per pipeline stage (``stages_of``:
    label and markers, first match wins; markers are substrings of "file:function"), from py-spy raw
    (collapsed) stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = stack.split(";")
            thread = frames[0].split(": ", 1)[-1]
            thread = re.sub(r"_\d+$", "", thread)  # ThreadPoolExecutor-style numbered names
            names = []
            for fr in frames[1:]:
                m = _FRAME.match(fr)
                names.append(f"{_short(m['file'])}:{m['func']}" if m else fr)
            if not names:
                continue
            total += count
            threads[thread] += count
            stages[_stage(names, stages_of)] += count
            own[names[-1]] += count
            for n in set(names):
                incl[n] += count

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "threads": share(threads),
        "stages": share(stages),
        "self": share(own),
        "inclusive_warpd": [
            (k, v)
            for k, v in share(collections.Counter({k: v for k, v in incl.items() if k.startswith("warpd/")}))
        ],
    }

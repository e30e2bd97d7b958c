#!/usr/bin/env python3
"""Torture harness: warpd under a mixed write load while faults are injected at random, then verify.

What it does (docs/reliability.md has the long run and its figures):

1. creates ``--schemas`` MariaDB source databases and one MongoDB database on the project's wire-protocol
   test server (``tests/mongo_wire``), each with uniquely-named tables and destination schemas in the
   local PostgreSQL, and a state directory (on a small tmpfs when running as root with ``mount``);
2. starts two ``warpd`` daemons (one configuration has one source: one for the MariaDB schemas, one for
   the MongoDB schema), as the tests do;
3. runs a writer thread per schema: inserts, updates, deletes, primary-key changes, small transactions,
   ``ALTER TABLE ... ADD COLUMN`` (MongoDB: new fields) now and then, values of about 1 MB now and then;
4. injects faults on a schedule drawn from ``--seed``: ``kill -9`` of a schema process, ``kill -9`` of a
   master (restarted as systemd would, after its children died), PostgreSQL and MariaDB stopped for
   ``--outage`` seconds, ``pg_terminate_backend`` of the destination's connections, the state
   directory's disk filled for a while;
5. stops the load, waits (bounded, with progress) until every schema has caught up, compares every
   table row by row (``warpd.verify.verify_table``), then runs ``cartridge-warp verify`` (the key-range
   checksums users run, docs/verify.md) on every schema with its daemon's configuration, and prints
   kills done, outages survived, rows compared, rows differing and the keys verify found differing.

Exit status: 0 when every table is identical by both comparisons, nothing went to the dead-letter
table and everything caught up; 1 otherwise; 2 on a set-up error.  Everything it created (databases, schemas, mounts,
processes) is removed on the way out, also on Ctrl-C, and a database it stopped is always started
again.  The logs stay in the run directory when the run failed (its path is printed).

Needs the local databases of scripts/setup-databases.sh and the test extra (``make install``).
Stopping the machine's databases disturbs whatever else uses them: ``--no-db-outages`` leaves them up.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import psycopg2  # noqa: E402
import pymongo  # noqa: E402
import pymysql  # noqa: E402
from conftest import MYSQL_HOST, MYSQL_PORT, PG_DSN, mysql_root, pg_superuser  # noqa: E402
from daemon_support import Daemon, pid_alive  # noqa: E402
from demo_mongodb import DemoFailed, start_test_server, stop  # noqa: E402
from psycopg2 import sql  # noqa: E402
from servers import MariaDBServer, PostgresCluster, mariadb_answers, postgres_answers  # noqa: E402

from tests.mongo_support import with_database  # noqa: E402

SUPERVISOR = """\
supervisor:
  restart_backoff_base: 0.5
  restart_backoff_cap: 5
  crash_loop_threshold: 1000
  crash_loop_window: 60
  healthy_after: 30
  heartbeat_timeout: 60
  stop_timeout: 20
"""
# an outage of a minute is ridden out inside the process; past that the supervisor restarts it
RETRY = "retry: {initial_delay_seconds: 0.3, max_delay_seconds: 3, max_attempts: 1000}\n"
BIG = 1_000_000  # bytes of a large value
INITIAL_ROWS = 300
KILL_KINDS = ("kill -9 schema process", "kill -9 master")


def log(msg: str) -> None:
    print(
        f"[torture {time.strftime('%H:%M:%S')}] {msg}",
        file=sys.stderr if QUIET_STDOUT else sys.stdout,
        flush=True,
    )


QUIET_STDOUT = False  # --json: progress to stderr, the summary alone to stdout


# -- the schemas and their writers --------------------------------------------------------------------
@dataclass
class Schema:
    """One replicated schema: its source database, the daemon that replicates it, its writer's tally."""

    name: str
    kind: str  # "mariadb" or "mongodb"
    daemon: str  # key of the daemon in Torture.daemons
    writes: Counter[str] = field(default_factory=Counter)
    errors: int = 0


def big_value(rnd: random.Random) -> str:
    token = "".join(rnd.choices(string.ascii_letters + string.digits, k=64))
    return (token * (BIG // 64 + 2))[: BIG + rnd.randrange(-50_000, 50_000)]


class MariaDBWriter(threading.Thread):
    """Changes two tables of one MariaDB database until stopped, riding out outages (reconnects)."""

    TABLES = {
        "items": "CREATE TABLE items (id BIGINT PRIMARY KEY, qty INT NOT NULL, note VARCHAR(100), "
        "payload LONGTEXT NULL, changed DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        "pairs": "CREATE TABLE pairs (a INT NOT NULL, b VARCHAR(20) NOT NULL, amount DECIMAL(14,2), "
        "flag TINYINT(1) NOT NULL DEFAULT 0, PRIMARY KEY (a, b))",
    }

    def __init__(self, schema: Schema, seed: int, halt: threading.Event, ddl_every: float):
        super().__init__(name=f"writer-{schema.name}", daemon=True)
        self.schema, self.rnd, self.halt, self.ddl_every = schema, random.Random(seed), halt, ddl_every
        self.next_id = INITIAL_ROWS + 1
        self.columns = 0
        self.last_ddl = time.monotonic()

    def create(self) -> None:
        conn = mysql_root()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.schema.name}` CHARACTER SET utf8mb4")
                cur.execute(f"USE `{self.schema.name}`")
                for ddl in self.TABLES.values():
                    cur.execute(ddl)
                cur.executemany(
                    "INSERT INTO items (id, qty, note) VALUES (%s, %s, %s)",
                    [(i, i % 17, f"row {i}") for i in range(1, INITIAL_ROWS + 1)],
                )
                cur.executemany(
                    "INSERT INTO pairs (a, b, amount) VALUES (%s, %s, %s)",
                    [(i, f"b{i % 7}", f"{i}.25") for i in range(1, INITIAL_ROWS + 1)],
                )
        finally:
            conn.close()

    def run(self) -> None:
        conn = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = mysql_root(self.schema.name)
                with conn.cursor() as cur:
                    self._one(conn, cur)
                time.sleep(0.01)
            except pymysql.err.MySQLError:
                self.schema.errors += 1
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self.halt.wait(0.5)  # the server is down or restarting: try again soon
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _some(self) -> int:
        return self.rnd.randrange(1, self.next_id)

    def _one(self, conn: Any, cur: Any) -> None:
        rnd, w = self.rnd, self.schema.writes
        if time.monotonic() - self.last_ddl > self.ddl_every and self.columns < 8:
            self.last_ddl = time.monotonic()
            self.columns += 1
            table = rnd.choice(list(self.TABLES))
            cur.execute(f"ALTER TABLE {table} ADD COLUMN c{self.columns} INT NULL DEFAULT {self.columns}")
            w["alter table add column"] += 1
            return
        r = rnd.random()
        if r < 0.004:
            cur.execute("UPDATE items SET payload = %s WHERE id = %s", (big_value(rnd), self._some()))
            w["~1 MB value"] += 1
        elif r < 0.006:
            cur.execute("UPDATE items SET payload = NULL WHERE payload IS NOT NULL")  # keeps the table small
            w["update"] += 1
        elif r < 0.30:
            self.next_id += 1
            cur.execute(
                "INSERT INTO items (id, qty, note) VALUES (%s, %s, %s)", (self.next_id, r * 100, f"n{r:.6f}")
            )
            w["insert"] += 1
        elif r < 0.40:
            self.next_id += 1
            cur.execute(
                "INSERT IGNORE INTO pairs (a, b, amount) VALUES (%s, %s, %s)",
                (self.next_id, rnd.choice("xyz"), f"{rnd.randrange(10**6)}.{rnd.randrange(100):02d}"),
            )
            w["insert"] += 1
        elif r < 0.60:
            cur.execute(
                "UPDATE items SET qty = qty + 1, note = %s WHERE id = %s", (f"u{r:.5f}", self._some())
            )
            w["update"] += 1
        elif r < 0.68:
            cur.execute("UPDATE pairs SET amount = amount + 1, flag = 1 - flag WHERE a = %s", (self._some(),))
            w["update"] += 1
        elif r < 0.78:
            table, col = rnd.choice((("items", "id"), ("pairs", "a")))
            cur.execute(f"DELETE FROM {table} WHERE {col} = %s", (self._some(),))  # noqa: S608
            w["delete"] += 1
        elif r < 0.86:
            self.next_id += 1
            table, col = rnd.choice((("items", "id"), ("pairs", "a")))
            cur.execute(
                f"UPDATE IGNORE {table} SET {col} = %s WHERE {col} = %s",  # noqa: S608
                (self.next_id, self._some()),
            )
            w["primary-key change"] += 1
        else:
            conn.begin()
            for _ in range(rnd.randrange(2, 6)):
                self.next_id += 1
                cur.execute("INSERT INTO items (id, qty) VALUES (%s, %s)", (self.next_id, 1))
                cur.execute("UPDATE items SET qty = qty * 2 WHERE id = %s", (self._some(),))
                cur.execute("DELETE FROM pairs WHERE a = %s", (self._some(),))
            conn.commit()
            w["transaction"] += 1


class MongoWriter(threading.Thread):
    """Changes two collections of one MongoDB database until stopped."""

    def __init__(self, schema: Schema, uri: str, seed: int, halt: threading.Event, ddl_every: float):
        super().__init__(name=f"writer-{schema.name}", daemon=True)
        self.schema, self.rnd, self.halt, self.ddl_every = schema, random.Random(seed), halt, ddl_every
        self.client: Any = pymongo.MongoClient(uri, tz_aware=True)
        self.db = self.client[schema.name]
        self.next_id = INITIAL_ROWS + 1
        self.fields = 0
        self.last_ddl = time.monotonic()

    def create(self) -> None:
        self.db["orders"].insert_many(
            [
                {"_id": i, "qty": i % 17, "customer": {"name": f"c{i}", "tier": i % 3}}
                for i in range(1, INITIAL_ROWS + 1)
            ]
        )
        self.db["notes"].insert_many(
            [{"_id": f"n{i}", "text": f"note {i}"} for i in range(1, INITIAL_ROWS + 1)]
        )

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self._one()
                time.sleep(0.01)
            except pymongo.errors.PyMongoError:
                self.schema.errors += 1
                self.halt.wait(0.5)
        self.client.close()

    def _one(self) -> None:
        rnd, w = self.rnd, self.schema.writes
        some = rnd.randrange(1, self.next_id)
        orders, notes = self.db["orders"], self.db["notes"]
        if time.monotonic() - self.last_ddl > self.ddl_every and self.fields < 8:
            self.last_ddl = time.monotonic()
            self.fields += 1
            orders.update_many({"_id": {"$mod": [5, 0]}}, {"$set": {f"f{self.fields}": self.fields}})
            w["new field"] += 1
            return
        r = rnd.random()
        if r < 0.004:
            notes.update_one({"_id": f"n{some}"}, {"$set": {"big": big_value(rnd)}})
            w["~1 MB value"] += 1
        elif r < 0.006:
            notes.update_many({"big": {"$exists": True}}, {"$unset": {"big": ""}})
            w["update"] += 1
        elif r < 0.35:
            self.next_id += 1
            orders.insert_one({"_id": self.next_id, "qty": 1, "customer": {"name": f"c{self.next_id}"}})
            notes.insert_one({"_id": f"n{self.next_id}", "text": f"r{r:.6f}"})
            w["insert"] += 2
        elif r < 0.65:
            orders.update_one(
                {"_id": some}, {"$inc": {"qty": 1}, "$set": {"customer.tier": rnd.randrange(5)}}
            )
            w["update"] += 1
        elif r < 0.75:
            notes.replace_one({"_id": f"n{some}"}, {"text": f"replaced {r:.6f}", "n": some})
            w["update"] += 1
        else:
            rnd.choice((orders, notes)).delete_one({"_id": some if rnd.random() < 0.5 else f"n{some}"})
            w["delete"] += 1


# -- faults ---------------------------------------------------------------------------------------------
@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    outages: Counter[str] = field(default_factory=Counter)
    terminated: int = 0
    disk_full: int = 0
    unexpected_master_exits: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_faults(rnd: random.Random, args: argparse.Namespace, disk: bool) -> list[tuple[float, str]]:
    """The fault schedule, from the seed alone: (seconds into the run, fault)."""
    events: list[tuple[float, str]] = []
    t = 5.0
    while True:
        t += rnd.expovariate(1 / args.kill_interval)
        if t >= args.duration:
            break
        events.append((t, "kill-master" if rnd.random() < 0.25 else "kill-child"))
    others = ["terminate"] * max(1, int(args.duration // 60))
    if not args.no_db_outages:
        # each database stopped at least once, more often when the run is long enough
        each = max(1, int(args.duration // (args.outage * 6 + 60)))
        others += ["stop-postgresql", "stop-mariadb"] * each
    if disk:
        others += ["disk-full"] * max(1, int(args.duration // 300))
    # spread evenly in the first 85 % of the run (the last outage must end before the load stops), jittered
    rnd.shuffle(others)
    span = max(args.duration * 0.85 - args.outage, 1.0)
    for i, kind in enumerate(others):
        events.append(((i + rnd.random()) * span / len(others), kind))
    return sorted(events)


class Torture:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run_id = uuid.uuid4().hex[:6]
        self.home = tempfile.mkdtemp(prefix=f"torture-{self.run_id}-", dir="/tmp")
        self.state_root = os.path.join(self.home, "state")
        os.makedirs(self.state_root)
        self.mounted = False
        self.rnd = random.Random(args.seed)
        self.halt = threading.Event()
        self.tally = Tally()
        self.schemas: list[Schema] = []
        self.daemons: dict[str, Daemon] = {}
        self.logs: list[str] = []
        self.writers: list[threading.Thread] = []
        self.mongo_server: subprocess.Popen[str] | None = None
        self.mongo_uri = ""
        self.created_mariadb: list[str] = []
        self.created_mongo: list[str] = []
        self.mariadb: MariaDBServer | None = None
        self.postgres: PostgresCluster | None = None
        self.restore_lock = threading.Lock()  # an outage and the final restore never interleave

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        if not self.args.no_db_outages:
            self.mariadb, self.postgres = MariaDBServer.discover(), PostgresCluster.discover()
        self._mount_state()
        names = [f"torture_{self.run_id}_{i}" for i in range(self.args.schemas)]
        for i, name in enumerate(names):
            schema = Schema(name, "mariadb", "mariadb")
            writer = MariaDBWriter(schema, self.args.seed * 1000 + i, self.halt, self.args.ddl_interval)
            self.created_mariadb.append(name)
            writer.create()
            self.schemas.append(schema)
            self.writers.append(writer)
        self.mongo_server, uri = start_test_server()
        self.mongo_uri = uri
        mongo = Schema(f"torture_{self.run_id}_m", "mongodb", "mongodb")
        mwriter = MongoWriter(mongo, uri, self.args.seed * 1000 + 999, self.halt, self.args.ddl_interval)
        self.created_mongo.append(mongo.name)
        mwriter.create()
        self.schemas.append(mongo)
        self.writers.append(mwriter)
        source = f'"mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}"'
        self._daemon("mariadb", source, [s.name for s in self.schemas if s.kind == "mariadb"])
        self._daemon("mongodb", f'"{uri}"', [mongo.name])
        for d in self.daemons.values():
            self._start(d)

    def _mount_state(self) -> None:
        if os.geteuid() != 0 or not shutil.which("mount"):
            self.tally.skipped.append("disk full (needs root and mount): state directory on the normal disk")
            return
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs_mb}m,mode=0700", "tmpfs", self.state_root],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            self.tally.skipped.append(f"disk full (mount failed: {result.stderr.strip()})")
            return
        self.mounted = True

    def _daemon(self, key: str, source: str, names: list[str]) -> None:
        d = Daemon(os.path.join(self.home, key))
        os.makedirs(d.home)
        d.state_dir = os.path.join(self.state_root, key)
        entries = "".join(f"  - name: {n}\n" for n in names)
        d.write_config(
            [],
            text=(
                f"source:\n  connection_string: {source}\n"
                f'destination:\n  connection_string: "{PG_DSN}"\n'
                f"state_dir: {d.state_dir}\n"
                "max_batch_latency_ms: 100\n"
                f"{RETRY}{SUPERVISOR}schemas:\n{entries}"
            ),
        )
        self.daemons[key] = d

    def _start(self, d: Daemon) -> None:
        d.start()
        self.logs.append(d.log_path)

    # -- the run ----------------------------------------------------------------------------------------
    def run(self) -> None:
        schedule = plan_faults(self.rnd, self.args, self.mounted)
        log(
            f"{len(schedule)} faults planned over {self.args.duration:.0f} s: "
            + ", ".join(f"{k} {n}" for k, n in Counter(k for _, k in schedule).items())
        )
        for writer in self.writers:
            writer.start()
        started = time.monotonic()
        outages = threading.Thread(target=self._outages, args=(schedule, started), daemon=True)
        outages.start()
        next_report = started + 30
        pending = [e for e in schedule if e[1] in ("kill-child", "kill-master")]
        while time.monotonic() - started < self.args.duration:
            self._watch_masters()
            now = time.monotonic() - started
            while pending and pending[0][0] <= now:
                _, kind = pending.pop(0)
                self._kill(kind)
            if time.monotonic() >= next_report:
                next_report += 30
                writes = sum(sum(s.writes.values()) for s in self.schemas)
                log(
                    f"{now:.0f} s: {writes} writes, kills {dict(self.tally.kills)}, "
                    f"outages {dict(self.tally.outages)}, terminated connections {self.tally.terminated}"
                )
            time.sleep(0.2)
        log("load time over: waiting for the last fault to end, then stopping the writers")
        self.halt.set()
        outages.join()
        for writer in self.writers:
            writer.join(60)

    def _outages(self, schedule: list[tuple[float, str]], started: float) -> None:
        for at, kind in schedule:
            if kind in ("kill-child", "kill-master"):
                continue
            if self.halt.wait(max(0.0, at - (time.monotonic() - started))):
                return
            try:
                self._fault(kind)
            except Exception as exc:  # noqa: BLE001 - a fault that cannot be done is reported, not fatal
                log(f"fault {kind} failed: {exc}")
                self.tally.skipped.append(f"{kind}: {exc}")

    def _fault(self, kind: str) -> None:
        seconds = self.args.outage
        if kind == "terminate":
            conn = pg_superuser()
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name LIKE %s",
                        (f"cartridge-warp torture_{self.run_id}_%",),
                    )
                    n = int(cur.fetchone()[0])
            finally:
                conn.close()
            self.tally.terminated += n
            log(f"terminated {n} destination connections (pg_terminate_backend)")
        elif kind == "disk-full":
            self._fill_disk(min(seconds, 30.0))
        elif kind == "stop-postgresql":
            assert self.postgres is not None
            self._outage("PostgreSQL", self.postgres.stop, self.postgres.ensure)
        elif kind == "stop-mariadb":
            assert self.mariadb is not None
            self._outage("MariaDB", self.mariadb.stop, self.mariadb.start)

    def _outage(self, what: str, stop_server: Callable[[], None], start_server: Callable[[], None]) -> None:
        seconds = self.args.outage
        with self.restore_lock:
            log(f"stopping {what} for {seconds:g} s")
            try:
                stop_server()
                self.halt.wait(seconds)
            finally:
                start_server()
        self.tally.outages[what] += 1
        log(f"{what} is back")

    def _fill_disk(self, seconds: float) -> None:
        junk = os.path.join(self.state_root, "junk")
        log(f"filling the state directory's tmpfs for {seconds:.0f} s")
        try:
            with open(junk, "wb") as f:
                chunk = b"\0" * (1 << 20)
                while True:
                    try:
                        f.write(chunk)
                        f.flush()
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
            self.halt.wait(seconds)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(junk)
        self.tally.disk_full += 1
        log("state directory freed")

    def _child_pids(self, d: Daemon) -> dict[str, int]:
        run = os.path.join(d.state_dir, "run")
        pids = {}
        for name in os.listdir(run) if os.path.isdir(run) else []:
            if name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    with open(os.path.join(run, name), encoding="utf-8") as handle:
                        pid = int(json.load(handle)["pid"])
                    if pid_alive(pid):
                        pids[name[: -len(".json")]] = pid
        return pids

    def _kill(self, kind: str) -> None:
        d = self.daemons[self.rnd.choice(sorted(self.daemons))]
        if kind == "kill-child":
            pids = self._child_pids(d)
            if not pids:
                log("kill -9 schema process: none running (restarting); skipped")
                return
            name = self.rnd.choice(sorted(pids))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[name], signal.SIGKILL)
            self.tally.kills[KILL_KINDS[0]] += 1
            log(f"kill -9 of {name}'s process {pids[name]}")
            return
        assert d.proc is not None
        children = self._child_pids(d)
        d.signal(signal.SIGKILL)
        d.wait(30)
        self.tally.kills[KILL_KINDS[1]] += 1
        log(f"kill -9 of the {os.path.basename(d.home)} master {d.proc.pid}")
        self._restart_like_systemd(d, children)

    def _restart_like_systemd(self, d: Daemon, children: dict[str, int]) -> None:
        """The children die with their master; what is left is killed (KillMode=mixed), then a restart."""
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in children.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in children.values():
            if pid_alive(pid):
                log(f"schema process {pid} outlived its master by 10 s: killed as systemd would")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(1)  # RestartSec
        self._start(d)

    def _watch_masters(self) -> None:
        for key, d in self.daemons.items():
            if d.proc is not None and d.proc.poll() is not None:
                rc = d.proc.returncode
                d.wait(1)
                errors = [line for line in d.output.splitlines() if " ERROR " in line]
                reason = errors[-1].split(" ERROR ", 1)[1].strip() if errors else "no ERROR line"
                log(
                    f"the {key} master exited by itself with {rc} ({reason}; log {d.log_path}); restarting it"
                )
                self.tally.unexpected_master_exits.append(f"{key} master, exit {rc}: {reason}")
                self._restart_like_systemd(d, self._child_pids(d))

    # -- catching up and verifying --------------------------------------------------------------------
    def catch_up_and_verify(self) -> dict[str, Any]:
        self.restore_databases()
        targets = self._binlog_end()
        deadline = time.monotonic() + self.args.catchup_timeout
        last: dict[str, Any] = {}
        caught_up = False
        while True:
            self._watch_masters()
            behind = self._behind(targets)
            last = self.verify()
            if not behind and last["rows_differing"] == 0:
                caught_up = True
                break
            if time.monotonic() >= deadline:
                break
            log(
                f"catching up: {len(behind)} MariaDB schemas behind the binlog end, "
                f"{last['rows_differing']} rows differing"
                + (f" ({last['errors'][0]})" if last["errors"] else "")
            )
            time.sleep(5)
        last["caught_up"] = caught_up
        last["behind"] = self._behind(targets)
        last.update(self.verify_checksums())
        return last

    def verify_checksums(self) -> dict[str, Any]:
        """``cartridge-warp verify`` (key-range checksums, docs/verify.md) of every schema, with its
        daemon's configuration: the product's own check, beside the row-by-row comparison above."""
        found: dict[str, Any] = {"verify_differing": 0, "verify_tables": 0, "verify_errors": []}
        for s in self.schemas:
            d = self.daemons[s.daemon]
            cmd = [sys.executable, "-m", "warpd", "verify", "--config", d.config_path, "--json"]
            done = subprocess.run(
                [*cmd, "--max-keys", "5", "--settle-timeout", "60", s.name],
                capture_output=True,
                text=True,
                timeout=max(600.0, self.args.catchup_timeout),
            )
            try:
                doc = json.loads(done.stdout)
            except ValueError:
                doc = None
            if done.returncode not in (0, 1) or doc is None:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                found["verify_errors"].append(f"{s.name}: verify exit {done.returncode}: {tail[:300]}")
                found["verify_differing"] += 1  # not verified is not equal
                continue
            for table in doc["tables"]:
                found["verify_tables"] += 1
                found["verify_differing"] += int(table["differing_keys"])
                if table["differing_keys"]:
                    found["verify_errors"].append(
                        f"{s.name}.{table['table']}: {table['differing_keys']} differing keys, "
                        f"first {table['keys']}"
                    )
        return found

    def _binlog_end(self) -> tuple[int, int]:
        conn = mysql_root()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW MASTER STATUS")
                file, pos = cur.fetchone()[:2]
        finally:
            conn.close()
        return int(str(file).rsplit(".", 1)[-1]), int(pos)

    def _behind(self, end: tuple[int, int]) -> list[str]:
        from warpd.state.store import StateStore

        behind = []
        store = StateStore(self.daemons["mariadb"].state_dir, read_only=True)
        try:
            for s in self.schemas:
                if s.kind != "mariadb":
                    continue
                cp = store.checkpoint(s.name)
                if cp is None or (int(str(cp["file"]).rsplit(".", 1)[-1]), int(cp["pos"])) < end:
                    behind.append(s.name)
        finally:
            store.close()
        return behind

    def verify(self) -> dict[str, Any]:
        """Every table of every schema compared row by row with its destination copy."""
        from warpd.config.model import TableSettings
        from warpd.connectors.mongodb.source import MongoSource
        from warpd.connectors.mysql.source import MySQLSource
        from warpd.connectors.postgresql.destination import PostgresDestination
        from warpd.state.store import StateStore
        from warpd.verify import verify_table

        result: dict[str, Any] = {
            "rows_compared": 0,
            "rows_differing": 0,
            "tables": {},
            "errors": [],
            "dead_letters": 0,
        }
        dest = PostgresDestination(PG_DSN, application_name="torture verify")
        try:
            for s in self.schemas:
                store = StateStore(self.daemons[s.daemon].state_dir, read_only=True)
                source: Any
                try:
                    result["dead_letters"] += len(store.dead_letters(s.name))
                    if s.kind == "mariadb":
                        source = MySQLSource(
                            f"mysql://warp:warp@{MYSQL_HOST}:{MYSQL_PORT}/{s.name}", s.name, server_id=4243
                        )
                        shapes = {t: source.describe(t) for t in source.list_tables()}
                    else:
                        source = MongoSource(with_database(self.mongo_uri, s.name), s.name, s.name, {})
                        source.configure(lambda _t: TableSettings())
                        recorded = store.latest_schemas(s.name)
                        shapes = {t: recorded.get(t) for t in source.list_tables()}
                    for table, shape in shapes.items():
                        key = f"{s.name}.{table}"
                        if shape is None:
                            result["errors"].append(f"{key}: no shape recorded yet")
                            result["rows_differing"] += 1
                            continue
                        diff = verify_table(
                            source, dest, dest.plan(shape, s.name, soft_delete=False, metadata=False)
                        )
                        differing = len(diff.missing) + len(diff.extra) + len({d[0] for d in diff.different})
                        result["rows_compared"] += diff.source_rows
                        result["rows_differing"] += differing
                        result["tables"][key] = {
                            "rows": diff.source_rows,
                            "differing": differing,
                            "summary": None if diff.equal else diff.summary(limit=10),
                        }
                    source.close()
                except (psycopg2.Error, pymysql.err.MySQLError, pymongo.errors.PyMongoError) as exc:
                    result["errors"].append(f"{s.name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
                    result["rows_differing"] += 1  # not verified is not equal
                finally:
                    store.close()
        finally:
            dest.close()
        return result

    # -- the way out ------------------------------------------------------------------------------------
    def restore_databases(self) -> None:
        """Start any database this run stopped; idempotent, and waits for an outage in progress."""
        self.halt.set()
        with self.restore_lock:
            if self.postgres is not None and not postgres_answers():
                log("starting PostgreSQL again")
                self.postgres.ensure()
            if self.mariadb is not None and not mariadb_answers():
                log("starting MariaDB again")
                self.mariadb.start()

    def cleanup(self, keep: bool) -> None:
        self.halt.set()
        for writer in self.writers:
            if writer.is_alive():
                writer.join(30)
        self.restore_databases()
        for d in self.daemons.values():
            children = self._child_pids(d)
            if d.alive():
                with contextlib.suppress(Exception):
                    d.stop(timeout=40)
            for pid in children.values():
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
        if self.mongo_server is not None:
            if keep:
                log(f"MongoDB test server left running at {self.mongo_uri} (pid {self.mongo_server.pid})")
            else:
                stop(self.mongo_server, "the MongoDB test server")
        if not keep:
            self._drop()
        if self.mounted:
            subprocess.run(["umount", "-l", self.state_root], check=False)
            self.mounted = False

    def _drop(self) -> None:
        # another user of the machine may be restarting a database right now: give it two minutes
        deadline = time.monotonic() + 120
        while not (mariadb_answers() and postgres_answers()) and time.monotonic() < deadline:
            time.sleep(1)
        try:
            conn = mysql_root()
            with conn.cursor() as cur:
                for name in self.created_mariadb:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()
        except pymysql.err.MySQLError as exc:
            log(f"could not drop the MariaDB databases {self.created_mariadb}: {exc}")
        try:
            pg = pg_superuser()
            with pg.cursor() as cur:
                for name in self.created_mariadb + self.created_mongo:
                    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
            pg.close()
        except psycopg2.Error as exc:
            log(f"could not drop the PostgreSQL schemas: {exc}")


# -- reporting ------------------------------------------------------------------------------------------
def report(t: Torture, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    tally = t.tally
    summary = {
        "seed": t.args.seed,
        "duration_s": t.args.duration,
        "wall_s": round(seconds),
        "schemas": [
            {"name": s.name, "kind": s.kind, "writes": dict(s.writes), "write_errors": s.errors}
            for s in t.schemas
        ],
        "kills": dict(tally.kills),
        "kills_total": sum(tally.kills.values()),
        "outages_survived": dict(tally.outages),
        "outage_seconds": t.args.outage,
        "connections_terminated": tally.terminated,
        "disk_full": tally.disk_full,
        "unexpected_master_exits": tally.unexpected_master_exits,
        "skipped": tally.skipped,
        **result,
    }
    ok = (
        result.get("caught_up")
        and result["rows_differing"] == 0
        and result["dead_letters"] == 0
        and result.get("verify_differing", 1) == 0
    )
    summary["ok"] = bool(ok)
    out = sys.stderr if QUIET_STDOUT else sys.stdout
    lines = [
        f"seed: {t.args.seed}",
        f"writes: {sum(sum(s.writes.values()) for s in t.schemas)} "
        f"({dict(sum((s.writes for s in t.schemas), Counter()))})",
        f"kills done: {summary['kills_total']} ({dict(tally.kills)})",
        f"outages survived: {sum(tally.outages.values())} ({dict(tally.outages)}, {t.args.outage:g} s each)",
        f"destination connections terminated: {tally.terminated}",
        f"state directory filled: {tally.disk_full} times",
        f"unexpected master exits (restarted): {len(tally.unexpected_master_exits)}",
        *(f"  {n} x {w}" for w, n in Counter(tally.unexpected_master_exits).most_common()),
        *(f"skipped: {s}" for s in tally.skipped),
        f"caught up: {'yes' if result.get('caught_up') else 'NO, behind: ' + ', '.join(result.get('behind', []))}",
        f"dead letters: {result['dead_letters']}",
        f"rows compared: {result['rows_compared']}",
        f"rows differing: {result['rows_differing']}",
        *(f"  {v['summary']}" for v in result["tables"].values() if v["summary"]),
        *(f"  {e}" for e in result["errors"]),
        f"cartridge-warp verify (checksums): {result.get('verify_tables', 0)} tables, "
        f"{result.get('verify_differing', '?')} keys differing",
        *(f"  {e}" for e in result.get("verify_errors", [])),
    ]
    print("\n".join(lines), file=out, flush=True)
    if QUIET_STDOUT:
        print(json.dumps(summary, default=str))
    return summary


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--duration", type=float, default=180, help="seconds of load and faults (default 180)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault schedule and the load (printed)")
    p.add_argument(
        "--schemas", type=int, default=2, help="MariaDB schemas (plus one MongoDB schema); default 2"
    )
    p.add_argument(
        "--outage", type=float, default=60, help="seconds each database stays stopped (default 60)"
    )
    p.add_argument(
        "--kill-interval", type=float, default=10, help="mean seconds between kill -9s (default 10)"
    )
    p.add_argument(
        "--ddl-interval", type=float, default=45, help="seconds between a writer's DDL (default 45)"
    )
    p.add_argument(
        "--no-db-outages", action="store_true", help="never stop the machine's PostgreSQL and MariaDB"
    )
    p.add_argument(
        "--catchup-timeout", type=float, default=300, help="seconds to wait for catching up (default 300)"
    )
    p.add_argument(
        "--tmpfs-mb", type=int, default=64, help="size of the state directory's tmpfs (default 64)"
    )
    p.add_argument("--keep", action="store_true", help="keep the databases and logs (for a post-mortem)")
    p.add_argument("--json", action="store_true", help="progress on stderr, a JSON summary on stdout")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**6)
    return args


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI timeout, a ``kill``) takes the same way out as Ctrl-C: restore, clean up."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    global QUIET_STDOUT
    args = parse(argv)
    QUIET_STDOUT = args.json
    log(
        f"seed {args.seed}: {args.schemas} MariaDB schemas + 1 MongoDB schema, {args.duration:g} s, "
        f"outages {'off' if args.no_db_outages else f'{args.outage:g} s'}, kill every ~{args.kill_interval:g} s"
    )
    started = time.monotonic()
    t = Torture(args)
    ok = False
    try:
        with sigterm_as_interrupt():
            try:
                t.setup()
            except (DemoFailed, psycopg2.Error, pymysql.err.MySQLError, AssertionError, OSError) as exc:
                log(f"set-up failed: {exc}")
                return 2
            log(f"run directory {t.home} (logs: {', '.join(t.logs)})")
            t.run()
            result = t.catch_up_and_verify()
            ok = report(t, result, time.monotonic() - started)["ok"]
    except KeyboardInterrupt:
        log("interrupted: restoring the databases and cleaning up")
    finally:
        # a second Ctrl-C or SIGTERM must not cut the restore of a stopped database short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        t.cleanup(keep=args.keep)
        if ok and not args.keep:
            shutil.rmtree(t.home, ignore_errors=True)
        else:
            log(f"logs kept in {t.home}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

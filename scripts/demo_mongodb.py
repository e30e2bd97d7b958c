#!/usr/bin/env python3
"""End-to-end demo, MongoDB part: a generated ``ecommerce`` database replicated live into PostgreSQL.

This machine has no MongoDB server, so the demo runs the project's MongoDB wire-protocol test server
(``python -m tests.mongo_wire``, a single-node replica set ``rs0`` held in memory) on a free port.
With a real replica set, point ``--source`` at it instead; nothing else changes.

1. starts the test server and creates the database ``ecommerce``: products (ObjectId ``_id``, nested
   ``specs``, tag arrays, Decimal128 prices, dates), orders with embedded line arrays, and users,
2. starts ``cartridge-warp --mode single`` (snapshot, then the change stream) with ``flatten_depth: 1``,
3. makes live changes: inserts, updates (one of which changes a field's type, so its column widens,
   and one adds a field), deletes and a new collection,
4. waits until every collection equals its PostgreSQL table (``tests/mongo_support.mongo_converged``),
   shows a few rows and the schema versions recorded in the state file,
5. stops cartridge-warp with SIGTERM, then the test server (its data goes with it).

The PostgreSQL schema ``ecommerce`` (database ``warp_demo``) is left for you to look at.
Run by ``scripts/demo.py`` after the MariaDB part; runs alone too.
Environment: WARP_DEMO_PRODUCTS (products to generate, default 3000).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.destinations import PostgresUnderTest  # noqa: E402
from tests.mongo_support import Backend, MongoDatabases, mongo_converged, with_database  # noqa: E402
from warpd.state.store import StateStore  # noqa: E402

DB = "ecommerce"
DESTINATION = "postgresql://warp:warp@127.0.0.1:5432/warp_demo"
PRODUCTS = int(os.environ.get("WARP_DEMO_PRODUCTS", "3000"))
USERS = max(1, PRODUCTS // 3)
ORDERS = max(1, PRODUCTS * 2 // 3)
COLLECTIONS = ("products", "orders", "users")  # what create_source makes; live_changes adds reviews
FLATTEN_DEPTH = 1
CONFIG = f"""\
# written by scripts/demo_mongodb.py; --source and --destination come from the command line
flatten_depth: {FLATTEN_DEPTH}      # specs.color -> column specs__color; deeper documents stay jsonb
snapshot_chunk_size: 1000
max_batch_latency_ms: 100
"""


class DemoDatabases(MongoDatabases):
    """The demo's MongoDB database and PostgreSQL schema, both ``ecommerce``.

    A :class:`tests.mongo_support.MongoDatabases` with a fixed name and the demo's PostgreSQL
    database, so ``mongo_converged`` compares them exactly as the tests do.
    """

    def __init__(self, uri: str):
        # not super().__init__: that one picks a random name and the test database warp_test
        import pymongo

        self.backend = Backend("wire", uri)
        self.name = DB
        self.source_uri = with_database(uri, DB)
        self.dest_uri = DESTINATION
        self.client = pymongo.MongoClient(uri, tz_aware=True)
        self.db = self.client[DB]
        self.pg = psycopg2.connect(DESTINATION)
        self.pg.autocommit = True
        self.dest = PostgresUnderTest(DB, DESTINATION)

    def close(self) -> None:
        """Drop the MongoDB database; keep the PostgreSQL schema for the user."""
        try:
            self.client.drop_database(DB)
        finally:
            self.client.close()
            self.pg.close()
            self.dest.close()


class DemoFailed(Exception):
    """Something did not converge or a process failed; the message says what."""


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def start_test_server() -> tuple[subprocess.Popen[str], str]:
    """``python -m tests.mongo_wire`` on a port the OS picks; returns the process and its URI."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo_wire", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    uri = proc.stdout.readline().strip() if ready else ""
    if not uri.startswith("mongodb://"):
        stop(proc, "the MongoDB test server")
        raise DemoFailed("the MongoDB wire test server did not start (no URI printed within 30 s)")
    return proc, uri


def stop(proc: subprocess.Popen[Any], what: str, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"    {what} did not stop within {timeout:.0f} s; killing it", flush=True)
        proc.kill()
        return proc.wait()


def reset_destination() -> None:
    with psycopg2.connect(DESTINATION) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(DB)))
    conn.close()


def when(rnd: random.Random, start: dt.datetime, days: int) -> dt.datetime:
    # MongoDB dates hold milliseconds
    return start + dt.timedelta(milliseconds=rnd.randrange(days * 86_400_000))


def create_source(m: DemoDatabases) -> None:
    from bson import Decimal128, ObjectId

    rnd = random.Random(42)
    colors = ["black", "white", "red", "teal", "oak"]
    words = ["Lamp", "Kettle", "Chair", "Backpack", "Headphones", "Mug", "Desk", "Bike light", "Jacket"]
    tags = ["new", "sale", "eco", "gift", "bestseller", "refurbished"]
    base = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    products = [
        {
            "_id": ObjectId(),
            "sku": f"P-{i:05d}",
            "name": f"{rnd.choice(words)} {i}" + (" ✨" if i % 10 == 0 else ""),
            "price": Decimal128(Decimal(rnd.randint(199, 99999)) / 100),
            "specs": {
                "color": rnd.choice(colors),
                "weight_g": rnd.randint(50, 9000),
                "dimensions": {"w": rnd.randint(5, 120), "h": rnd.randint(5, 120), "d": rnd.randint(1, 60)},
            },
            "tags": rnd.sample(tags, rnd.randint(0, 3)),
            "stock": rnd.randint(0, 500),
            "created_at": when(rnd, base, 700),
        }
        for i in range(1, PRODUCTS + 1)
    ]
    users = [
        {
            "_id": ObjectId(),
            "email": f"user{i}@example.com",
            "name": f"{rnd.choice(['Ada', 'Grace', 'Zoë', 'Søren', 'Kenji', 'Ama', '李雷'])} {i}",
            "address": {
                "city": rnd.choice(["Berlin", "Accra", "Osaka", "Lyon"]),
                "zip": f"{rnd.randint(0, 99999):05d}",
            },
            "signed_up": when(rnd, base, 700),
            "newsletter": rnd.random() < 0.3,
        }
        for i in range(1, USERS + 1)
    ]
    orders = []
    for _ in range(ORDERS):
        lines = [
            {"product_id": p["_id"], "sku": p["sku"], "qty": rnd.randint(1, 4), "unit_price": p["price"]}
            for p in rnd.sample(products, rnd.randint(1, 4))
        ]
        total = sum(Decimal(line["qty"]) * line["unit_price"].to_decimal() for line in lines)
        orders.append(
            {
                "_id": ObjectId(),
                "user_id": rnd.choice(users)["_id"],
                "status": rnd.choice(["new", "paid", "shipped"]),
                "lines": lines,
                "total": Decimal128(total),
                "placed_at": when(rnd, base + dt.timedelta(days=700), 60),
            }
        )
    for name, docs in (("products", products), ("users", users), ("orders", orders)):
        m.db[name].insert_many(docs)


def live_changes(m: DemoDatabases) -> None:
    from bson import Decimal128, ObjectId

    rnd = random.Random(7)
    db = m.db
    first = [p["_id"] for p in db.products.find({}, {"_id": 1}).sort("_id", 1).limit(3)]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    db.products.insert_many(
        [
            {
                "_id": ObjectId(),
                "sku": f"P-N{i:04d}",
                "name": f"Live product {i}",
                "price": Decimal128(f"{rnd.randint(199, 9999) / 100:.2f}"),
                "specs": {
                    "color": "green",
                    "weight_g": rnd.randint(50, 900),
                    "dimensions": {"w": 1, "h": 2, "d": 3},
                },
                "tags": ["new"],
                "stock": 10,
                "created_at": now,
            }
            for i in range(1, 201)
        ]
    )
    # an integer field gets a fractional value: column specs__weight_g widens integer -> double precision
    db.products.update_one({"_id": first[0]}, {"$set": {"specs.weight_g": 1250.5, "tags": ["sale", "gift"]}})
    # a field no document had: a new column
    db.products.update_many({"_id": {"$in": first[1:]}}, {"$set": {"rating": 4.5}})
    db.products.update_many(
        {"stock": {"$lt": 20}}, {"$inc": {"stock": 100}, "$addToSet": {"tags": "restocked"}}
    )
    db.orders.update_many({"status": "paid"}, {"$set": {"status": "shipped", "shipped_at": now}})
    doomed = [p["_id"] for p in db.products.find({}, {"_id": 1}).sort("_id", -1).limit(50)]
    db.products.delete_many({"_id": {"$in": doomed}})
    db.users.delete_many({"newsletter": False, "address.city": "Lyon"})
    # a collection that did not exist when cartridge-warp started
    products = [p["_id"] for p in db.products.find({}, {"_id": 1}).limit(100)]
    db.reviews.insert_many(
        [
            {"_id": ObjectId(), "product_id": rnd.choice(products), "stars": rnd.randint(1, 5), "text": "ok"}
            for _ in range(300)
        ]
    )


def wait_for(what: str, check: Callable[[], bool], warp: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if warp.poll() is not None:
            raise DemoFailed(f"cartridge-warp exited with status {warp.returncode} while waiting for {what}")
        if check():
            return
        time.sleep(0.5)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def converged(m: DemoDatabases, state_dir: str, last: list[str]) -> bool:
    try:
        last[:] = mongo_converged(m, state_dir, flatten_depth=FLATTEN_DEPTH)
    except Exception as exc:  # noqa: BLE001 - e.g. a table being created right now; try again
        last[:] = [f"{type(exc).__name__}: {exc}"]
    return not last


def snapshot_done(state_dir: str) -> bool:
    store = StateStore(state_dir)
    try:
        progress = store.snapshot_progress(DB)
        return set(progress) == set(COLLECTIONS) and all(p.status == "done" for p in progress.values())
    finally:
        store.close()


def psql_text(value: Any) -> str:
    """A value as psql prints it (json as PostgreSQL writes jsonb, floats shortest, NULL empty)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def psql_table(cur: Any) -> list[str]:
    """The rows of ``cur`` laid out the way psql prints them (numbers right-aligned)."""
    names = [d.name for d in cur.description]
    rows = cur.fetchall()
    cells = [[psql_text(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(r[i], (int, float, Decimal)) or r[i] is None for r in rows) for i in range(len(names))
    ]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    lines = [" | ".join(n.center(w) for n, w in zip(names, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for r in cells:
        lines.append(
            " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)
            ).rstrip()
        )
    lines.append(f"({len(rows)} rows)")
    return lines


SAMPLE_FIELDS = ("_id", "name", "price", "specs", "tags", "rating")
SAMPLE_COLUMNS = (
    "_id",
    "name",
    "price",
    "specs__color",
    "specs__weight_g",
    "specs__dimensions",
    "tags",
    "rating",
)


def show_sample(m: DemoDatabases) -> None:
    from bson import json_util

    say("side by side: three products in MongoDB and as a user queries them in psql")
    projection = dict.fromkeys(SAMPLE_FIELDS, 1)
    print(
        f"    mongosh ecommerce> db.products.find({{}}, {json.dumps(projection)}).sort({{_id: 1}}).limit(3)"
    )
    for doc in m.db.products.find({}, projection).sort("_id", 1).limit(3):
        print("    " + json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS, ensure_ascii=False))
    print(f"\n    psql warp_demo=> SELECT {', '.join(SAMPLE_COLUMNS)}")
    print(f"                     FROM {DB}.products ORDER BY _id LIMIT 3;")
    with m.pg.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY _id LIMIT 3").format(
                sql.SQL(", ").join(map(sql.Identifier, SAMPLE_COLUMNS)), sql.Identifier(DB, "products")
            )
        )
        for line in psql_table(cur):
            print("    " + line)
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'products' ORDER BY ordinal_position",
            (DB,),
        )
        print(f"\n    columns of {DB}.products: " + ", ".join(f"{n} {t}" for n, t in cur.fetchall()))


def show_schema_history(state_dir: str) -> None:
    store = StateStore(state_dir)
    try:
        history = store.schema_history(DB)
    finally:
        store.close()
    say(f"schema versions recorded in the state file ({len(history)}; StateStore.schema_history)")
    for h in history:
        detail = h["statement"] or f"{len(h['columns'])} columns"
        print(f"    {h['table']:<9} v{h['version']}  {h['change']:<13} {detail}")


def replicate(m: DemoDatabases, warp: subprocess.Popen[Any], state_dir: str) -> None:
    """Wait for the snapshot, make live changes, wait until the copy matches again."""
    wait_for("the snapshot", lambda: snapshot_done(state_dir), warp, timeout=90)
    problems: list[str] = []
    try:
        wait_for("the snapshot to match", lambda: converged(m, state_dir, problems), warp, timeout=30)
        counts = {c: m.db[c].count_documents({}) for c in COLLECTIONS}
        say(f"snapshot complete and verified document by document: {counts}")
        say(
            "making live changes in MongoDB: 200 inserts; updates (specs.weight_g int -> double, a new "
            "field 'rating', $inc, $addToSet, $set); 50 product and some user deletes; a new collection "
            "'reviews'"
        )
        live_changes(m)
        say("waiting until every collection equals its PostgreSQL table")
        wait_for("the live changes", lambda: converged(m, state_dir, problems), warp, timeout=60)
    except DemoFailed as exc:
        for p in problems:
            print("    MISMATCH " + p, flush=True)
        raise DemoFailed(f"{exc}: PostgreSQL does not match MongoDB") from None
    for coll in sorted(m.db.list_collection_names()):
        print(f"    {coll}: identical ({m.db[coll].count_documents({}):,} documents)")


def main() -> int:
    say(
        "MongoDB -> PostgreSQL. There is no MongoDB server on this machine: starting the project's MongoDB "
        "wire-protocol test server (tests/mongo_wire, an in-memory single-node replica set) instead"
    )
    try:
        server, uri = start_test_server()
    except DemoFailed as exc:
        print(f"\ndemo (MongoDB): FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    source = f"mongodb://127.0.0.1:{urlsplit(uri).port}/{DB}?replicaSet=rs0"
    print(f"    test server at {uri}; with a real replica set, point --source at it instead, e.g.")
    print(f"    --source 'mongodb://USER:PASSWORD@HOST:27017/{DB}?replicaSet=rs0'", flush=True)
    work = tempfile.mkdtemp(prefix="warp-demo-mongo-")
    state_dir = os.path.join(work, "state")
    config = os.path.join(work, "config.yaml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(CONFIG)
    m: DemoDatabases | None = None
    warp: subprocess.Popen[Any] | None = None
    try:
        m = DemoDatabases(uri)
        say(
            f"creating MongoDB database {DB} with {PRODUCTS:,} products, {USERS:,} users and {ORDERS:,} "
            "orders"
        )
        create_source(m)
        reset_destination()
        warp_cmd = [
            *(sys.executable, "-m", "warpd", "--mode", "single", "--source", source),
            *("--destination", DESTINATION, "--schema", DB),
            *("--state-dir", state_dir, "--config", config),
        ]
        say("starting: cartridge-warp " + " ".join(warp_cmd[3:]).replace(":warp@", ":***@"))
        print(
            "    config.yaml:\n" + "".join(f"      {line}\n" for line in CONFIG.splitlines()[1:]), flush=True
        )
        warp = subprocess.Popen(warp_cmd, cwd=ROOT)
        replicate(m, warp, state_dir)
        show_sample(m)
        show_schema_history(state_dir)
        say("MongoDB demo succeeded: PostgreSQL matches MongoDB; stopping cartridge-warp (SIGTERM)")
        rc = stop(warp, "cartridge-warp")
        print(f"cartridge-warp exited with status {rc}", flush=True)
        if rc != 0:
            raise DemoFailed(f"cartridge-warp exited with status {rc} on SIGTERM (0 expected)")
    except DemoFailed as exc:
        print(f"\ndemo (MongoDB): FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if warp is not None and warp.poll() is None:
            stop(warp, "cartridge-warp")
        if m is not None:
            m.close()
        server_rc = stop(server, "the MongoDB test server")
        print(f"MongoDB test server exited with status {server_rc}; its in-memory data is gone", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"    the copy stays in PostgreSQL: psql -h 127.0.0.1 -U warp warp_demo -c 'TABLE {DB}.products'")
    return 0


if __name__ == "__main__":
    sys.exit(main())

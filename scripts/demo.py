#!/usr/bin/env python3
"""End-to-end demo: generated MariaDB and MongoDB databases replicated live into PostgreSQL.

MariaDB part (this file):

1. creates the MariaDB database ``warp_demo`` with three tables of sample data,
2. starts ``cartridge-warp --mode single`` in the background (snapshot, then binlog),
3. makes live changes (inserts, updates, deletes, an ALTER TABLE),
4. waits until PostgreSQL holds exactly the same rows, and shows them side by side,
5. stops cartridge-warp with SIGTERM.

MongoDB part (scripts/demo_mongodb.py, run afterwards): the same for a generated ``ecommerce``
database served by the project's MongoDB wire-protocol test server, since this machine has no MongoDB.

Needs the local databases configured by scripts/setup-databases.sh (``make demo`` runs it).
Environment: WARP_DEMO_ROWS (orders to generate, default 50000), WARP_DEMO_PRODUCTS (MongoDB
products, default 3000).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import demo_mongodb  # scripts/demo_mongodb.py, next to this file
import psycopg2
import pymysql
from psycopg2 import sql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from warpd.connectors.mysql.connection import qualified  # noqa: E402
from warpd.connectors.mysql.source import MySQLSource  # noqa: E402
from warpd.connectors.postgresql.destination import PostgresDestination  # noqa: E402
from warpd.verify import verify_table  # noqa: E402

DB = "warp_demo"
SOURCE = f"mysql://warp:warp@127.0.0.1:3306/{DB}"
DESTINATION = f"postgresql://warp:warp@127.0.0.1:5432/{DB}"
ORDERS = int(os.environ.get("WARP_DEMO_ROWS", "50000"))


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def mysql() -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4", autocommit=True
    )


def create_source() -> None:
    rnd = random.Random(42)
    with mysql().cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        cur.execute(f"USE {DB}")
        cur.execute("""CREATE TABLE customers (
            id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200),
            country CHAR(2), vip TINYINT(1) NOT NULL DEFAULT 0, balance DECIMAL(12,2),
            signed_up DATETIME(6), last_seen TIMESTAMP NULL)""")
        cur.execute("""CREATE TABLE products (
            sku VARCHAR(32) PRIMARY KEY, title VARCHAR(200) NOT NULL, price DECIMAL(10,2) NOT NULL,
            tags SET('new','sale','eco','gift'), weight_kg FLOAT, photo BLOB)""")
        cur.execute("""CREATE TABLE orders (
            id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
            sku VARCHAR(32) NOT NULL, quantity SMALLINT NOT NULL, total DECIMAL(14,2) NOT NULL,
            status ENUM('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new',
            placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), details JSON)""")
        names = ["Ada", "Grace", "Linus", "Zoë", "Søren", "Nadia", "Kenji", "Ama", "Émile", "李雷"]
        cur.executemany(
            "INSERT INTO customers (name, email, country, vip, balance, signed_up, last_seen) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s)",
            [
                (
                    f"{rnd.choice(names)} {i}",
                    f"user{i}@example.com",
                    rnd.choice(["DE", "FR", "JP", "GH", "BR"]),
                    rnd.random() < 0.1,
                    decimal.Decimal(rnd.randint(-10000, 1000000)) / 100,
                    dt.datetime(2020, 1, 1)
                    + dt.timedelta(seconds=rnd.randint(0, 10**8), microseconds=rnd.randint(0, 999999)),
                    None
                    if i % 7 == 0
                    else dt.datetime(2024, 1, 1) + dt.timedelta(seconds=rnd.randint(0, 10**7)),
                )
                for i in range(1, 5001)
            ],
        )
        cur.executemany(
            "INSERT INTO products VALUES (%s,%s,%s,%s,%s,%s)",
            [
                (
                    f"SKU-{i:05d}",
                    f"Product {i} 🚀" if i % 10 == 0 else f"Product {i}",
                    decimal.Decimal(rnd.randint(100, 99999)) / 100,
                    ",".join(rnd.sample(["new", "sale", "eco", "gift"], 2)),
                    round(rnd.random() * 20, 3),
                    bytes(rnd.getrandbits(8) for _ in range(16)),
                )
                for i in range(1, 501)
            ],
        )
        batch = []
        for i in range(1, ORDERS + 1):
            batch.append(
                (
                    rnd.randint(1, 5000),
                    f"SKU-{rnd.randint(1, 500):05d}",
                    rnd.randint(1, 9),
                    decimal.Decimal(rnd.randint(100, 500000)) / 100,
                    rnd.choice(["new", "paid", "shipped"]),
                    json.dumps(
                        {"channel": rnd.choice(["web", "app"]), "coupon": None if i % 3 else "WELCOME"}
                    ),
                )
            )
            if len(batch) == 5000:
                cur.executemany(
                    "INSERT INTO orders (customer_id, sku, quantity, total, status, details) "
                    "VALUES (%s,%s,%s,%s,%s,%s)",
                    batch,
                )
                batch = []
        if batch:
            cur.executemany(
                "INSERT INTO orders (customer_id, sku, quantity, total, status, details) "
                "VALUES (%s,%s,%s,%s,%s,%s)",
                batch,
            )


def reset_destination() -> None:
    with psycopg2.connect(DESTINATION) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {DB} CASCADE")


def live_changes() -> None:
    with mysql().cursor() as cur:
        cur.execute(f"USE {DB}")
        cur.execute(
            "INSERT INTO orders (customer_id, sku, quantity, total, status) "
            "SELECT customer_id, sku, quantity, total, 'new' FROM orders ORDER BY id LIMIT 1000"
        )
        cur.execute("UPDATE orders SET status = 'shipped' WHERE status = 'paid' AND id % 10 = 0")
        cur.execute("DELETE FROM orders WHERE id % 97 = 0")
        cur.execute("UPDATE customers SET balance = balance + 5, vip = 1 WHERE id <= 200")
        cur.execute("ALTER TABLE customers ADD COLUMN loyalty_points INT NOT NULL DEFAULT 0")
        cur.execute("UPDATE customers SET loyalty_points = id * 3 WHERE id % 2 = 0")
        cur.execute("UPDATE products SET sku = 'SKU-RENAMED' WHERE sku = 'SKU-00001'")


def counts() -> tuple[dict[str, int], dict[str, int]]:
    src, dst = {}, {}
    with mysql().cursor() as cur:
        for t in ("customers", "products", "orders"):
            cur.execute(f"SELECT COUNT(*) FROM {qualified(DB, t)}")  # noqa: S608 - quoted identifiers
            src[t] = cur.fetchone()[0]
    with psycopg2.connect(DESTINATION) as conn, conn.cursor() as cur:
        for t in ("customers", "products", "orders"):
            try:
                cur.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(sql.Identifier(DB, t)))
                dst[t] = cur.fetchone()[0]
            except psycopg2.Error:
                conn.rollback()
                dst[t] = 0
    return src, dst


def all_equal() -> list[str]:
    source = MySQLSource(SOURCE, DB, server_id=4242)
    problems = []
    dest = PostgresDestination(DESTINATION)
    try:
        for t in ("customers", "products", "orders"):
            plan = dest.plan(source.describe(t), DB, soft_delete=False, metadata=False)
            diff = verify_table(source, dest, plan)
            if not diff.equal:
                problems.append(diff.summary())
    finally:
        dest.close()
    source.close()
    if not problems:
        for t in ("customers", "products", "orders"):
            print(f"    {t}: identical")
    return problems


def wait_for(what: str, check, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    started = time.monotonic()
    if mariadb_demo() != 0:
        print("\ndemo: the MariaDB part failed (see above); the MongoDB part was not run", file=sys.stderr)
        return 1
    if demo_mongodb.main() != 0:
        print("\ndemo: the MongoDB part failed (see above)", file=sys.stderr)
        return 1
    say(
        f"demo finished in {time.monotonic() - started:.0f} s: MariaDB -> PostgreSQL and MongoDB -> PostgreSQL "
        "both replicated live and verified row for row"
    )
    return 0


def mariadb_demo() -> int:
    say(
        f"MariaDB -> PostgreSQL: creating MariaDB database {DB} with 5,000 customers, 500 products and {ORDERS:,} orders"
    )
    create_source()
    reset_destination()
    state_dir = tempfile.mkdtemp(prefix="warp-demo-state-")
    cmd = [
        sys.executable,
        "-m",
        "warpd",
        "--mode",
        "single",
        "--source",
        SOURCE,
        "--destination",
        DESTINATION,
        "--schema",
        DB,
        "--state-dir",
        state_dir,
    ]
    say("starting: cartridge-warp " + " ".join(cmd[3:]).replace(":warp@", ":***@"))
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        wait_for("the snapshot", lambda: (lambda s, d: s == d)(*counts()))
        src, _ = counts()
        say(f"snapshot complete: {src}")
        say(
            "making live changes at the source: 1,000 inserts, updates, deletes, a primary-key change, "
            "ALTER TABLE customers ADD COLUMN loyalty_points"
        )
        live_changes()
        wait_for("the live changes", lambda: (lambda s, d: s == d)(*counts()) and _has_column())
        say("comparing every row of every table, source vs destination")
        deadline = time.monotonic() + 60
        while (problems := all_equal()) and time.monotonic() < deadline:
            time.sleep(1.0)  # the last batch may still be in flight
        if problems:
            for p in problems:
                print("    MISMATCH " + p)
            return 1
        with psycopg2.connect(DESTINATION) as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, name, balance, vip, loyalty_points FROM {} ORDER BY id LIMIT 3").format(
                    sql.Identifier(DB, "customers")
                )
            )
            say("a few replicated rows in PostgreSQL (warp_demo.customers):")
            for row in cur.fetchall():
                print("    ", row)
        say(
            "MariaDB demo succeeded: PostgreSQL matches MariaDB row for row; stopping cartridge-warp (SIGTERM)"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"cartridge-warp exited with status {rc}")
    return 0 if rc == 0 else 1


def _has_column() -> bool:
    with psycopg2.connect(DESTINATION) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'customers' "
            "AND column_name = 'loyalty_points'",
            (DB,),
        )
        return cur.fetchone() is not None


if __name__ == "__main__":
    sys.exit(main())

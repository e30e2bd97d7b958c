"""The MySQL/MariaDB DDL parser: exact operations for each statement form.

Every statement in ``CASES`` is also run against the local MariaDB (unless
marked ``mariadb=False`` with a reason), so the parser is tested on syntax the
server really accepts, and the columns it reports are compared with what the
server then shows in ``information_schema``.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql
import pytest

from warpd.connectors.base import SchemaOpKind as K
from warpd.connectors.mysql.ddl import ColumnDef, DdlOp, ParsedDdl, classify, parse_ddl

# per process: the tests against MariaDB create and drop these, and other test processes (pytest-xdist
# workers, another checkout's run) may run this module at the same time
D = f"warp_t_ddl_{os.getpid()}"  # the session's default database
D2 = f"{D}_b"  # another database
D3 = f"{D}_c"  # created and dropped by a statement under test
LONG = "n" * 64  # the longest identifier MySQL allows


def col(
    name: str, type_sql: str, nullable: bool = True, generated: bool = False, charset: str | None = None
) -> ColumnDef:
    return ColumnDef(name, type_sql, nullable, generated, charset)


def op(kind: K, table: str = "t", database: str = D, **fields: object) -> DdlOp:
    return DdlOp(kind, database, table, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    ops: tuple[DdlOp, ...] = ()
    tables: tuple[tuple[str, str], ...] = ((D, "t"),)
    understood: bool = True
    truncates: tuple[tuple[str, str], ...] = ()
    primary_key_changed: bool = False
    statement: str | None = None
    databases: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    mariadb: str | None = ""  # why it is not run on MariaDB, or "" to run it


T = "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT, b VARCHAR(10), c TEXT, d INT)"
T_NO_KEY = "CREATE TABLE t (a INT, b VARCHAR(10))"
PARENT = "CREATE TABLE parent (id INT PRIMARY KEY)"
RANGE = (
    "CREATE TABLE t (id INT NOT NULL, PRIMARY KEY (id)) PARTITION BY RANGE (id) "
    "(PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE)"
)

CASES = [
    # ---------------------------------------------------------------- CREATE TABLE
    Case(
        "create-full",
        """
        CREATE TABLE IF NOT EXISTS t (
          id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
          name VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT 'x' COMMENT 'a, NOT NULL',
          price DECIMAL(65,30) DEFAULT NULL,
          state ENUM('a','b') NOT NULL DEFAULT 'a',
          created DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
          total INT AS (char_length(name)) VIRTUAL,
          doubled INT GENERATED ALWAYS AS (char_length(name) * 2) STORED,
          flags SET('x','y') DEFAULT 'x',
          KEY k_name (name),
          UNIQUE KEY u_state (state, name)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='t'""",
        ops=(
            op(
                K.CREATE_TABLE,
                if_exists=True,
                primary_key=("id",),
                columns=(
                    col("id", "BIGINT UNSIGNED", False),
                    col("name", "VARCHAR(20)", False, charset="utf8mb4"),
                    col("price", "DECIMAL(65, 30)"),
                    col("state", "ENUM('a', 'b')", False),
                    col("created", "DATETIME(6)", False),
                    col("total", "INT", generated=True),
                    col("doubled", "INT", generated=True),
                    col("flags", "SET('x', 'y')"),
                ),
            ),
        ),
        statement="CREATE TABLE",
    ),
    Case(
        "create-table-level-key",
        "CREATE TABLE t (a INT, b VARCHAR(5), c INT NULL, PRIMARY KEY (a, b))",
        ops=(
            op(
                K.CREATE_TABLE,
                primary_key=("a", "b"),
                columns=(col("a", "INT", False), col("b", "VARCHAR(5)", False), col("c", "INT")),
            ),
        ),
    ),
    Case(
        "create-constraint-key",
        """CREATE TABLE t (a INT, B INT NOT NULL,
           CONSTRAINT pk_t PRIMARY KEY USING BTREE (b DESC),
           CONSTRAINT fk_t FOREIGN KEY (a) REFERENCES parent (id) ON DELETE CASCADE,
           CONSTRAINT CHECK (a > 0))""",
        ops=(op(K.CREATE_TABLE, primary_key=("B",), columns=(col("a", "INT"), col("B", "INT", False))),),
        setup=(PARENT,),
    ),
    Case(
        "create-bare-key-attribute",
        "CREATE TABLE t (id INT KEY, v TEXT)",
        ops=(op(K.CREATE_TABLE, primary_key=("id",), columns=(col("id", "INT", False), col("v", "TEXT"))),),
    ),
    Case(
        "create-other-database",
        f"CREATE TABLE {D2}.t2 (id INT NOT NULL)",
        ops=(op(K.CREATE_TABLE, "t2", D2, columns=(col("id", "INT", False),)),),
        tables=((D2, "t2"),),
    ),
    Case(
        "create-or-replace",
        "CREATE OR REPLACE TABLE t (id INT PRIMARY KEY)",
        ops=(
            op(K.DROP_TABLE, if_exists=True),
            op(K.CREATE_TABLE, primary_key=("id",), columns=(col("id", "INT", False),)),
        ),
        setup=(T,),
    ),
    Case(
        "create-like",
        "CREATE TABLE t2 LIKE t",
        ops=(op(K.CREATE_TABLE, "t2", like=(D, "t")),),
        tables=((D, "t2"),),
        setup=(T,),
    ),
    Case(
        "create-like-parenthesised",
        f"CREATE TABLE IF NOT EXISTS {D2}.t2 (LIKE {D}.t)",
        ops=(op(K.CREATE_TABLE, "t2", D2, like=(D, "t"), if_exists=True),),
        tables=((D2, "t2"),),
        setup=(T,),
    ),
    Case(
        "create-as-select",
        "CREATE TABLE t2 AS SELECT id, a FROM t",
        understood=False,
        tables=((D, "t2"),),
        setup=(T,),
    ),
    Case(
        "create-columns-and-select",
        "CREATE TABLE t2 (x INT PRIMARY KEY) IGNORE SELECT id AS x FROM t",
        understood=False,
        tables=((D, "t2"),),
        setup=(T,),
    ),
    Case("create-select-no-as", "CREATE TABLE t2 SELECT 1 AS a", understood=False, tables=((D, "t2"),)),
    Case(
        "create-temporary", "CREATE TEMPORARY TABLE t (a INT)", tables=(), statement="CREATE TEMPORARY TABLE"
    ),
    Case(
        "create-partitioned",
        "CREATE TABLE t (id INT NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB "
        "PARTITION BY HASH (id) PARTITIONS 4",
        ops=(op(K.CREATE_TABLE, primary_key=("id",), columns=(col("id", "INT", False),)),),
    ),
    Case("create-system-versioned", "CREATE TABLE t (a INT) WITH SYSTEM VERSIONING", understood=False),
    Case(
        "create-options",
        "CREATE TABLE t (a INT) ENGINE=InnoDB ROW_FORMAT=DYNAMIC PAGE_COMPRESSED=1 "
        "AUTO_INCREMENT=5 STATS_PERSISTENT=0 COMMENT='SELECT'",
        ops=(op(K.CREATE_TABLE, columns=(col("a", "INT"),)),),
    ),
    Case(
        "create-types",
        """CREATE TABLE t (
           c1 TINYINT(1), c2 BOOL, c3 BOOLEAN NOT NULL, c4 SMALLINT(5) UNSIGNED, c5 MEDIUMINT, c6 INT(11),
           c7 INTEGER UNSIGNED, c8 BIGINT(20) UNSIGNED ZEROFILL, c9 INT1, c10 INT2, c11 INT3, c12 INT4,
           c13 INT8, c14 MIDDLEINT, c15 SERIAL, c16 DECIMAL, c17 DEC(10,2), c18 NUMERIC(5),
           c19 FIXED(4,1) UNSIGNED, c20 FLOAT, c21 FLOAT(7,3), c22 FLOAT(10), c23 FLOAT(30), c24 DOUBLE,
           c25 DOUBLE PRECISION, c26 REAL, c27 FLOAT4, c28 FLOAT8, c29 BIT, c30 BIT(12),
           c31 CHAR, c32 CHAR(36), c33 CHARACTER(2), c34 VARCHAR(255), c35 CHARACTER VARYING(3),
           c36 NCHAR(2), c37 NVARCHAR(4), c38 NATIONAL VARCHAR(3), c39 NATIONAL CHAR(1),
           c40 BINARY(16), c41 VARBINARY(10), c42 TINYTEXT, c43 TEXT, c44 MEDIUMTEXT, c45 LONGTEXT,
           c46 LONG, c47 LONG VARCHAR, c48 LONG VARBINARY, c49 TINYBLOB, c50 BLOB, c51 MEDIUMBLOB,
           c52 LONGBLOB, c53 DATE, c54 TIME(3), c55 DATETIME, c56 TIMESTAMP(6) NULL, c57 YEAR,
           c58 JSON, c59 ENUM('it''s', 'b\\'c', '中文'), c60 SET('a','b') NOT NULL,
           c61 CHAR(3) CHARACTER SET binary, c62 VARCHAR(3) BYTE, c63 TEXT CHARSET binary,
           c64 VARCHAR(3) ASCII, c65 VARCHAR(3) UNICODE, c66 VARCHAR(3) BINARY,
           c67 CHAR(2) CHARACTER SET 'latin1', c68 INT SIGNED, c69 DOUBLE(10,2) UNSIGNED)""",
        ops=(
            op(
                K.CREATE_TABLE,
                primary_key=(),
                columns=(
                    col("c1", "TINYINT(1)"),
                    col("c2", "TINYINT(1)"),
                    col("c3", "TINYINT(1)", False),
                    col("c4", "SMALLINT(5) UNSIGNED"),
                    col("c5", "MEDIUMINT"),
                    col("c6", "INT(11)"),
                    col("c7", "INT UNSIGNED"),
                    col("c8", "BIGINT(20) UNSIGNED"),
                    col("c9", "TINYINT"),
                    col("c10", "SMALLINT"),
                    col("c11", "MEDIUMINT"),
                    col("c12", "INT"),
                    col("c13", "BIGINT"),
                    col("c14", "MEDIUMINT"),
                    col("c15", "BIGINT UNSIGNED", False),
                    col("c16", "DECIMAL"),
                    col("c17", "DECIMAL(10, 2)"),
                    col("c18", "DECIMAL(5)"),
                    col("c19", "DECIMAL(4, 1) UNSIGNED"),
                    col("c20", "FLOAT"),
                    col("c21", "FLOAT(7, 3)"),
                    col("c22", "FLOAT"),
                    col("c23", "DOUBLE"),
                    col("c24", "DOUBLE"),
                    col("c25", "DOUBLE"),
                    col("c26", "DOUBLE"),
                    col("c27", "FLOAT"),
                    col("c28", "DOUBLE"),
                    col("c29", "BIT"),
                    col("c30", "BIT(12)"),
                    col("c31", "CHAR"),
                    col("c32", "CHAR(36)"),
                    col("c33", "CHAR(2)"),
                    col("c34", "VARCHAR(255)"),
                    col("c35", "VARCHAR(3)"),
                    col("c36", "CHAR(2)", charset="utf8mb3"),
                    col("c37", "VARCHAR(4)", charset="utf8mb3"),
                    col("c38", "VARCHAR(3)", charset="utf8mb3"),
                    col("c39", "CHAR(1)", charset="utf8mb3"),
                    col("c40", "BINARY(16)"),
                    col("c41", "VARBINARY(10)"),
                    col("c42", "TINYTEXT"),
                    col("c43", "TEXT"),
                    col("c44", "MEDIUMTEXT"),
                    col("c45", "LONGTEXT"),
                    col("c46", "MEDIUMTEXT"),
                    col("c47", "MEDIUMTEXT"),
                    col("c48", "MEDIUMBLOB"),
                    col("c49", "TINYBLOB"),
                    col("c50", "BLOB"),
                    col("c51", "MEDIUMBLOB"),
                    col("c52", "LONGBLOB"),
                    col("c53", "DATE"),
                    col("c54", "TIME(3)"),
                    col("c55", "DATETIME"),
                    col("c56", "TIMESTAMP(6)"),
                    col("c57", "YEAR"),
                    col("c58", "JSON"),
                    col("c59", "ENUM('it''s', 'b''c', '中文')"),
                    col("c60", "SET('a', 'b')", False),
                    col("c61", "BINARY(3)", charset="binary"),
                    col("c62", "VARBINARY(3)", charset="binary"),
                    col("c63", "BLOB", charset="binary"),
                    col("c64", "VARCHAR(3)", charset="latin1"),
                    col("c65", "VARCHAR(3)", charset="ucs2"),
                    col("c66", "VARCHAR(3)"),
                    col("c67", "CHAR(2)", charset="latin1"),
                    col("c68", "INT"),
                    col("c69", "DOUBLE(10, 2) UNSIGNED"),
                ),
            ),
        ),
    ),
    Case(
        "create-mariadb-types",
        """CREATE TABLE t (id INT, u UUID, i6 INET6, i4 INET4 NOT NULL, p POINT,
           g GEOMETRY, l LINESTRING, pg POLYGON, mp MULTIPOINT, gc GEOMETRYCOLLECTION,
           v INT AS (id + 1) PERSISTENT, s INT SERIAL DEFAULT VALUE, z VARCHAR(10) COMPRESSED,
           w INT INVISIBLE, x INT WITHOUT SYSTEM VERSIONING)""",
        ops=(
            op(
                K.CREATE_TABLE,
                columns=(
                    col("id", "INT"),
                    col("u", "UUID"),
                    col("i6", "INET6"),
                    col("i4", "INET4", False),
                    col("p", "POINT"),
                    col("g", "GEOMETRY"),
                    col("l", "LINESTRING"),
                    col("pg", "POLYGON"),
                    col("mp", "MULTIPOINT"),
                    col("gc", "GEOMETRYCOLLECTION"),
                    col("v", "INT", generated=True),
                    col("s", "INT", False),
                    col("z", "VARCHAR(10)"),
                    col("w", "INT"),
                    col("x", "INT"),
                ),
            ),
        ),
    ),
    Case(
        "create-defaults",
        """CREATE TABLE t (a INT NOT NULL DEFAULT -1, b VARCHAR(3) DEFAULT _utf8mb4'x',
           c BLOB DEFAULT x'00', d INT DEFAULT (1 + 1), e DATE DEFAULT '2024-01-01' NOT NULL,
           f INT DEFAULT NULL NULL, g INT NULL NOT NULL, h INT NOT NULL NULL, i DOUBLE DEFAULT 1.5e3,
           j INT NULL PRIMARY KEY, k INT UNIQUE KEY NOT NULL, l JSON CHECK (json_valid(l)),
           m INT COMMENT 'PRIMARY KEY' CHECK (m > 0), n TINYINT DEFAULT TRUE)""",
        ops=(
            op(
                K.CREATE_TABLE,
                primary_key=("j",),
                columns=(
                    col("a", "INT", False),
                    col("b", "VARCHAR(3)"),
                    col("c", "BLOB"),
                    col("d", "INT"),
                    col("e", "DATE", False),
                    col("f", "INT"),
                    col("g", "INT", False),
                    col("h", "INT"),
                    col("i", "DOUBLE"),
                    col("j", "INT", False),
                    col("k", "INT", False),
                    col("l", "JSON"),
                    col("m", "INT"),
                    col("n", "TINYINT"),
                ),
            ),
        ),
    ),
    Case(
        "create-inline-reference",
        "CREATE TABLE t (a INT NOT NULL REFERENCES parent (id) ON DELETE SET NULL, "
        f"b INT REFERENCES {D}.parent (id) ON UPDATE CASCADE) ENGINE=MyISAM",
        ops=(op(K.CREATE_TABLE, columns=(col("a", "INT", False), col("b", "INT"))),),
        setup=(PARENT,),
    ),
    Case(
        "create-odd-identifiers",
        """CREATE TABLE `a b` (`x"; DROP TABLE y; --` INT, `a``b` INT,
           `中文` INT, `émoji` INT, `select` INT, `from` VARCHAR(3), status INT, date DATE, `key` INT,
           "dq" INT)""",
        ops=(
            op(
                K.CREATE_TABLE,
                "a b",
                columns=(
                    col('x"; DROP TABLE y; --', "INT"),
                    col("a`b", "INT"),
                    col("中文", "INT"),
                    col("émoji", "INT"),
                    col("select", "INT"),
                    col("from", "VARCHAR(3)"),
                    col("status", "INT"),
                    col("date", "DATE"),
                    col("key", "INT"),
                    col("dq", "INT"),
                ),
            ),
        ),
        tables=((D, "a b"),),
        setup=("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",),
    ),
    Case(
        "create-doubled-backtick-table",
        "CREATE TABLE `a``b` (id INT)",
        ops=(op(K.CREATE_TABLE, "a`b", columns=(col("id", "INT"),)),),
        tables=((D, "a`b"),),
    ),
    Case(
        "create-64-characters",
        f"CREATE TABLE `{LONG}` (`{LONG}` INT PRIMARY KEY)",
        ops=(op(K.CREATE_TABLE, LONG, primary_key=(LONG,), columns=(col(LONG, "INT", False),)),),
        tables=((D, LONG),),
    ),
    Case(
        "create-comments-and-semicolon",
        "/* app=x; DROP TABLE y */ -- DROP TABLE z\n# DROP TABLE w\nCREATE TABLE t (id INT -- the key\n) ;",
        ops=(op(K.CREATE_TABLE, columns=(col("id", "INT"),)),),
    ),
    Case(
        "create-executable-comments",
        "CREATE TABLE /*!32312 IF NOT EXISTS*/ `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) "
        "ENGINE=InnoDB /*M!100100 COMMENT 'x' */ /*!50100 PARTITION BY HASH (`id`) PARTITIONS 2 */",
        ops=(
            op(K.CREATE_TABLE, if_exists=True, primary_key=("id",), columns=(col("id", "INT(11)", False),)),
        ),
    ),
    Case(
        "create-as-logged-for-ctas",
        "CREATE TABLE `t2` (\n  `a` int(11) DEFAULT NULL,\n  `b` int(1) NOT NULL\n)",
        ops=(op(K.CREATE_TABLE, "t2", columns=(col("a", "INT(11)"), col("b", "INT(1)", False))),),
        tables=((D, "t2"),),
    ),
    # ---------------------------------------------------------------- DROP / RENAME / TRUNCATE
    Case(
        "drop-several",
        f"DROP TABLE IF EXISTS t, `t2`, {D2}.t3",
        ops=(
            op(K.DROP_TABLE, if_exists=True),
            op(K.DROP_TABLE, "t2", if_exists=True),
            op(K.DROP_TABLE, "t3", D2, if_exists=True),
        ),
        tables=((D, "t"), (D, "t2"), (D2, "t3")),
        statement="DROP TABLE",
    ),
    Case(
        "drop-as-logged",
        "DROP TABLE `t`,`t2` /* generated by server */",
        ops=(op(K.DROP_TABLE), op(K.DROP_TABLE, "t2")),
        tables=((D, "t"), (D, "t2")),
        setup=(T, "CREATE TABLE t2 (a INT)"),
    ),
    Case(
        "drop-nowait-restrict",
        "DROP TABLE IF EXISTS /* x */ t NOWAIT RESTRICT",
        ops=(op(K.DROP_TABLE, if_exists=True),),
    ),
    Case("drop-temporary", "DROP TEMPORARY TABLE IF EXISTS t", tables=(), statement="DROP TEMPORARY TABLE"),
    Case(
        "rename-several",
        f"RENAME TABLE t TO t2, t3 TO {D2}.t4",
        ops=(
            op(K.RENAME_TABLE, old_name="t", new_name="t2", new_database=D),
            op(K.RENAME_TABLE, "t3", old_name="t3", new_name="t4", new_database=D2),
        ),
        tables=((D, "t"), (D, "t2"), (D, "t3"), (D2, "t4")),
        setup=(T, "CREATE TABLE t3 (a INT)"),
        statement="RENAME TABLE",
    ),
    Case(
        "rename-swap",
        "RENAME TABLE t TO tmp, t2 TO t, tmp TO t2",
        ops=(
            op(K.RENAME_TABLE, old_name="t", new_name="tmp", new_database=D),
            op(K.RENAME_TABLE, "t2", old_name="t2", new_name="t", new_database=D),
            op(K.RENAME_TABLE, "tmp", old_name="tmp", new_name="t2", new_database=D),
        ),
        tables=((D, "t"), (D, "tmp"), (D, "t2")),
        setup=(T, "CREATE TABLE t2 (a INT)"),
    ),
    Case(
        "rename-into-replicated-database",
        f"RENAME TABLE {D2}.t TO t",
        ops=(op(K.RENAME_TABLE, "t", D2, old_name="t", new_name="t", new_database=D),),
        tables=((D2, "t"), (D, "t")),
        setup=(f"CREATE TABLE {D2}.t (a INT)",),
    ),
    Case(
        "rename-if-exists-nowait",
        "RENAME TABLE IF EXISTS t NOWAIT TO t2",
        ops=(op(K.RENAME_TABLE, old_name="t", new_name="t2", new_database=D, if_exists=True),),
        tables=((D, "t"), (D, "t2")),
        setup=(T,),
    ),
    Case(
        "alter-rename-to",
        "ALTER TABLE t RENAME TO t2",
        ops=(op(K.RENAME_TABLE, old_name="t", new_name="t2", new_database=D),),
        tables=((D, "t"), (D, "t2")),
        setup=(T,),
    ),
    Case(
        "alter-rename-as",
        "ALTER TABLE t RENAME AS `t 2`",
        ops=(op(K.RENAME_TABLE, old_name="t", new_name="t 2", new_database=D),),
        tables=((D, "t"), (D, "t 2")),
        setup=(T,),
    ),
    Case(
        "alter-rename-bare",
        f"ALTER TABLE t RENAME {D2}.t",
        ops=(op(K.RENAME_TABLE, old_name="t", new_name="t", new_database=D2),),
        tables=((D, "t"), (D2, "t")),
        setup=(T,),
    ),
    Case(
        "alter-rename-out-of-other-database",
        f"ALTER TABLE {D2}.t RENAME TO t2",  # lands in the session's db
        ops=(op(K.RENAME_TABLE, "t", D2, old_name="t", new_name="t2", new_database=D),),
        tables=((D2, "t"), (D, "t2")),
        setup=(f"CREATE TABLE {D2}.t (a INT)",),
    ),
    Case("truncate-table", "TRUNCATE TABLE t", truncates=((D, "t"),), setup=(T,), statement="TRUNCATE TABLE"),
    Case(
        "truncate-bare",
        f"TRUNCATE {D2}.`t 2` WAIT 1;",
        truncates=((D2, "t 2"),),
        tables=((D2, "t 2"),),
        setup=(f"CREATE TABLE {D2}.`t 2` (a INT)",),
    ),
    # ---------------------------------------------------------------- ALTER TABLE columns
    Case(
        "alter-several-clauses",
        "ALTER TABLE t ADD COLUMN e INT NOT NULL DEFAULT 0 AFTER id, ADD f TEXT FIRST, "
        "DROP COLUMN d, MODIFY COLUMN b VARCHAR(20) NOT NULL, CHANGE COLUMN c c2 MEDIUMTEXT, "
        "RENAME COLUMN a TO a2",
        ops=(
            op(K.ADD_COLUMN, column=col("e", "INT", False), after="id"),
            op(K.ADD_COLUMN, column=col("f", "TEXT"), first=True),
            op(K.DROP_COLUMN, old_name="d"),
            op(K.MODIFY_COLUMN, column=col("b", "VARCHAR(20)", False), old_name="b", new_name="b"),
            op(K.MODIFY_COLUMN, column=col("c2", "MEDIUMTEXT"), old_name="c", new_name="c2"),
            op(K.RENAME_COLUMN, old_name="a", new_name="a2"),
        ),
        setup=(T,),
        statement="ALTER TABLE",
    ),
    Case(
        "alter-add-list",
        "ALTER TABLE t ADD (e INT, f VARCHAR(3) NOT NULL, INDEX (e)), "
        "ADD COLUMN IF NOT EXISTS (g BIGINT UNSIGNED)",
        ops=(
            op(K.ADD_COLUMN, column=col("e", "INT")),
            op(K.ADD_COLUMN, column=col("f", "VARCHAR(3)", False)),
            op(K.ADD_COLUMN, column=col("g", "BIGINT UNSIGNED"), if_exists=True),
        ),
        setup=(T,),
    ),
    Case(
        "alter-if-exists-clauses",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS a INT, DROP COLUMN IF EXISTS zz, "
        "MODIFY COLUMN IF EXISTS yy INT, CHANGE COLUMN IF EXISTS xx ww INT, RENAME COLUMN IF EXISTS vv TO uu",
        ops=(
            op(K.ADD_COLUMN, column=col("a", "INT"), if_exists=True),
            op(K.DROP_COLUMN, old_name="zz", if_exists=True),
            op(K.MODIFY_COLUMN, column=col("yy", "INT"), old_name="yy", new_name="yy", if_exists=True),
            op(K.MODIFY_COLUMN, column=col("ww", "INT"), old_name="xx", new_name="ww", if_exists=True),
            op(K.RENAME_COLUMN, old_name="vv", new_name="uu", if_exists=True),
        ),
        setup=(T,),
    ),
    Case(
        "alter-table-if-exists",
        "ALTER TABLE IF EXISTS t ADD COLUMN e INT",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT"), if_exists=True),),
    ),
    Case(
        "alter-drop-without-column-keyword",
        "ALTER TABLE t DROP a, DROP b CASCADE, DROP COLUMN `c` RESTRICT",
        ops=(
            op(K.DROP_COLUMN, old_name="a"),
            op(K.DROP_COLUMN, old_name="b"),
            op(K.DROP_COLUMN, old_name="c"),
        ),
        setup=(T,),
    ),
    Case(
        "alter-change-same-name",
        "ALTER TABLE t CHANGE a a BIGINT UNSIGNED NOT NULL FIRST",
        ops=(
            op(
                K.MODIFY_COLUMN,
                column=col("a", "BIGINT UNSIGNED", False),
                old_name="a",
                new_name="a",
                first=True,
            ),
        ),
        setup=(T,),
    ),
    Case(
        "alter-change-swap",
        "ALTER TABLE t CHANGE a b VARCHAR(10), CHANGE b a INT",
        ops=(
            op(K.MODIFY_COLUMN, column=col("b", "VARCHAR(10)"), old_name="a", new_name="b"),
            op(K.MODIFY_COLUMN, column=col("a", "INT"), old_name="b", new_name="a"),
        ),
        setup=(T,),
    ),
    Case(
        "alter-modify-charset",
        "ALTER TABLE t MODIFY c TEXT CHARACTER SET latin1 COLLATE latin1_bin NOT NULL AFTER `id`",
        ops=(
            op(
                K.MODIFY_COLUMN,
                column=col("c", "TEXT", False, charset="latin1"),
                old_name="c",
                new_name="c",
                after="id",
            ),
        ),
        setup=(T,),
    ),
    Case(
        "alter-add-generated",
        "ALTER TABLE t ADD g INT AS (a + 1) PERSISTENT, ADD h VARCHAR(12) "
        "GENERATED ALWAYS AS (concat(b, 'x')) VIRTUAL",
        ops=(
            op(K.ADD_COLUMN, column=col("g", "INT", generated=True)),
            op(K.ADD_COLUMN, column=col("h", "VARCHAR(12)", generated=True)),
        ),
        setup=(T,),
    ),
    Case(
        "alter-add-key-column",
        "ALTER TABLE t ADD COLUMN id INT NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST",
        ops=(op(K.ADD_COLUMN, column=col("id", "INT", False), first=True),),
        primary_key_changed=True,
        setup=(T_NO_KEY,),
    ),
    Case(
        "alter-add-then-rename-table",
        "ALTER TABLE t RENAME TO t2, ADD COLUMN e INT",
        ops=(
            op(K.ADD_COLUMN, column=col("e", "INT")),
            op(K.RENAME_TABLE, old_name="t", new_name="t2", new_database=D),
        ),
        tables=((D, "t"), (D, "t2")),
        setup=(T,),
    ),
    Case(
        "alter-odd-identifiers",
        'ALTER TABLE `a b` ADD COLUMN `x"; DROP TABLE y; --` INT, '
        "RENAME COLUMN `a``b` TO `中文`, CHANGE `select` `from` INT",
        ops=(
            op(K.ADD_COLUMN, "a b", column=col('x"; DROP TABLE y; --', "INT")),
            op(K.RENAME_COLUMN, "a b", old_name="a`b", new_name="中文"),
            op(K.MODIFY_COLUMN, "a b", column=col("from", "INT"), old_name="select", new_name="from"),
        ),
        tables=((D, "a b"),),
        setup=("CREATE TABLE `a b` (`a``b` INT, `select` INT)",),
    ),
    Case(
        "alter-qualified-64",
        f"ALTER TABLE `{D2}`.`{LONG}` ADD COLUMN `{LONG}2` INT",
        ops=(op(K.ADD_COLUMN, LONG, D2, column=col(f"{LONG}2", "INT")),),
        tables=((D2, LONG),),
        setup=(f"CREATE TABLE {D2}.`{LONG}` (a INT)",),
        mariadb="a 65-character column name is too long",
    ),
    Case(
        "alter-qualified-reserved",
        f"ALTER TABLE `{D2}`.`order` ADD COLUMN `desc` INT",
        ops=(op(K.ADD_COLUMN, "order", D2, column=col("desc", "INT")),),
        tables=((D2, "order"),),
        setup=(f"CREATE TABLE {D2}.`order` (a INT)",),
    ),
    # ---------------------------------------------------------------- ALTER TABLE without column changes
    Case("alter-defaults", "ALTER TABLE t ALTER COLUMN a SET DEFAULT 5, ALTER b DROP DEFAULT", setup=(T,)),
    Case(
        "alter-indexes",
        "ALTER TABLE t ADD INDEX ia (a), ADD UNIQUE KEY ub (b), ADD FULLTEXT INDEX fc (c), "
        "DROP INDEX old_idx, ADD CONSTRAINT chk CHECK (a > 0), ADD INDEX IF NOT EXISTS ia2 (a), "
        "DROP INDEX IF EXISTS nope, DROP KEY ub2, RENAME INDEX ren TO ren2",
        setup=(
            T,
            "CREATE INDEX old_idx ON t (d)",
            "CREATE UNIQUE INDEX ub2 ON t (d)",
            "CREATE INDEX ren ON t (a)",
        ),
    ),
    Case(
        "alter-primary-key",
        "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY USING BTREE (id, d)",
        primary_key_changed=True,
        setup=(T,),
    ),
    Case(
        "alter-constraint-primary-key",
        "ALTER TABLE t DROP PRIMARY KEY, ADD CONSTRAINT pk2 PRIMARY KEY (id)",
        primary_key_changed=True,
        setup=(T,),
    ),
    Case(
        "alter-drop-constraint-primary",
        "ALTER TABLE t DROP CONSTRAINT `PRIMARY`",
        primary_key_changed=True,
        setup=(T,),
    ),
    Case(
        "alter-foreign-key",
        "ALTER TABLE t ADD CONSTRAINT fk_p FOREIGN KEY (a) REFERENCES parent (id)",
        setup=(T, PARENT),
    ),
    Case(
        "alter-drop-foreign-key",
        "ALTER TABLE t DROP FOREIGN KEY fk_p, DROP CONSTRAINT IF EXISTS nope",
        setup=(T, PARENT, "ALTER TABLE t ADD CONSTRAINT fk_p FOREIGN KEY (a) REFERENCES parent (id)"),
    ),
    Case("alter-options", "ALTER TABLE t ENGINE=InnoDB, ALGORITHM=INPLACE, LOCK=NONE", setup=(T,)),
    Case(
        "alter-table-options",
        "ALTER TABLE t DEFAULT CHARACTER SET = utf8mb4, COMMENT 'x', AUTO_INCREMENT=10 ROW_FORMAT=DYNAMIC",
        setup=(T,),
    ),
    Case("alter-convert", "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", setup=(T,)),
    Case("alter-convert-charset", "ALTER TABLE t CONVERT TO CHARSET latin1", setup=(T,)),
    Case("alter-force", "ALTER TABLE t FORCE, ALGORITHM=COPY", setup=(T,)),
    Case(
        "alter-add-with-algorithm",
        "ALTER TABLE t ADD COLUMN e INT, ALGORITHM=INPLACE, LOCK=NONE",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case(
        "alter-online",
        "ALTER ONLINE TABLE t ADD COLUMN e INT",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case(
        "alter-online-ignore",
        "ALTER ONLINE IGNORE TABLE t WAIT 10 ADD COLUMN e INT",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case(
        "alter-nowait",
        "ALTER TABLE t NOWAIT ADD COLUMN e INT",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case(
        "alter-set-statement",
        "SET STATEMENT max_statement_time=60, lock_wait_timeout=5 FOR ALTER TABLE t ADD COLUMN e INT",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case("alter-keys", "/*!40000 ALTER TABLE `t` DISABLE KEYS */;", setup=(T,)),
    Case("alter-enable-keys", "ALTER TABLE t DISABLE KEYS, ENABLE KEYS", setup=(T,)),
    Case(
        "alter-order-by",
        "ALTER TABLE t ADD COLUMN e INT, ORDER BY a, `modify` DESC",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T, "ALTER TABLE t ADD `modify` INT"),
    ),
    Case(
        "alter-order-by-unquoted",
        "ALTER TABLE t ORDER BY a, modify, comment DESC",
        setup=("CREATE TABLE t (id INT PRIMARY KEY, a INT, modify INT, comment INT)",),
    ),
    Case("alter-order-by-only", "ALTER TABLE t ORDER BY a, b DESC", setup=(T,)),
    Case("alter-partitioning", "ALTER TABLE t REMOVE PARTITIONING", setup=(RANGE,)),
    Case(
        "alter-add-partition",
        "ALTER TABLE t ADD PARTITION IF NOT EXISTS (PARTITION p2 VALUES LESS THAN (30))",
        setup=(RANGE.replace("MAXVALUE", "(20)"),),
    ),
    Case(
        "alter-reorganize-partition",
        "ALTER TABLE t REORGANIZE PARTITION p1 INTO "
        "(PARTITION p1 VALUES LESS THAN (20), PARTITION p2 VALUES LESS THAN MAXVALUE)",
        setup=(RANGE,),
    ),
    Case(
        "alter-add-column-and-partition-by",
        "ALTER TABLE t ADD COLUMN e INT PARTITION BY KEY (id) PARTITIONS 3",
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        setup=(T,),
    ),
    Case("alter-truncate-partition", "ALTER TABLE t TRUNCATE PARTITION p0", understood=False, setup=(RANGE,)),
    Case("alter-drop-partition", "ALTER TABLE t DROP PARTITION p0", understood=False, setup=(RANGE,)),
    Case(
        "alter-exchange-partition",
        "ALTER TABLE t EXCHANGE PARTITION p0 WITH TABLE t2",
        understood=False,
        tables=((D, "t"),),
        setup=(RANGE, "CREATE TABLE t2 (id INT NOT NULL, PRIMARY KEY (id))"),
    ),
    Case("alter-system-versioning", "ALTER TABLE t ADD SYSTEM VERSIONING", understood=False, setup=(T,)),
    # ---------------------------------------------------------------- other DDL
    Case("create-index", "CREATE INDEX ix ON t (a)", setup=(T,), statement="CREATE INDEX"),
    Case(
        "create-unique-index",
        f"CREATE UNIQUE INDEX IF NOT EXISTS ix USING BTREE ON {D2}.t (a)",
        tables=((D2, "t"),),
        setup=(f"CREATE TABLE {D2}.t (a INT)",),
    ),
    Case("create-or-replace-index", "CREATE OR REPLACE INDEX ix ON t (a)", setup=(T,)),
    Case("drop-index", "DROP INDEX ix ON t", setup=(T, "CREATE INDEX ix ON t (a)"), statement="DROP INDEX"),
    Case(
        "create-database",
        f"CREATE DATABASE IF NOT EXISTS {D3} CHARACTER SET utf8mb4",
        tables=(),
        databases=(D3,),
        statement="CREATE DATABASE",
    ),
    Case(
        "drop-database",
        f"DROP SCHEMA IF EXISTS {D3}",
        tables=(),
        databases=(D3,),
        statement="DROP DATABASE",
    ),
    Case("alter-database", f"ALTER DATABASE {D} CHARACTER SET utf8mb4", tables=(), databases=(D,)),
    Case("alter-default-database", "ALTER DATABASE CHARACTER SET utf8mb4", tables=(), databases=(D,)),
    Case("create-view", "CREATE VIEW v AS SELECT id FROM t", tables=(), setup=(T,), statement="CREATE VIEW"),
    Case(
        "create-view-definer",
        "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=CURRENT_USER SQL SECURITY INVOKER VIEW v AS SELECT 1 AS x",
        tables=(),
    ),
    Case(
        "create-view-dump",
        "/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`root`@`localhost` "
        "SQL SECURITY DEFINER */ /*!50001 VIEW `v` AS select 1 AS `x` */",
        tables=(),
        statement="CREATE VIEW",
    ),
    Case(
        "create-trigger",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        tables=(),
        setup=(T,),
        statement="CREATE TRIGGER",
    ),
    Case(
        "create-procedure",
        "CREATE DEFINER=`root`@`localhost` PROCEDURE p() BEGIN SELECT 1; DROP TABLE t; END",
        tables=(),
        statement="CREATE PROCEDURE",
    ),
    Case("create-sequence", "CREATE SEQUENCE s START WITH 10", tables=()),
    Case("drop-view", "DROP VIEW IF EXISTS v", tables=()),
    # ---------------------------------------------------------------- not run on MariaDB
    Case(
        "emoji-identifier",
        "CREATE TABLE `t😀` (`😀` INT)",
        ops=(op(K.CREATE_TABLE, "t😀", columns=(col("😀", "INT"),)),),
        tables=((D, "t😀"),),
        mariadb="MariaDB allows no characters outside the BMP in identifiers",
    ),
    Case(
        "mysql8-invisible",
        "ALTER TABLE t ALTER COLUMN a SET INVISIBLE, ALTER INDEX ia VISIBLE",
        mariadb="MySQL 8 syntax",
    ),
    Case(
        "mysql8-functional-key-part",
        "CREATE TABLE t (a INT, PRIMARY KEY ((a + 1)))",
        understood=False,
        mariadb="not valid anywhere: a primary key cannot be on an expression",
    ),
    Case("unknown-clause", "ALTER TABLE t FROBNICATE a", understood=False, mariadb="invalid"),
    Case("truncated", "CREATE TABLE t (a INT, b VARCH", understood=False, mariadb="invalid"),
    Case("no-columns", "CREATE TABLE t (PRIMARY KEY (a))", understood=False, mariadb="invalid"),
    Case(
        "unterminated-string",
        "ALTER TABLE t ADD COLUMN e INT COMMENT 'x",
        understood=True,
        ops=(op(K.ADD_COLUMN, column=col("e", "INT")),),
        mariadb="invalid",
    ),
    Case(
        "two-statements",
        "ALTER TABLE t ADD COLUMN e INT; DROP TABLE x",
        understood=False,
        mariadb="one statement per QueryEvent",
    ),
    Case("dml", "INSERT INTO t VALUES (1)", tables=(), understood=False, statement="", mariadb="not DDL"),
    Case(
        "create-user", "CREATE USER 'u'@'%' IDENTIFIED BY 'p'", tables=(), understood=False, mariadb="not DDL"
    ),
]
CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_parse(case: Case) -> None:
    got = parse_ddl(case.sql, D)
    assert got.understood == case.understood, got.reason
    assert got.ops == case.ops
    assert got.tables == case.tables
    assert got.truncates == case.truncates
    assert got.primary_key_changed == case.primary_key_changed
    assert got.databases == case.databases
    if case.statement is not None:
        assert got.statement == case.statement
    assert bool(got.reason) != got.understood


def test_no_default_database() -> None:
    got = parse_ddl("ALTER TABLE t ADD COLUMN e INT", None)
    assert not got.understood and got.ops == () and got.tables == (("", "t"),)
    qualified = parse_ddl(f"ALTER TABLE {D2}.t ADD COLUMN e INT", "")
    assert qualified.understood and qualified.ops == (op(K.ADD_COLUMN, database=D2, column=col("e", "INT")),)


def test_not_understood_still_names_every_table() -> None:
    got = parse_ddl(f"DROP TABLE a, {D2}.b, c garbage", D)
    assert not got.understood and got.ops == ()
    assert got.tables == ((D, "a"), (D2, "b"), (D, "c"))
    got = parse_ddl("RENAME TABLE a TO b, c d", D)
    assert not got.understood and got.tables == ((D, "a"), (D, "b"), (D, "c"))


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("BEGIN", "transaction"),
        ("begin work", "transaction"),
        ("START TRANSACTION READ ONLY", "transaction"),
        ("COMMIT", "transaction"),
        ("COMMIT /* xid=205 */", "transaction"),
        ("ROLLBACK TO SAVEPOINT s", "transaction"),
        ("SAVEPOINT s", "transaction"),
        ("RELEASE SAVEPOINT s", "transaction"),
        ("XA START 'x'", "transaction"),
        ("XA COMMIT 'x'", "transaction"),
        ("BEGIN NOT ATOMIC SELECT 1; END", "other"),
        ("START SLAVE", "other"),
        ("TRUNCATE t", "truncate"),
        ("truncate table `t`", "truncate"),
        ("INSERT INTO t VALUES (1)", "dml"),
        ("update t set a = 1", "dml"),
        ("DELETE FROM t", "dml"),
        ("REPLACE INTO t VALUES (1)", "dml"),
        ("LOAD DATA INFILE 'x' INTO TABLE t", "dml"),
        ("WITH x AS (SELECT 1) UPDATE t, x SET t.a = 1", "dml"),
        ("SELECT f()", "dml"),
        ("CALL p()", "dml"),
        ("CREATE TABLE t (a INT)", "ddl"),
        ("create temporary table t (a int)", "ddl"),
        ("CREATE OR REPLACE TABLE t (a INT)", "ddl"),
        ("ALTER TABLE t ADD a INT", "ddl"),
        ("ALTER ONLINE IGNORE TABLE t FORCE", "ddl"),
        ("DROP TABLE t", "ddl"),
        ("RENAME TABLE a TO b", "ddl"),
        ("CREATE DATABASE d", "ddl"),
        ("DROP SCHEMA d", "ddl"),
        ("CREATE INDEX i ON t (a)", "ddl"),
        ("CREATE UNIQUE INDEX i ON t (a)", "ddl"),
        ("CREATE VIEW v AS SELECT 1", "ddl"),
        ("CREATE DEFINER=root@localhost VIEW v AS SELECT 1", "ddl"),
        ("CREATE DEFINER='u'@'%' SQL SECURITY DEFINER VIEW v AS SELECT 1", "ddl"),
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", "ddl"),
        ("DROP PROCEDURE IF EXISTS p", "ddl"),
        ("CREATE SEQUENCE s", "ddl"),
        ("CREATE FROBNICATOR x", "ddl"),
        ("CREATE USER 'u'@'%'", "other"),
        ("DROP USER u", "other"),
        ("ALTER USER u", "other"),
        ("RENAME USER a TO b", "other"),
        ("CREATE ROLE r", "other"),
        ("CREATE OR REPLACE USER u", "other"),
        ("DROP PREPARE s", "other"),
        ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'x')", "other"),
        ("SET NAMES utf8mb4", "other"),
        ("SET @a = 1", "other"),
        ("GRANT ALL ON *.* TO u", "other"),
        ("FLUSH PRIVILEGES", "other"),
        ("ANALYZE TABLE t", "other"),
        ("OPTIMIZE TABLE t", "other"),
        ("LOCK TABLES t WRITE", "other"),
        ("USE d", "other"),
        ("", "other"),
        ("  ;", "other"),
        ("/* x */", "other"),
        # comments and executable comments
        ("/* DROP TABLE x */ COMMIT", "transaction"),
        ("-- DROP TABLE x\nINSERT INTO t VALUES (1)", "dml"),
        ("# DROP TABLE x\nBEGIN", "transaction"),
        ("--DROP TABLE x", "other"),
        ("/*!40000 ALTER TABLE `t` DISABLE KEYS */", "ddl"),
        ("/*!40101 SET NAMES utf8 */", "other"),
        ("/*M!100100 ALTER TABLE t FORCE */", "ddl"),
        ("/*!ALTER TABLE t FORCE */", "ddl"),
        (
            "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t "
            "FOR EACH ROW SET NEW.a = 1 */",
            "ddl",
        ),
        (
            "/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */ "
            "/*!50001 VIEW `v` AS select 1 AS `x` */",
            "ddl",
        ),
        ("/* unterminated comment ALTER TABLE t", "other"),
        ("'ALTER TABLE t'", "other"),
        ("SET STATEMENT max_statement_time=1 FOR ALTER TABLE t FORCE", "ddl"),
        ("SET STATEMENT max_statement_time=1 FOR INSERT INTO t VALUES (1)", "dml"),
        ("SET STATEMENT max_statement_time=1 FOR TRUNCATE t", "truncate"),
    ],
)
def test_classify(sql: str, expected: str) -> None:
    assert classify(sql) == expected


def _statements() -> Iterator[str]:
    for case in CASES:
        yield case.sql
        yield from case.setup


def test_never_raises_on_any_prefix_or_mangling() -> None:
    rng = random.Random(1234)
    alphabet = "`'\"()/*!-#;,. \n\\aZ0@=中"
    for sql in _statements():
        for end in range(len(sql) + 1):
            for text in (sql[:end], sql[end:]):
                assert not parse_ddl(text, D).reason.startswith("internal error"), text
                assert classify(text) in ("ddl", "truncate", "dml", "transaction", "other")
        for _ in range(50):
            chars = list(sql)
            for _ in range(rng.randint(1, 4)):
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(alphabet))
            mangled = "".join(chars)
            assert not parse_ddl(mangled, D).reason.startswith("internal error"), mangled
            assert classify(mangled) in ("ddl", "truncate", "dml", "transaction", "other")
    for junk in (None, b"ALTER TABLE t ADD a INT", 42):
        assert not parse_ddl(junk, D).understood  # type: ignore[arg-type]
        assert classify(junk) == "other"  # type: ignore[arg-type]


def test_classify_agrees_with_parse() -> None:
    for case in CASES:
        kind = classify(case.sql)
        if case.understood:
            assert kind in ("ddl", "truncate"), case.id
        if kind == "truncate":
            assert parse_ddl(case.sql, D).truncates


# --------------------------------------------------------------------------- against MariaDB

MYSQL_HOST = os.environ.get("WARP_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WARP_TEST_MYSQL_PORT", "3306"))
SCRATCH = (D, D2, D3)


@pytest.fixture(scope="module")
def mariadb() -> Iterator[pymysql.cursors.Cursor]:
    conn = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", charset="utf8mb4", autocommit=True
    )
    cur = conn.cursor()
    try:
        yield cur
    finally:
        for name in SCRATCH:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _fresh(cur: pymysql.cursors.Cursor) -> None:
    cur.execute("SET SESSION sql_mode = DEFAULT")
    for name in SCRATCH:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    cur.execute(f"CREATE DATABASE `{D}` CHARACTER SET utf8mb4")
    cur.execute(f"CREATE DATABASE `{D2}` CHARACTER SET utf8mb4")
    cur.execute(f"USE `{D}`")


def _canonical_type(type_sql: str) -> str:
    """A type spelling with what MariaDB fills in or drops made explicit, for comparison."""
    t = type_sql.lower().replace(", ", ",").replace(" zerofill", "").replace(" /*m!100301 compressed*/", "")
    if t == "json":  # MariaDB's JSON is LONGTEXT with a json_valid() check
        return "longtext"
    t = re.sub(r"\b(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", t)
    t = re.sub(r"^decimal(?=$| )", "decimal(10,0)", t)
    t = re.sub(r"^decimal\((\d+)\)", r"decimal(\1,0)", t)
    t = re.sub(r"^(bit|char|binary)(?=$| )", r"\1(1)", t)
    return "year(4)" if t == "year" else t


def _check_against_server(cur: pymysql.cursors.Cursor, parsed: ParsedDdl) -> None:
    """The columns and keys the parser reported are those the server now has."""
    moved = {
        (o.database, o.table): (o.new_database, o.new_name) for o in parsed.ops if o.kind == K.RENAME_TABLE
    }
    for o in parsed.ops:
        if o.if_exists or o.like or o.kind not in (K.CREATE_TABLE, K.ADD_COLUMN, K.MODIFY_COLUMN):
            continue
        database, table = moved.get((o.database, o.table), (o.database, o.table))
        cur.execute(
            "SELECT column_name, column_type, is_nullable, is_generated, character_set_name "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (database, table),
        )
        server = {r[0]: r[1:] for r in cur.fetchall()}
        for column in o.columns or (o.column,):
            assert column is not None and column.name in server, (column, server)
            column_type, is_nullable, is_generated, charset = server[column.name]
            assert _canonical_type(column.type_sql) == _canonical_type(column_type), (column, column_type)
            assert column.nullable == (is_nullable == "YES"), (column, is_nullable)
            assert column.generated == (is_generated == "ALWAYS"), (column, is_generated)
            if column.charset not in (None, "binary"):
                assert column.charset == charset, (column, charset)
        if o.kind == K.CREATE_TABLE:
            cur.execute(
                "SELECT column_name FROM information_schema.statistics WHERE table_schema = %s "
                "AND table_name = %s AND index_name = 'PRIMARY' ORDER BY seq_in_index",
                (database, table),
            )
            assert tuple(r[0] for r in cur.fetchall()) == o.primary_key


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c.mariadb], ids=[c.id for c in CASES if not c.mariadb]
)
def test_statement_is_valid_mariadb(mariadb: pymysql.cursors.Cursor, case: Case) -> None:
    """The statement runs on the real server, which then has the columns the parser reported."""
    _fresh(mariadb)
    for statement in case.setup:
        mariadb.execute(statement)
    mariadb.execute(case.sql)
    _check_against_server(mariadb, parse_ddl(case.sql, D))


def test_statements_as_the_binlog_records_them(mariadb: pymysql.cursors.Cursor) -> None:
    """The server rewrites some statements before logging them; the parser follows the logged form."""
    _fresh(mariadb)
    mariadb.execute("SELECT @@log_bin")
    if mariadb.fetchone()[0] != 1:
        pytest.fail("MariaDB's binlog is off: run scripts/setup-databases.sh")
    mariadb.execute("SHOW MASTER STATUS")
    log_file, position = mariadb.fetchone()[:2]
    for statement in (
        "CREATE TABLE t (a INT, b SERIAL)",
        "CREATE TEMPORARY TABLE tt (a INT)",
        "DROP TABLE IF EXISTS t, tt, nothere",  # logged without the temporary table
        "CREATE TABLE t (a INT)",
        "CREATE TABLE t2 AS SELECT a, 1 AS b FROM t",  # logged as CREATE TABLE with its columns
        "SET STATEMENT max_statement_time=60 FOR ALTER TABLE t ADD COLUMN z INT",
        "TRUNCATE t",
    ):
        mariadb.execute(statement)
    mariadb.execute(f"SHOW BINLOG EVENTS IN '{log_file}' FROM {position}")
    logged = []
    for row in mariadb.fetchall():
        match = re.match(r"use `((?:[^`]|``)*)`; (.*)", row[5], re.S)
        if row[2] == "Query" and match and match.group(1) == D:
            logged.append(parse_ddl(match.group(2), match.group(1).replace("``", "`")))
    assert [p.statement for p in logged] == [
        "CREATE TABLE",
        "DROP TABLE",
        "CREATE TABLE",
        "CREATE TABLE",
        "ALTER TABLE",
        "TRUNCATE TABLE",
    ]
    assert all(p.understood for p in logged)
    assert logged[1].ops == (op(K.DROP_TABLE, if_exists=True), op(K.DROP_TABLE, "nothere", if_exists=True))
    assert logged[3].ops == (
        op(K.CREATE_TABLE, "t2", columns=(col("a", "INT(11)"), col("b", "INT(1)", False))),
    )
    assert logged[4].ops == (op(K.ADD_COLUMN, column=col("z", "INT")),)
    assert logged[5].truncates == ((D, "t"),)


@pytest.mark.parametrize(
    ("clause", "expected"),
    [
        ("ADD COLUMN c INT", False),
        ("ADD COLUMN c INT DEFAULT NULL", False),
        ("ADD COLUMN c INT NOT NULL DEFAULT 0", True),
        ("ADD COLUMN c VARCHAR(5) DEFAULT 'x' COMMENT 'y'", True),
        ("ADD COLUMN c TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP", True),
    ],
)
def test_added_column_reports_a_default_that_fills_existing_rows(clause: str, expected: bool) -> None:
    parsed = parse_ddl(f"ALTER TABLE t {clause}", "db")
    (op,) = parsed.ops
    assert op.column is not None and op.column.has_default is expected

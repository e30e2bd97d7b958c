"""Turn the DDL statements of a MySQL/MariaDB binlog into operations on tables.

The binlog carries DDL as statement text (a QueryEvent) plus the session's
default database.  :func:`classify` tells cheaply what a QueryEvent holds;
:func:`parse_ddl` turns a DDL statement into :class:`DdlOp` s on named tables
and lists every table the statement touches, even when it cannot be turned
into operations, so the source can ignore DDL on tables it does not replicate
and stop on DDL it cannot follow on those it does.

Statement structure (kind, table names, ALTER TABLE clauses, column
attributes) is read from the tokens of our own small lexer, because sqlglot
30's MySQL parser gives up on the whole statement (an opaque ``Command`` or an
error) for forms the binlog does contain: RENAME TABLE, ``ADD (a INT, b INT)``,
``MODIFY|CHANGE COLUMN IF EXISTS``, ``ALTER ONLINE TABLE``, ``RENAME AS``,
``CONVERT TO CHARACTER SET``, ``DISABLE KEYS``, ``PARTITION BY``, ``WITH SYSTEM
VERSIONING``, ``PERSISTENT``, ``PRIMARY KEY USING BTREE (a)``, INET6 and
geometry columns.  sqlglot normalises each column's type spelling; MySQL type
aliases that it misreads (INT8 as TINYINT, LONG as BIGINT, REAL as FLOAT) are
resolved to what the server creates before it sees them.

Names are returned as written (unquoted, unescaped, not case-folded): compare
them as the server does under its ``lower_case_table_names``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from sqlglot import exp

from warpd.connectors.base import SchemaOpKind

__all__ = ["ColumnDef", "DdlOp", "ParsedDdl", "classify", "dml_targets", "parse_ddl"]


@dataclass(frozen=True)
class ColumnDef:
    """A column as a CREATE TABLE or ALTER TABLE statement defines it."""

    name: str
    type_sql: str  # MySQL spelling, normalised: "BIGINT UNSIGNED", "DECIMAL(65, 30)", "ENUM('a', 'b')"
    nullable: bool  # False for NOT NULL, PRIMARY KEY and SERIAL columns
    generated: bool = False  # AS (...) VIRTUAL/STORED/PERSISTENT
    charset: str | None = None  # lower-cased, only when the definition names one
    # DEFAULT with a value other than NULL: existing rows get it without row events
    has_default: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class DdlOp:
    """One structural change to one table.

    ``database``/``table`` name the table as it is before the change.  By kind:

    * CREATE_TABLE: ``columns`` and ``primary_key``, or ``like`` for
      ``CREATE TABLE t LIKE s``; ``if_exists`` for IF NOT EXISTS.
    * DROP_TABLE: ``if_exists`` for IF EXISTS.
    * RENAME_TABLE: ``old_name`` (= ``table``), ``new_name``, ``new_database``
      (always set; differs from ``database`` for a move between databases).
    * ADD_COLUMN: ``column``; ``after``/``first`` give its position.
    * DROP_COLUMN: ``old_name`` is the dropped column.
    * MODIFY_COLUMN (MODIFY or CHANGE): ``column`` is the new definition,
      ``old_name`` the column's current name, ``new_name`` = ``column.name``.
    * RENAME_COLUMN: ``old_name``, ``new_name``.

    ``if_exists`` on column operations means the statement said IF [NOT]
    EXISTS (on the clause or on ``ALTER TABLE IF EXISTS``): the server skipped
    it silently if it did not apply.
    """

    kind: SchemaOpKind
    database: str
    table: str
    column: ColumnDef | None = None
    old_name: str | None = None
    new_name: str | None = None
    new_database: str | None = None
    columns: tuple[ColumnDef, ...] = ()
    primary_key: tuple[str, ...] = ()
    after: str | None = None
    like: tuple[str, str] | None = None
    if_exists: bool = False
    first: bool = False


@dataclass(frozen=True)
class ParsedDdl:
    """What one statement does to tables.

    ``ops`` are in statement order, except that an ALTER TABLE's own rename
    comes after its column changes (which name the table by its old name).
    The column changes of one ALTER TABLE all refer to the columns as they
    were before the statement, as MySQL executes them (``CHANGE a b INT,
    CHANGE b a INT`` swaps two columns): apply them as one unit.

    ``understood`` is False when the statement is DDL this module cannot turn
    into operations (``reason`` says why); ``ops`` is then empty, but
    ``tables`` still lists the tables it names, so the caller can decide
    whether the statement concerns a replicated table.  Statements that are
    not DDL at all (DML, SET, GRANT...) are not understood either.
    """

    ops: tuple[DdlOp, ...]
    truncates: tuple[tuple[str, str], ...]  # (database, table) for TRUNCATE [TABLE]
    tables: tuple[
        tuple[str, str], ...
    ]  # every (database, table) created, dropped, renamed, altered or truncated
    understood: bool
    primary_key_changed: bool = False  # ALTER TABLE added or dropped a primary key
    statement: str = ""  # "ALTER TABLE", "DROP DATABASE", "CREATE VIEW", ...; "" when unrecognised
    databases: tuple[str, ...] = ()  # for CREATE/ALTER/DROP DATABASE
    reason: str = ""  # why not understood
    temporary: tuple[tuple[str, str], ...] = ()  # (database, table) of CREATE/DROP TEMPORARY TABLE


# --------------------------------------------------------------------------- lexer

_WORD, _QID, _STR, _NUM, _OP = "word", "qid", "str", "num", "op"


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str  # as written, quotes included
    value: str  # unquoted and unescaped for identifiers and strings, else the text
    kw: str  # upper-cased text of an unquoted word, else ""


_SPACE = frozenset(" \t\n\r\f\v")
_IDENT_RUN = re.compile(r"[0-9A-Za-z_$\u0080-\U0010ffff]+")
_NUMBER = re.compile(r"[0-9]+(?:[eE][0-9]+)?|0[xX][0-9A-Fa-f]+|0[bB][01]+")
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def _read_quoted(sql: str, i: int, quote: str) -> tuple[int, str]:
    """Read the quoted token at ``sql[i]``; return its end and value.  Unterminated runs to the end."""
    out: list[str] = []
    j, n = i + 1, len(sql)
    while j < n:
        ch = sql[j]
        if ch == quote:
            if j + 1 < n and sql[j + 1] == quote:
                out.append(quote)
                j += 2
                continue
            return j + 1, "".join(out)
        if ch == "\\" and quote != "`" and j + 1 < n:
            out.append(_ESCAPES.get(sql[j + 1], sql[j + 1]))
            j += 2
            continue
        out.append(ch)
        j += 1
    return n, "".join(out)


def _version_digits(sql: str, i: int) -> int:
    """Length of the server version after ``/*!`` or ``/*M!`` (5 or 6 digits, else none)."""
    j = i
    while j < len(sql) and j - i < 6 and "0" <= sql[j] <= "9":
        j += 1
    return j - i if j - i in (5, 6) else 0


def _lex(sql: str) -> Iterator[_Tok]:
    """Tokens of one statement; comments dropped.

    Executable comments (``/*!40101 ... */``, ``/*M!100100 ... */``) are code
    the server ran, so their content is lexed as code: we assume the server
    was new enough to run them, which it was if the statement reached the
    binlog in that form.
    """
    i, n, in_executable = 0, len(sql), False
    while i < n:
        ch = sql[i]
        if ch in _SPACE:
            i += 1
        elif ch == "/" and sql.startswith("/*", i):
            if sql.startswith("/*!", i) or sql.startswith("/*M!", i):
                i += 3 if sql[i + 2] == "!" else 4
                i += _version_digits(sql, i)
                in_executable = True
            else:
                end = sql.find("*/", i + 2)
                i = n if end < 0 else end + 2
        elif ch == "*" and in_executable and sql.startswith("*/", i):
            in_executable = False
            i += 2
        elif ch == "#" or (
            sql.startswith("--", i) and (i + 2 == n or sql[i + 2] in _SPACE or sql[i + 2] < " ")
        ):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch in "'\"`":
            end, value = _read_quoted(sql, i, ch)
            yield _Tok(_QID if ch == "`" else _STR, sql[i:end], value, "")
            i = end
        elif m := _IDENT_RUN.match(sql, i):
            text = m.group()
            if _NUMBER.fullmatch(text):
                yield _Tok(_NUM, text, text, "")
            else:
                yield _Tok(_WORD, text, text, text.upper())
            i = m.end()
        else:
            yield _Tok(_OP, ch, ch, "")
            i += 1


def _is_op(tok: _Tok | None, ch: str) -> bool:
    return tok is not None and tok.kind == _OP and tok.text == ch


def _statement_tokens(sql: str) -> Iterator[_Tok]:
    """Tokens of the statement itself: MariaDB's ``SET STATEMENT var=value, ... FOR`` prefix is skipped."""
    toks = _lex(sql)
    head = list(islice(toks, 2))
    if [t.kw for t in head] == ["SET", "STATEMENT"]:
        depth = 0
        for t in toks:
            if _is_op(t, "("):
                depth += 1
            elif _is_op(t, ")"):
                depth -= 1
            elif t.kw == "FOR" and depth <= 0:
                break
        head = []
    yield from head
    yield from toks


def _split(toks: list[_Tok], sep: str = ",") -> list[list[_Tok]]:
    """Split at ``sep`` outside parentheses."""
    parts: list[list[_Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.kind == _OP:
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif t.text == sep and depth == 0:
                parts.append([])
                continue
        parts[-1].append(t)
    return parts


def _group_end(toks: list[_Tok], i: int) -> int:
    """Index just past the ``)`` matching the ``(`` at ``toks[i]``."""
    depth = 0
    for j in range(i, len(toks)):
        if _is_op(toks[j], "("):
            depth += 1
        elif _is_op(toks[j], ")"):
            depth -= 1
            if depth == 0:
                return j + 1
    raise _NotUnderstood("unbalanced parentheses")


def _ident(tok: _Tok | None) -> str | None:
    """The identifier a token spells: a word, a `backtick` name, or a "name" (ANSI_QUOTES)."""
    if tok is None:
        return None
    if tok.kind in (_WORD, _QID) or (tok.kind == _STR and tok.text.startswith('"')):
        return tok.value
    return None


# --------------------------------------------------------------------------- classify

_DDL_OBJECTS = frozenset(
    {
        "TABLE",
        "TABLES",
        "DATABASE",
        "SCHEMA",
        "VIEW",
        "INDEX",
        "TRIGGER",
        "PROCEDURE",
        "FUNCTION",
        "EVENT",
        "SEQUENCE",
        "PACKAGE",
        "TABLESPACE",
        "LOGFILE",
    }
)
_OTHER_OBJECTS = frozenset({"USER", "ROLE", "SERVER", "PREPARE", "INSTANCE", "REFERENCE", "RESOURCE"})
# Words that may stand between CREATE/ALTER/DROP/RENAME and the object's kind.
_OBJECT_PREFIXES = frozenset(
    {
        "OR",
        "REPLACE",
        "TEMPORARY",
        "ONLINE",
        "OFFLINE",
        "IGNORE",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
        "AGGREGATE",
    }
)
_DML = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "CALL", "DO", "WITH", "SELECT"})
_TRANSACTION = frozenset({"COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "XA"})


def _find_object(toks: list[_Tok]) -> tuple[str, int, frozenset[str]] | None:
    """The object kind after a CREATE/ALTER/DROP/RENAME verb: (kind, its index, prefix words seen)."""
    i, seen = 1, set[str]()
    while i < min(len(toks), 48):
        k = toks[i].kw
        if k in _DDL_OBJECTS or k in _OTHER_OBJECTS:
            return k, i, frozenset(seen)
        if k == "DEFINER":  # DEFINER = user[@host] | CURRENT_USER[()]
            i += 2 if _is_op(toks[i + 1] if i + 1 < len(toks) else None, "=") else 1
            i += 1
            if i + 1 < len(toks) and _is_op(toks[i], "(") and _is_op(toks[i + 1], ")"):
                i += 2
            if i < len(toks) and _is_op(toks[i], "@"):
                i += 2
        elif k == "SQL":  # SQL SECURITY {DEFINER | INVOKER}
            i += 3
        elif k == "ALGORITHM":  # ALGORITHM = {UNDEFINED | MERGE | TEMPTABLE}
            i += 3
        elif k in _OBJECT_PREFIXES:
            seen.add(k)
            i += 1
        else:
            return None
    return None


def classify(sql: str) -> str:
    """What a QueryEvent's statement is, without parsing it.

    ``"ddl"`` (CREATE/ALTER/DROP/RENAME of tables, databases, views, indexes,
    routines...), ``"truncate"``, ``"dml"`` (statements that change rows:
    INSERT, UPDATE, DELETE, REPLACE, LOAD, and CALL/DO/SELECT/WITH, which reach
    a binlog only when statement-based logging records data changes),
    ``"transaction"`` (BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT,
    RELEASE SAVEPOINT, XA) or ``"other"`` (SET, GRANT, CREATE USER, FLUSH,
    ANALYZE, ``BEGIN NOT ATOMIC`` blocks...).  Comments are skipped and
    executable comments read as code.  Never raises.
    """
    try:
        head = list(islice(_statement_tokens(sql), 48))
    except Exception:  # not a string: nothing we know
        return "other"
    if not head:
        return "other"
    first = head[0].kw
    second = head[1].kw if len(head) > 1 else ""
    if first == "BEGIN":
        return "other" if second == "NOT" else "transaction"
    if first == "START":
        return "transaction" if second == "TRANSACTION" else "other"
    if first in _TRANSACTION:
        return "transaction"
    if first == "TRUNCATE":
        return "truncate"
    if first in _DML:
        return "dml"
    if first in ("CREATE", "ALTER", "DROP", "RENAME"):
        found = _find_object(head)
        return "other" if found is not None and found[0] in _OTHER_OBJECTS else "ddl"
    return "other"


# --------------------------------------------------------------------------- DML targets

# Words that may stand between a DML verb and its first table.
_DML_MODIFIERS = frozenset({"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "QUICK", "INTO", "FROM"})
# Words that end a table list.
_TABLE_LIST_END = frozenset(
    {
        "SET",
        "VALUES",
        "VALUE",
        "SELECT",
        "WHERE",
        "ORDER",
        "LIMIT",
        "RETURNING",
        "PARTITION",
        "ON",
        "USING",
        "DEFAULT",
        "WITH",
        "TABLE",
    }
)
_JOINS = frozenset({"JOIN", "INNER", "CROSS", "LEFT", "RIGHT", "NATURAL", "STRAIGHT_JOIN", "OUTER"})


def dml_targets(sql: str, default_database: str | None) -> list[tuple[str, str]] | None:
    """The (database, table) pairs a statement-logged INSERT/REPLACE/UPDATE/DELETE/LOAD may change.

    ``None`` when the statement's targets cannot be told without a full parse
    (CALL, DO, subqueries or joins in the table list, multi-table DELETE...):
    the caller then assumes the statement touches the default database.  A
    table without a database is resolved against ``default_database``.
    Tables only read (``INSERT ... SELECT FROM t``) are not targets.  Never raises.
    """
    try:
        toks = list(islice(_statement_tokens(sql), 4096))
    except Exception:  # noqa: BLE001 - not a string
        return None
    while toks and _is_op(toks[-1], ";"):
        toks.pop()
    verb = _kw_at(toks, 0)
    i = 1
    if verb == "LOAD":  # LOAD DATA|XML ... INTO TABLE t
        at = next(
            (j for j in range(len(toks) - 1) if toks[j].kw == "INTO" and toks[j + 1].kw == "TABLE"), None
        )
        if at is None:
            return None
        i = at + 2
    elif verb not in ("INSERT", "REPLACE", "UPDATE", "DELETE"):
        return None
    names: list[tuple[str, str]] = []
    while i < len(toks) and toks[i].kw in _DML_MODIFIERS:
        i += 1
    while i < len(toks):
        name = _ident(toks[i])
        if name is None or toks[i].kw in _TABLE_LIST_END:
            return None
        database: str | None = None
        if i + 2 < len(toks) and _is_op(toks[i + 1], "."):
            database, name = name, _ident(toks[i + 2])
            if name is None:
                return None
            i += 2
        resolved = database or default_database
        if not resolved:
            return None
        names.append((resolved, name))
        i += 1
        if verb in ("INSERT", "REPLACE", "LOAD") or i >= len(toks):
            break
        if toks[i].kw in _JOINS:
            return None  # a join: which of its tables change depends on the SET/WHERE clauses
        if toks[i].kw == "AS" or (toks[i].kind in (_WORD, _QID) and toks[i].kw not in _TABLE_LIST_END):
            i += 2 if toks[i].kw == "AS" else 1  # an alias
        if i < len(toks) and _is_op(toks[i], ","):
            if verb == "DELETE":
                return None  # DELETE t1, t2 FROM ...: the targets are aliases
            i += 1
            continue
        if i >= len(toks) or toks[i].kw in _TABLE_LIST_END:
            break
        return None  # JOIN, parentheses, anything unusual: cannot tell
    return names or None


# --------------------------------------------------------------------------- column definitions


class _NotUnderstood(Exception):
    """The statement cannot be turned into operations; the message says why."""


# Multi-word type names: (words, MySQL type, national character set).
_TYPE_PHRASES: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("NATIONAL", "CHARACTER", "VARYING"), "VARCHAR", True),
    (("NATIONAL", "CHAR", "VARYING"), "VARCHAR", True),
    (("NATIONAL", "VARCHAR"), "VARCHAR", True),
    (("NATIONAL", "CHARACTER"), "CHAR", True),
    (("NATIONAL", "CHAR"), "CHAR", True),
    (("NCHAR", "VARYING"), "VARCHAR", True),
    (("NCHAR", "VARCHAR"), "VARCHAR", True),
    (("CHARACTER", "VARYING"), "VARCHAR", False),
    (("CHAR", "VARYING"), "VARCHAR", False),
    (("LONG", "CHAR", "VARYING"), "MEDIUMTEXT", False),
    (("LONG", "VARCHAR"), "MEDIUMTEXT", False),
    (("LONG", "VARBINARY"), "MEDIUMBLOB", False),
    (("DOUBLE", "PRECISION"), "DOUBLE", False),
)
# One-word aliases, resolved to the type the server creates (sqlglot misreads several).
_TYPE_ALIASES = {
    "INTEGER": "INT",
    "INT1": "TINYINT",
    "INT2": "SMALLINT",
    "INT3": "MEDIUMINT",
    "MIDDLEINT": "MEDIUMINT",
    "INT4": "INT",
    "INT8": "BIGINT",
    "BOOL": "TINYINT",
    "BOOLEAN": "TINYINT",
    "SERIAL": "BIGINT",
    "REAL": "DOUBLE",  # unless sql_mode has REAL_AS_FLOAT
    "FLOAT4": "FLOAT",
    "FLOAT8": "DOUBLE",
    "DEC": "DECIMAL",
    "NUMERIC": "DECIMAL",
    "FIXED": "DECIMAL",
    "CHARACTER": "CHAR",
    "NCHAR": "CHAR",
    "NVARCHAR": "VARCHAR",
    "LONG": "MEDIUMTEXT",
}
_NATIONAL_CHARSET = "utf8mb3"
# CHARACTER SET binary (or BYTE) turns character types into byte types.
_BINARY_TYPES = {
    "CHAR": "BINARY",
    "VARCHAR": "VARBINARY",
    "TINYTEXT": "TINYBLOB",
    "TEXT": "BLOB",
    "MEDIUMTEXT": "MEDIUMBLOB",
    "LONGTEXT": "LONGBLOB",
}
# Words that start an index, key, constraint or period definition instead of a column.
_INDEX_WORDS = frozenset(
    {"CONSTRAINT", "PRIMARY", "UNIQUE", "KEY", "INDEX", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK"}
)


def _spell_type(base: str, args: tuple[str, ...], unsigned: bool) -> str:
    text = f"{base}({', '.join(args)})" if args else base
    try:
        spelled = exp.DataType.build(text, dialect="mysql").sql(dialect="mysql")
    except Exception:  # a type sqlglot does not know (INET6, POINT, ...): keep MySQL's own spelling
        spelled = text
    if spelled.split("(", 1)[0] != base:  # sqlglot may reformat a type, never rename it
        spelled = text
    return f"{spelled} UNSIGNED" if unsigned else spelled


def _skip_value(toks: list[_Tok], i: int) -> int:
    """Index past the value at ``toks[i]`` (a DEFAULT or ON UPDATE value)."""
    while i < len(toks) and toks[i].kind == _OP and toks[i].text in "+-":
        i += 1
    if i >= len(toks):
        return i
    tok = toks[i]
    if _is_op(tok, "("):
        return _group_end(toks, i)
    i += 1
    if tok.kind == _WORD and i < len(toks):
        if _is_op(toks[i], "("):  # CURRENT_TIMESTAMP(6), NOW()
            return _group_end(toks, i)
        if toks[i].kind == _STR:  # _utf8mb4'x', x'00', DATE '2024-01-01'
            return i + 1
    return i


def _kw_at(toks: list[_Tok], i: int) -> str:
    return toks[i].kw if 0 <= i < len(toks) else ""


@dataclass
class _Type:
    base: str
    args: tuple[str, ...] = ()
    unsigned: bool = False
    national: bool = False
    serial: bool = False


def _read_type(toks: list[_Tok], i: int) -> tuple[_Type, int]:
    """The data type starting at ``toks[i]``, with the MySQL aliases resolved; and the index past it."""
    for words, base, national in _TYPE_PHRASES:
        if tuple(_kw_at(toks, i + k) for k in range(len(words))) == words:
            typ, i = _Type(base, national=national), i + len(words)
            break
    else:
        if i >= len(toks) or toks[i].kind != _WORD:
            raise _NotUnderstood("column without a type")
        word = toks[i].kw
        typ = _Type(
            _TYPE_ALIASES.get(word, word),
            national=word in ("NCHAR", "NVARCHAR"),
            serial=word == "SERIAL",
            unsigned=word == "SERIAL",
        )
        if word in ("BOOL", "BOOLEAN"):
            typ.args = ("1",)
        i += 1
    if _is_op(toks[i] if i < len(toks) else None, "("):
        end = _group_end(toks, i)
        typ.args = tuple(" ".join(t.text for t in part) for part in _split(toks[i + 1 : end - 1]))
        i = end
    while _kw_at(toks, i) in ("UNSIGNED", "SIGNED", "ZEROFILL"):
        typ.unsigned = typ.unsigned or toks[i].kw != "SIGNED"  # ZEROFILL implies UNSIGNED
        i += 1
    if typ.base == "FLOAT" and len(typ.args) == 1 and typ.args[0].isdigit():  # FLOAT(p): p picks the type
        typ.base, typ.args = ("DOUBLE" if int(typ.args[0]) > 24 else "FLOAT"), ()
    return typ, i


def _column(toks: list[_Tok]) -> tuple[ColumnDef, bool]:
    """A column definition ``name type [attributes]``; also whether it declares the primary key."""
    name = _ident(toks[0]) if toks else None
    if name is None:
        raise _NotUnderstood(f"expected a column definition, found {toks[0].text if toks else 'nothing'!r}")
    typ, i = _read_type(toks, 1)
    n = len(toks)
    nullable, primary, generated, serial = True, False, False, typ.serial
    has_default = False
    charset = _NATIONAL_CHARSET if typ.national else None
    while i < n:
        tok, k, nxt = toks[i], toks[i].kw, _kw_at(toks, i + 1)
        if _is_op(tok, "("):  # CHECK (...), AS (...)
            i = _group_end(toks, i)
            continue
        i += 1
        if k == "NOT" and nxt == "NULL":
            nullable, i = False, i + 1
        elif k == "NULL":
            nullable = True  # the last of NULL / NOT NULL wins
        elif k == "DEFAULT":
            has_default = nxt != "NULL"
            i = _skip_value(toks, i)
        elif k == "ON" and nxt == "UPDATE":
            i = _skip_value(toks, i + 1)
        elif k == "PRIMARY" and nxt == "KEY":
            primary, i = True, i + 1
        elif k == "UNIQUE":
            i += 1 if nxt == "KEY" else 0
        elif k == "KEY":  # a bare KEY attribute is PRIMARY KEY
            primary = True
        elif k == "AS":  # [GENERATED ALWAYS] AS (expr) | AS ROW START/END
            generated = True
        elif k == "SERIAL" and nxt == "DEFAULT" and _kw_at(toks, i + 1) == "VALUE":
            serial, i = True, i + 2  # = NOT NULL AUTO_INCREMENT UNIQUE
        elif k in ("CHARACTER", "CHAR") and nxt == "SET" and i + 1 < n:
            charset, i = toks[i + 1].value.lower(), i + 2
        elif k == "CHARSET" and i < n:
            charset, i = toks[i].value.lower(), i + 1
        elif k == "ASCII":
            charset = "latin1"
        elif k == "UNICODE":
            charset = "ucs2"
        elif k == "BYTE":
            charset = "binary"
        elif k in ("COLLATE", "COMMENT", "CONSTRAINT") and nxt != "CHECK":
            i += 1  # skip the name or text, which may look like a keyword
        elif k == "REFERENCES":  # the reference comes last; its ON DELETE SET NULL is no attribute
            break
    base = _BINARY_TYPES.get(typ.base, typ.base) if charset == "binary" else typ.base
    column = ColumnDef(
        name=name,
        type_sql=_spell_type(base, typ.args, typ.unsigned),
        nullable=nullable and not primary and not serial,
        generated=generated,
        charset=charset,
        has_default=has_default,
    )
    return column, primary


def _strip_position(toks: list[_Tok]) -> tuple[list[_Tok], str | None, bool]:
    """Split ``FIRST`` / ``AFTER col`` off the end of a column clause: (rest, after, first)."""
    if len(toks) >= 2 and toks[-2].kw == "AFTER" and _ident(toks[-1]) is not None:
        return toks[:-2], _ident(toks[-1]), False
    if toks and toks[-1].kw == "FIRST":
        return toks[:-1], None, True
    return toks, None, False


def _primary_key_columns(toks: list[_Tok]) -> tuple[str, ...] | None:
    """The columns of ``[CONSTRAINT [name]] PRIMARY KEY [USING x] (cols)``; None for other definitions."""
    i = 0
    if _kw_at(toks, 0) == "CONSTRAINT":
        i = 1 if _kw_at(toks, 1) in ("PRIMARY", "UNIQUE", "FOREIGN", "CHECK") else 2
    if (_kw_at(toks, i), _kw_at(toks, i + 1)) != ("PRIMARY", "KEY"):
        return None
    i += 2
    while i < len(toks) and not _is_op(toks[i], "("):  # index name or type
        i += 1
    if i == len(toks):
        raise _NotUnderstood("PRIMARY KEY without columns")
    names = []
    for part in _split(toks[i + 1 : _group_end(toks, i) - 1]):
        name = _ident(part[0]) if part else None
        if name is None:
            raise _NotUnderstood("PRIMARY KEY on an expression")
        names.append(name)
    return tuple(names)


def _is_index_definition(toks: list[_Tok]) -> bool:
    k = _kw_at(toks, 0)
    return k in _INDEX_WORDS or (k == "PERIOD" and _kw_at(toks, 1) == "FOR")


# --------------------------------------------------------------------------- statements

# Leading words of ALTER TABLE clauses that change nothing a replica mirrors
# (indexes, storage, table options, data-preserving partition maintenance).
_NO_OP_CLAUSES = frozenset(
    {
        "ALGORITHM",
        "LOCK",
        "FORCE",
        "ENABLE",
        "DISABLE",
        "ORDER",
        "WITH",
        "WITHOUT",
        "DISCARD",
        "NOWAIT",
        "WAIT",
        "ENGINE",
        "TYPE",
        "AUTO_INCREMENT",
        "AVG_ROW_LENGTH",
        "DEFAULT",
        "CHARACTER",
        "CHARSET",
        "COLLATE",
        "CHECKSUM",
        "PAGE_CHECKSUM",
        "COMMENT",
        "CONNECTION",
        "DATA",
        "INDEX",
        "DELAY_KEY_WRITE",
        "ENCRYPTED",
        "ENCRYPTION",
        "ENCRYPTION_KEY_ID",
        "IETF_QUOTES",
        "INSERT_METHOD",
        "KEY_BLOCK_SIZE",
        "MAX_ROWS",
        "MIN_ROWS",
        "PACK_KEYS",
        "PAGE_COMPRESSED",
        "PAGE_COMPRESSION_LEVEL",
        "PASSWORD",
        "ROW_FORMAT",
        "SEQUENCE",
        "STATS_AUTO_RECALC",
        "STATS_PERSISTENT",
        "STATS_SAMPLE_PAGES",
        "TABLESPACE",
        "TRANSACTIONAL",
        "UNION",
        "COMPRESSION",
        "SECONDARY_ENGINE",
        "SECONDARY_ENGINE_ATTRIBUTE",
        "ENGINE_ATTRIBUTE",
        "AUTOEXTEND_SIZE",
        "STORAGE",
        "COALESCE",
        "REORGANIZE",
        "ANALYZE",
        "CHECK",
        "OPTIMIZE",
        "REBUILD",
        "REPAIR",
        "REMOVE",
        "PARTITION",
        "PARTITIONS",
        "UPGRADE",
        "VALIDATION",
    }
)
# Clauses that change rows without row events: a replica cannot follow them.
_DATA_CLAUSES = {
    "TRUNCATE": "TRUNCATE PARTITION deletes rows without row events",
    "EXCHANGE": "EXCHANGE PARTITION swaps rows with another table without row events",
    "IMPORT": "IMPORT TABLESPACE replaces the table's rows without row events",
}
# Objects that may hold ';' in their body (stored programs).
_COMPOUND_OBJECTS = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"})


class _Cursor:
    """A position in a token list."""

    __slots__ = ("toks", "i")

    def __init__(self, toks: list[_Tok], i: int = 0):
        self.toks, self.i = toks, i

    def kw(self, k: int = 0) -> str:
        return _kw_at(self.toks, self.i + k)

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def accept(self, *words: str) -> bool:
        """Consume ``words`` if they come next, else nothing."""
        if all(self.kw(k) == w for k, w in enumerate(words)):
            self.i += len(words)
            return True
        return False

    def accept_op(self, ch: str) -> bool:
        if _is_op(self.peek(), ch):
            self.i += 1
            return True
        return False

    def name(self) -> str:
        tok = self.peek()
        name = _ident(tok)
        if name is None:
            raise _NotUnderstood(f"expected a name, found {tok.text if tok else 'the end'!r}")
        self.i += 1
        return name

    def qualified(self) -> tuple[str | None, str]:
        first = self.name()
        if self.accept_op("."):
            return first, self.name()
        return None, first

    def group(self) -> list[_Tok]:
        """The tokens inside the parenthesis that comes next."""
        end = _group_end(self.toks, self.i)
        inner = self.toks[self.i + 1 : end - 1]
        self.i = end
        return inner

    def rest(self) -> list[_Tok]:
        rest = self.toks[self.i :]
        self.i = len(self.toks)
        return rest

    def skip_wait(self) -> None:
        if not self.accept("NOWAIT") and self.accept("WAIT"):
            self.i += 1

    def expect_end(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise _NotUnderstood(f"unexpected {tok.text!r}")


class _Parser:
    """Collects what one statement does; tables are recorded as soon as they are read."""

    def __init__(self, default_database: str | None):
        self.default_database = default_database or None
        self.ops: list[DdlOp] = []
        self.tables: list[tuple[str, str]] = []
        self.truncates: list[tuple[str, str]] = []
        self.databases: list[str] = []
        self.temporary: list[tuple[str, str]] = []
        self.primary_key_changed = False
        self.statement = ""

    # -- helpers

    def resolve(self, qualified: tuple[str | None, str], touch: bool = True) -> tuple[str, str]:
        database = qualified[0] if qualified[0] is not None else self.default_database
        resolved = (database or "", qualified[1])
        if touch and resolved not in self.tables:
            self.tables.append(resolved)
        if not database:
            raise _NotUnderstood(f"table {qualified[1]!r} has no database and the session has none")
        return resolved

    def table(self, cur: _Cursor) -> tuple[str, str]:
        return self.resolve(cur.qualified())

    def op(self, kind: SchemaOpKind, table: tuple[str, str], **fields: object) -> None:
        self.ops.append(DdlOp(kind, table[0], table[1], **fields))  # type: ignore[arg-type]

    # -- dispatch

    def run(self, sql: str) -> None:
        toks = list(_statement_tokens(sql))
        while toks and _is_op(toks[-1], ";"):
            toks.pop()
        verb = _kw_at(toks, 0)
        if verb == "TRUNCATE":
            self.statement = "TRUNCATE TABLE"
            found: tuple[str, int, frozenset[str]] | None = ("TABLE", 0, frozenset())
        elif verb in ("CREATE", "ALTER", "DROP", "RENAME"):
            found = _find_object(toks)
        else:
            raise _NotUnderstood("not a DDL statement")
        if found is None:
            self.statement = verb
            raise _NotUnderstood(f"unrecognised {verb} statement")
        obj, at, prefixes = found
        if obj in _OTHER_OBJECTS:
            raise _NotUnderstood(f"{verb} {obj} is not DDL")
        obj = {"TABLES": "TABLE", "SCHEMA": "DATABASE"}.get(obj, obj)
        if verb != "TRUNCATE":
            self.statement = f"{verb} {'TEMPORARY ' if 'TEMPORARY' in prefixes else ''}{obj}"
        several = obj not in _COMPOUND_OBJECTS and any(_is_op(t, ";") for t in toks)
        if several:  # one statement per QueryEvent; read the first one's tables, but follow none
            toks = toks[: next(i for i, t in enumerate(toks) if _is_op(t, ";"))]
        cur = _Cursor(toks, at + 1)
        handler = {
            ("TRUNCATE", "TABLE"): self.truncate,
            ("CREATE", "TABLE"): self.create_table,
            ("ALTER", "TABLE"): self.alter_table,
            ("DROP", "TABLE"): self.drop_table,
            ("RENAME", "TABLE"): self.rename_table,
            ("CREATE", "INDEX"): self.index_on,
            ("DROP", "INDEX"): self.index_on,
        }.get((verb, obj))
        if handler is not None:
            handler(cur, prefixes)
        elif obj == "DATABASE":
            self.database(cur, verb)
        elif obj == "INDEX":
            raise _NotUnderstood(f"{verb} INDEX")
        # Views, triggers, routines, events, sequences, tablespaces: no table changes shape.
        if several:
            raise _NotUnderstood("several statements in one")

    # -- handlers

    def truncate(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        cur.accept("TABLE")
        table = self.table(cur)
        cur.skip_wait()
        cur.expect_end()
        self.truncates.append(table)

    def create_table(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        if "TEMPORARY" in prefixes:
            # Session-private and never replicated; it may shadow a real table of
            # the same name, so it is not reported as touching that table.
            cur.accept("IF", "NOT", "EXISTS")
            self.temporary.append(self.resolve(cur.qualified(), touch=False))
            return
        if_not_exists = cur.accept("IF", "NOT", "EXISTS")
        table = self.table(cur)
        ops_before: list[DdlOp] = []
        if "REPLACE" in prefixes:  # CREATE OR REPLACE drops the table first
            ops_before.append(DdlOp(SchemaOpKind.DROP_TABLE, table[0], table[1], if_exists=True))
        like_source: tuple[str, str] | None = None
        if cur.accept("LIKE"):
            like_source = self.resolve(cur.qualified(), touch=False)
            cur.expect_end()
        elif _is_op(cur.peek(), "(") and cur.kw(1) == "LIKE":
            inner = _Cursor(cur.group(), 1)
            like_source = self.resolve(inner.qualified(), touch=False)
            inner.expect_end()
            cur.expect_end()
        if like_source is not None:
            self.ops += ops_before
            self.op(SchemaOpKind.CREATE_TABLE, table, like=like_source, if_exists=if_not_exists)
            return
        if not _is_op(cur.peek(), "(") or cur.kw(1) == "SELECT":
            raise _NotUnderstood("CREATE TABLE ... SELECT: the columns come from a query")
        body = cur.group()
        tail = cur.rest()
        if any(t.kw == "SELECT" for t in tail):
            raise _NotUnderstood("CREATE TABLE ... SELECT: some columns come from a query")
        if any(t.kw == "VERSIONING" for t in tail):
            raise _NotUnderstood("system-versioned table (hidden row-period columns)")
        columns: list[ColumnDef] = []
        primary_key: tuple[str, ...] = ()
        for item in _split(body):
            if _is_index_definition(item):
                primary_key = _primary_key_columns(item) or primary_key
                continue
            column, primary = _column(item)
            columns.append(column)
            if primary:
                primary_key = (column.name,)
        if not columns:
            raise _NotUnderstood("CREATE TABLE without columns")
        by_name = {c.name.casefold(): c.name for c in columns}
        primary_key = tuple(by_name.get(k.casefold(), k) for k in primary_key)
        key_set = {k.casefold() for k in primary_key}
        columns = [
            dataclasses.replace(c, nullable=False) if c.name.casefold() in key_set else c for c in columns
        ]
        self.ops += ops_before
        self.op(
            SchemaOpKind.CREATE_TABLE,
            table,
            columns=tuple(columns),
            primary_key=primary_key,
            if_exists=if_not_exists,
        )

    def drop_table(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        if "TEMPORARY" in prefixes:
            cur.accept("IF", "EXISTS")
            for part in _split(cur.rest()):
                self.temporary.append(self.resolve(_Cursor(part).qualified(), touch=False))
            return
        if_exists = cur.accept("IF", "EXISTS")
        parts = _split(cur.rest())
        problem: _NotUnderstood | None = None
        for n, part in enumerate(parts):
            try:  # read every name before giving up on any
                c = _Cursor(part)
                table = self.table(c)
                if n == len(parts) - 1:
                    c.skip_wait()
                    c.accept("RESTRICT") or c.accept("CASCADE")
                c.expect_end()
                self.op(SchemaOpKind.DROP_TABLE, table, if_exists=if_exists)
            except _NotUnderstood as exc:
                problem = problem or exc
        if problem:
            raise problem

    def rename_table(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        if_exists = cur.accept("IF", "EXISTS")
        problem: _NotUnderstood | None = None
        for part in _split(cur.rest()):
            try:
                c = _Cursor(part)
                old = self.table(c)
                c.skip_wait()
                if not c.accept("TO"):
                    raise _NotUnderstood("RENAME TABLE without TO")
                new = self.table(c)
                c.expect_end()
                self.op(
                    SchemaOpKind.RENAME_TABLE,
                    old,
                    old_name=old[1],
                    new_name=new[1],
                    new_database=new[0],
                    if_exists=if_exists,
                )
            except _NotUnderstood as exc:
                problem = problem or exc
        if problem:
            raise problem

    def index_on(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        """CREATE/DROP INDEX ... ON table: touches the table, changes no column."""
        depth = 0
        while (tok := cur.peek()) is not None and not (tok.kw == "ON" and depth == 0):
            depth += 1 if _is_op(tok, "(") else -1 if _is_op(tok, ")") else 0
            cur.i += 1
        if not cur.accept("ON"):
            raise _NotUnderstood("index without ON table")
        self.table(cur)

    def database(self, cur: _Cursor, verb: str) -> None:
        cur.accept("IF", "NOT", "EXISTS") or cur.accept("IF", "EXISTS")
        tok = cur.peek()
        options = ("DEFAULT", "CHARACTER", "CHARSET", "COLLATE", "COMMENT")
        if tok is not None and _ident(tok) is not None and not (verb == "ALTER" and tok.kw in options):
            self.databases.append(cur.name())
        elif verb == "ALTER" and self.default_database:
            self.databases.append(self.default_database)
        else:
            raise _NotUnderstood(f"{verb} DATABASE without a name")

    # -- ALTER TABLE

    def alter_table(self, cur: _Cursor, prefixes: frozenset[str]) -> None:
        if_exists = cur.accept("IF", "EXISTS")
        table = self.table(cur)
        cur.skip_wait()
        rest = cur.rest()
        depth = 0
        for i, tok in enumerate(rest):  # partition options follow the clauses, without a comma
            depth += 1 if _is_op(tok, "(") else -1 if _is_op(tok, ")") else 0
            if depth == 0 and tok.kw == "PARTITION" and _kw_at(rest, i + 1) == "BY":
                rest = rest[:i]
                break
        clauses = _split(rest)
        if clauses == [[]]:
            return
        renames: list[DdlOp] = []
        for clause in clauses:
            if not clause:
                raise _NotUnderstood("empty ALTER TABLE clause")
            if clause[0].kw == "ORDER":  # ORDER BY a, b comes last: the rest are its columns
                break
            self.alter_clause(table, _Cursor(clause, 1), clause[0].kw, if_exists, renames)
        self.ops += renames

    def alter_clause(
        self, table: tuple[str, str], c: _Cursor, verb: str, if_exists: bool, renames: list[DdlOp]
    ) -> None:
        if verb == "ADD":
            self.alter_add(table, c, if_exists)
        elif verb == "DROP":
            self.alter_drop(table, c, if_exists)
        elif verb in ("MODIFY", "CHANGE"):
            c.accept("COLUMN")
            if_exists = c.accept("IF", "EXISTS") or if_exists
            old = c.name() if verb == "CHANGE" else None
            rest, after, first = _strip_position(c.rest())
            column, primary = _column(rest)
            self.primary_key_changed |= primary
            self.op(
                SchemaOpKind.MODIFY_COLUMN,
                table,
                column=column,
                old_name=old or column.name,
                new_name=column.name,
                after=after,
                first=first,
                if_exists=if_exists,
            )
        elif verb == "RENAME":
            if c.accept("COLUMN"):
                if_exists = c.accept("IF", "EXISTS") or if_exists
                old = c.name()
                if not c.accept("TO"):
                    raise _NotUnderstood("RENAME COLUMN without TO")
                new = c.name()
                c.expect_end()
                self.op(SchemaOpKind.RENAME_COLUMN, table, old_name=old, new_name=new, if_exists=if_exists)
            elif c.kw() not in ("INDEX", "KEY"):
                c.accept("TO") or c.accept("AS") or c.accept_op("=")
                # An unqualified new name is in the session's database, not the table's.
                target = self.resolve(c.qualified())
                c.expect_end()
                renames.append(
                    DdlOp(
                        SchemaOpKind.RENAME_TABLE,
                        table[0],
                        table[1],
                        old_name=table[1],
                        new_name=target[1],
                        new_database=target[0],
                        if_exists=if_exists,
                    )
                )
        elif verb == "CONVERT":
            if c.kw() != "TO":  # CONVERT PARTITION p TO TABLE t / CONVERT TABLE t TO PARTITION p
                raise _NotUnderstood("CONVERT PARTITION/TABLE moves rows between tables without row events")
        elif verb in _DATA_CLAUSES:
            raise _NotUnderstood(_DATA_CLAUSES[verb])
        elif verb != "ALTER" and verb not in _NO_OP_CLAUSES:  # ALTER [COLUMN] x SET/DROP DEFAULT, ALTER INDEX
            tok = c.toks[0]
            raise _NotUnderstood(f"unsupported ALTER TABLE clause starting {tok.text!r}")

    def alter_add(self, table: tuple[str, str], c: _Cursor, if_exists: bool) -> None:
        explicit_column = c.accept("COLUMN")
        rest = c.toks[c.i :]
        if not explicit_column:
            if _is_index_definition(rest) or c.kw() == "PARTITION":
                if _primary_key_columns(rest) is not None:
                    self.primary_key_changed = True
                return
            if c.kw() == "SYSTEM" and c.kw(1) == "VERSIONING":
                raise _NotUnderstood("ADD SYSTEM VERSIONING adds hidden row-period columns")
        if_exists = c.accept("IF", "NOT", "EXISTS") or if_exists
        if _is_op(c.peek(), "("):  # ADD [COLUMN] (a INT, b INT, INDEX (a))
            items = _split(c.group())
            c.expect_end()
            for item in items:
                if _is_index_definition(item):
                    self.primary_key_changed |= _primary_key_columns(item) is not None
                    continue
                column, primary = _column(item)
                self.primary_key_changed |= primary
                self.op(SchemaOpKind.ADD_COLUMN, table, column=column, if_exists=if_exists)
            return
        rest, after, first = _strip_position(c.rest())
        column, primary = _column(rest)
        self.primary_key_changed |= primary
        self.op(SchemaOpKind.ADD_COLUMN, table, column=column, after=after, first=first, if_exists=if_exists)

    def alter_drop(self, table: tuple[str, str], c: _Cursor, if_exists: bool) -> None:
        if not c.accept("COLUMN"):
            k, nxt = c.kw(), c.kw(1)
            if k in ("INDEX", "KEY", "CHECK") or (k, nxt) in (("FOREIGN", "KEY"), ("PERIOD", "FOR")):
                return
            if k == "CONSTRAINT":
                c.i += 1
                c.accept("IF", "EXISTS")
                self.primary_key_changed |= c.name().casefold() == "primary"
                return
            if (k, nxt) == ("PRIMARY", "KEY"):
                self.primary_key_changed = True
                return
            if k == "PARTITION":
                raise _NotUnderstood("DROP PARTITION deletes rows without row events")
            if (k, nxt) == ("SYSTEM", "VERSIONING"):
                raise _NotUnderstood("DROP SYSTEM VERSIONING changes hidden columns and rows")
        if_exists = c.accept("IF", "EXISTS") or if_exists
        name = c.name()
        c.accept("RESTRICT") or c.accept("CASCADE")
        c.expect_end()
        self.op(SchemaOpKind.DROP_COLUMN, table, old_name=name, if_exists=if_exists)

    def result(self, reason: str = "") -> ParsedDdl:
        return ParsedDdl(
            ops=() if reason else tuple(self.ops),
            truncates=() if reason else tuple(self.truncates),
            tables=tuple(self.tables),
            understood=not reason,
            primary_key_changed=self.primary_key_changed,
            statement=self.statement,
            databases=tuple(self.databases),
            reason=reason,
            temporary=tuple(self.temporary),
        )


def parse_ddl(sql: str, default_database: str | None) -> ParsedDdl:
    """The table operations of one DDL statement run with ``default_database`` selected.

    Never raises: a statement that cannot be followed comes back with
    ``understood=False``, a ``reason``, and the tables it was seen to name.
    """
    parser = _Parser(default_database)
    try:
        parser.run(sql)
    except _NotUnderstood as exc:
        return parser.result(str(exc) or "not understood")
    except Exception as exc:  # a parser bug must not stop the stream: report it as not understood
        return parser.result(f"internal error: {exc!r}")
    return parser.result()

"""Run the local BigQuery emulator (PyPI ``local-bigquery``) offline, for the tests and CI.

Started by ``scripts/setup-bigquery-emulator.sh`` with the emulator's own venv (Python 3.13, packages
pinned in ``scripts/bigquery-emulator-requirements.txt``)::

    <venv>/bin/python scripts/bigquery_emulator.py serve --host 127.0.0.1 --port 9050 \\
        --grpc-port 9060 --data-dir <dir>

The arguments are ``local-bigquery``'s own (``serve``, ``repl``, ``reset``); this module only patches
DuckDB before handing over to the emulator's command line.  Why each patch exists:

- ``local-bigquery`` 0.4.0 asks for DuckDB >= 2.0, whose connection rejects the ``TimeZone`` option
  the emulator passes to ``duckdb.connect``, and which fetches extensions from the network at run
  time.  The venv pins DuckDB 1.5.5 instead (installed with ``pip --no-deps``, so pip does not
  object to the emulator's requirement).
- DuckDB 1.5.5 applies the connect options before any extension is loaded, and ``TimeZone`` belongs
  to the icu extension: ``duckdb.connect(config={"TimeZone": ...})`` fails ("the icu extension needs
  to be loaded").  The patched ``connect`` drops that option and runs ``SET TimeZone`` on the open
  connection instead, which gives the emulator the same session time zone.
- The emulator needs extensions (ducklake for its storage, spatial for GEOGRAPHY) that DuckDB would
  otherwise download on first use, into ``~/.duckdb``.  There is no network here, and a download at
  run time would make results depend on whatever the extension server ships that day.  The venv
  installs them from PyPI as the pinned ``duckdb-extension-*`` wheels; at start this module
  installs each extension file from those wheels into a directory inside the venv, and every
  connection gets that ``extension_directory`` with ``autoinstall_known_extensions`` off, so a
  missing extension is an error instead of a download.  Extensions that this DuckDB build links
  statically (icu, json, parquet in the Linux wheels) are always loaded and are not installed again.
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig
from typing import Any

import duckdb

EXTENSION_DIRECTORY = pathlib.Path(sys.prefix) / "duckdb_extensions"

_duckdb_connect = duckdb.connect


def connect(
    database: Any = ":memory:", read_only: bool = False, config: dict[str, Any] | None = None, **kw: Any
):
    """``duckdb.connect`` with the emulator's options made to work offline on DuckDB 1.5 (see above)."""
    options = dict(config or {})
    time_zone = options.pop("TimeZone", None)
    options.setdefault("extension_directory", str(EXTENSION_DIRECTORY))
    options.setdefault("autoinstall_known_extensions", False)
    con = _duckdb_connect(database, read_only, options, **kw)
    if time_zone is not None:
        con.execute("SET TimeZone = $1", [str(time_zone)])
    return con


def extension_files() -> list[pathlib.Path]:
    """The ``.duckdb_extension`` files shipped by the ``duckdb-extension-*`` wheels of this venv."""
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    return sorted(site.glob("duckdb_extension_*/extensions/*/*.duckdb_extension"))


def install_extensions() -> None:
    files = extension_files()
    if not files:
        raise SystemExit(
            "bigquery_emulator: no duckdb-extension-* wheel in this venv; "
            "install scripts/bigquery-emulator-requirements.txt (scripts/setup-bigquery-emulator.sh)"
        )
    EXTENSION_DIRECTORY.mkdir(parents=True, exist_ok=True)
    with connect() as con:
        built_in = {
            name
            for (name,) in con.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE install_mode = 'STATICALLY_LINKED'"
            ).fetchall()
        }
        for path in files:
            name = path.name.removesuffix(".duckdb_extension")
            if name not in built_in:
                # INSTALL takes a literal, not a parameter; the path is this venv's own site-packages
                con.execute("INSTALL '{}'".format(str(path).replace("'", "''")))


def main(argv: list[str]) -> None:
    duckdb.connect = connect  # the emulator calls duckdb.connect through the module attribute
    install_extensions()
    from local_bigquery import cli

    cli.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])

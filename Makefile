# cartridge-warp developer targets.  Everything runs inside .venv, created on
# first use with the machine's python3 (3.11+).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PY      = $(BIN)/python
STAMP   = $(VENV)/.installed-$(EXTRAS)
EXTRAS ?= test

.PHONY: help venv install install-dev install-all setup-db setup-bigquery demo test test-fast format lint type-check import-check check bench bench-oltp bench-batch bench-batch-bigquery bench-mysql bench-mongo bench-bigquery clean

help:
	@echo "make demo        replicate generated MariaDB and MongoDB sample databases into PostgreSQL, live"
	@echo "make test        run the test suite against the local MariaDB and PostgreSQL"
	@echo "make check       ruff, mypy and the import contract (lint-imports), as CI runs them"
	@echo "make bench-oltp  benchmark MariaDB -> PostgreSQL with one-row statements: catch-up, library parse, live lag"
	@echo "make bench-batch mode: batch, MariaDB -> PostgreSQL: full refresh and incremental runs against raw read and COPY"
	@echo "make bench-batch-bigquery  the same, BigQuery (the local emulator) -> PostgreSQL"
	@echo "make install-dev / install-all / format / lint / type-check / import-check / bench / bench-mysql / bench-mongo / bench-bigquery / setup-db / setup-bigquery"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e ".[$*]"
	@touch $@

install: $(VENV)/.installed-test
install-dev: $(VENV)/.installed-dev,test
install-all: $(VENV)/.installed-dev,test,bigquery

setup-db:
	bash scripts/setup-databases.sh

# the local BigQuery emulator alone (setup-db runs it too); stop it with
# `bash scripts/setup-bigquery-emulator.sh stop`
setup-bigquery:
	bash scripts/setup-bigquery-emulator.sh

demo: install setup-db
	$(PY) scripts/demo.py

test: install setup-db
	@# pytest's exit 5 (no tests collected) fails like any other; make itself reports only "Error"
	$(BIN)/pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests: that is a failure"; exit $$rc; }

format: install-dev
	$(BIN)/ruff format warpd tests scripts
	$(BIN)/ruff check --fix warpd tests scripts

lint: install-dev
	$(BIN)/ruff check warpd tests scripts
	$(BIN)/ruff format --check warpd tests scripts

type-check: install-dev
	$(BIN)/mypy warpd

# the engine, state store and supervisor import no database driver or concrete connector (setup.cfg)
import-check: install-dev
	$(BIN)/lint-imports

check: lint type-check import-check

bench: install setup-db
	$(PY) scripts/bench/mysql_to_postgres.py

bench-oltp: install setup-db
	$(PY) scripts/bench/oltp_mysql_to_postgres.py

bench-batch: install setup-db
	$(PY) scripts/bench/batch_mysql_to_postgres.py $(BENCH_ARGS)

# BigQuery (the local emulator, which setup-db starts) -> PostgreSQL; needs the bigquery extra
bench-batch-bigquery: install-all setup-db
	$(PY) scripts/bench/batch_bigquery_to_postgres.py $(BENCH_ARGS)

bench-mysql: install setup-db
	$(PY) scripts/bench/mysql_to_mysql.py

bench-mongo: install setup-db
	$(PY) scripts/bench/mongodb_to_postgres.py

# MariaDB -> the local BigQuery emulator (setup-db starts it); needs the bigquery extra
bench-bigquery: install-all setup-db
	$(PY) scripts/bench/mysql_to_bigquery.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

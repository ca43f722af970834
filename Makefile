# Two commands matter: `make demo` runs three governed cycles on the embedded default; `make test` runs the tests.
# Both build their environment from nothing (Python 3.11 + pip are the only prerequisites).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export MEMGOV_HOME ?= $(CURDIR)/.memgov
export TQDM_MININTERVAL ?= 1

.PHONY: demo test ui lint bench install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,prod]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/memgov demo --fresh

test: $(VENV)/.installed
	bash infra/scripts/ensure-system-packages.sh
	$(PY) -m ruff check .
	$(PY) -m pytest -q --numprocesses auto --maxprocesses 4 --dist loadscope

ui: $(VENV)/.installed
	$(VENV)/bin/memgov ui

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(MEMGOV_HOME) $(MEMGOV_HOME).secrets $(MEMGOV_HOME).demo-keys

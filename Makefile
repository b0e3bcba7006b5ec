# Two entry points, each sets itself up on a fresh machine:
#   make run   - the end-to-end pipeline on the quickstart config (embedded DuckDB + Prefect)
#   make test  - the test suite (offline), one worker per core (pytest-xdist)
# and the main job's offline twin:
#   make demo  - the whole pipeline on the bundled real fixtures, no network, a few minutes
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= configs/quickstart.yaml
BIN     = $(VENV)/bin

$(BIN)/ant: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: install run test demo
install: $(BIN)/ant

run: install
	$(BIN)/ant run --config $(CONFIG)

demo: install
	$(BIN)/ant demo

test: install
	$(BIN)/python -m pytest -n auto --dist worksteal $(PYTEST_ARGS)

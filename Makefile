# Two entry points for a fresh machine with Python 3.11 and pip:
#   make run   -> create .venv, install, run the main job on the embedded default
#   make test  -> create .venv, install with dev extras, run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the run needs the package with its training and serving stacks (a service needs only
# `pip install smartpick-ml`); tests and lint add the dev tools (pytest, hypothesis, ruff,
# Jupyter for the notebook tests)
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[train,serve]"
	touch $(STAMP)

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/smartpick run

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check smartpick_ml tests benchmarks scripts

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) data/raw/*.parquet data/processed/* models/*.skops models/*.json models/*.parquet models/*.html mlflow.db mlruns mlartifacts

# Two entry points: `make run` serves the shipped models, `make test` runs the test suite.
# Both create .venv on first use from pyproject.toml (torch pinned to the 2.13.0 CPU build).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test train benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.serve

run: $(VENV)/.serve
	$(BIN)/ecg-serve

test: $(VENV)/.dev
	$(BIN)/python -m pytest

train: $(VENV)/.dev
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/train-all.sh $(DATA)

benchmark: $(VENV)/.dev
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV)

# Two entry points: `make run` serves the shipped models, `make test` runs the test suite.
# Both create .venv on first use from pyproject.toml. `run` installs the lean serving install (no torch);
# `test` and `train` add the training extra, with torch 2.13.0's CPU build installed first (`make torch`).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: run test train benchmark torch clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The CPU build of torch, never a CUDA one: a wheel pip already finds without an index (a machine's
# local wheelhouse, e.g. PIP_FIND_LINKS), else PyTorch's CPU index. A plain package index would
# resolve the CUDA build and its nvidia-* packages.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-index --no-deps '$(TORCH)' 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) '$(TORCH)'
	touch $@

torch: $(VENV)/.torch

$(VENV)/.dev: pyproject.toml $(VENV)/.torch | $(BIN)/python
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

# pledgewatch: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help run test check bench fuzz clean system

help:
	@echo "make run    - install into .venv and run the demo"
	@echo "make test   - install into .venv and run the whole test suite"
	@echo "make check  - ruff, and mypy on every package"
	@echo "make bench  - benchmarks, printed as ratios against a baseline measured in the same run"
	@echo "make fuzz   - 10^6 garbage bytes per decoder, the ingest path and the CSV importers"
	@echo "make clean  - remove .venv and build output"

# System packages the tests need (none yet beyond Python); installs with apt as root.
system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml scripts/setup-system.sh
	@bash scripts/setup-system.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/pledgewatch demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 3

check: $(STAMP)
	$(BIN)/ruff check protocols uplink firmware_sim edge gateway cloud pledgewatch tests bench examples
	$(BIN)/mypy protocols uplink edge gateway cloud firmware_sim pledgewatch

bench: $(STAMP)
	$(BIN)/python -m bench

fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

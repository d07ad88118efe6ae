# Tally's developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the commands
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv and install Tally

.PHONY: install-dev
install-dev: $(DEV_STAMP) ## Install Tally with the test and lint tools

.PHONY: run
run: $(STAMP) ## Migrate the local SQLite database, seed the demo store and start Tally
	$(BIN)/tally migrate
	$(BIN)/tally demo
	$(BIN)/tally serve

.PHONY: services
services: ## Install (if missing) and start the services the tests need (PostgreSQL, Chromium)
	@scripts/postgres.sh start >/dev/null
	@scripts/chromium.sh >/dev/null

.PHONY: test
test: $(DEV_STAMP) services ## Run the whole test suite on SQLite and PostgreSQL
	TALLY_TEST_POSTGRES_URL=$$(scripts/postgres.sh url) \
	TALLY_TEST_BACKENDS=sqlite,postgresql \
	$(BIN)/pytest --cov=tally --cov-report=term:skip-covered $(PYTEST_ARGS)

.PHONY: lint
lint: $(DEV_STAMP) ## Ruff (lint and format check) and mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

.PHONY: format
format: $(DEV_STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

.PHONY: bench
bench: $(DEV_STAMP) services ## Run the benchmarks under bench/
	TALLY_BENCH_POSTGRES_URL=$$(scripts/postgres.sh url) $(BIN)/python bench/ledger.py

.PHONY: clean
clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

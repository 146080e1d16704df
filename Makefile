# Consultation chat — on a fresh machine: `make run` (the whole stack) and `make test` (the whole suite).
# Every target installs what it needs first: .venv, the project (only when pyproject.toml changed),
# PostgreSQL and RabbitMQ (started when installed but stopped).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export VENV

# `make run` settings (see README): administrator account and launcher options.
ADMIN_USERNAME ?= admin
ADMIN_EMAIL ?= admin@example.com
export ADMIN_USERNAME ADMIN_EMAIL
REPLICAS ?=
LAUNCHER_ARGS ?=
# `make test PYTEST_ARGS="tests/deploy -x"` runs a part of the suite.
PYTEST_ARGS ?=
LINT_PATHS ?= services shared deploy bench tests
TYPE_PATHS ?= services shared deploy bench

.PHONY: help install infra migrate run test browser-deps lint format bench clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: ## create .venv and install the project (only when pyproject.toml changed)
	@bash deploy/setup/install.sh

infra: install ## check PostgreSQL and RabbitMQ; start them when installed but stopped
	@$(PY) -m deploy.infra

migrate: infra ## create the database `chat` if missing and apply every service's migrations
	@$(PY) -m shared.migrate

run: migrate ## start the four services and the dev mail sink; Ctrl-C stops everything
	@exec $(PY) -m deploy.launcher $(if $(REPLICAS),--replicas $(REPLICAS)) $(LAUNCHER_ARGS)

browser-deps: ## install Debian's chromium for the browser tests when missing (never a browser download)
	@bash deploy/ensure_chromium.sh

# No `migrate` here: the test fixtures create, migrate and drop their own database and vhost per run,
# so two concurrent runs never touch the same objects.
test: infra browser-deps ## run the whole pytest suite against the real PostgreSQL and RabbitMQ
	@$(PY) -m deploy.pytest_gate $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(TYPE_PATHS)

format: install ## ruff format and safe fixes
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

bench: migrate ## run the benchmarks (python -m bench) when they exist
	@if [[ -f bench/__main__.py || -f bench/__init__.py ]]; then \
		$(PY) -m bench $(BENCH_ARGS); \
	else \
		echo "no benchmarks yet: bench/ is added by the benchmarks issue"; \
	fi

clean: ## remove caches and test artifacts (keeps .venv and var/: dev signing keys)
	rm -rf .pytest_cache .mypy_cache .ruff_cache tests/artifacts build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean ## also remove .venv and var/ (dev signing keys: tokens issued so far stop verifying)
	rm -rf $(VENV) var

# feedcast — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
FEEDCAST := $(VENV)/bin/feedcast
STAMP := $(VENV)/.installed-stamp

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-8s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install feedcast + dev tools (uv; skipped when up to date)

$(STAMP): pyproject.toml scripts/install.sh
	@scripts/install.sh
	@touch $@

demo: install ## Start the stack, generate a world, train, serve, print ranked feeds and metrics
	@$(FEEDCAST) demo

test: install ## The whole suite; starts what the stack lacks and stops it again afterwards
	@$(PY) -m pytest tests

unit: install ## Only the tests that need no services
	@$(PY) -m pytest tests/unit

lint: install ## ruff (lint + format check) and mypy on the packages
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

format: install ## Apply ruff's formatting and safe fixes
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: install ## Benchmarks; JSON figures under bench/results/
	@$(FEEDCAST) stack up
	@$(PY) -m bench.run

chaos: install ## Fault, load and abuse scenarios (minutes each); bench/results/chaos.json, docs/RELIABILITY.md
	@$(FEEDCAST) stack up
	@$(PY) -m bench.chaos

up: install ## Start the local stack only
	@$(FEEDCAST) stack up

down: ## Stop everything the stack and the demo started
	@[ -x $(FEEDCAST) ] && $(FEEDCAST) stack down || true

status: ## Show what runs
	@$(FEEDCAST) stack status

clean: down ## Stop the stack and delete its data (.feedcast/) and the venv
	rm -rf .feedcast $(VENV)

.PHONY: help install demo test unit lint format bench chaos up down status clean

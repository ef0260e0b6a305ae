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

install: $(STAMP) ## Create .venv and install feedcast + dev tools from uv.lock (skipped when up to date)
	@:

$(STAMP): pyproject.toml uv.lock scripts/install.sh
	@scripts/install.sh
	@touch $@

lock: ## Re-resolve uv.lock after editing pyproject.toml (LOCK_ARGS=--upgrade bumps all), then commit it
	@PATH="$$HOME/.local/bin:$$PATH" uv lock $(LOCK_ARGS)

demo: install ## Start the stack, generate a world, train, serve, print ranked feeds and metrics
	@$(FEEDCAST) demo

test: install ## The whole suite; starts what the stack lacks and stops it again afterwards
	@$(PY) -m pytest tests --durations=25

unit: install ## Only the tests that need no services
	@$(PY) -m pytest tests/unit

lint: install ## ruff (lint + format check), mypy, the layer contracts (lint-imports), uv.lock current
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports --no-cache
	@PATH="$$HOME/.local/bin:$$PATH" uv lock --check -q || { echo 'uv.lock is stale: run `make lock` and commit it' >&2; exit 1; }

format: install ## Apply ruff's formatting and safe fixes
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: install ## Benchmarks; JSON figures under bench/results/
	@$(FEEDCAST) stack up
	@$(PY) -m bench.run

results: install ## Record the last `make bench` JSON under docs/results/ and render docs/RESULTS.md
	@$(PY) -m bench.results --record

docs: install ## Regenerate docs/CONFIG.md (from Settings) and docs/RESULTS.md (from docs/results/)
	@$(PY) -m core.settings_doc
	@$(PY) -m bench.results

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

.PHONY: help install lock demo test unit lint format bench results docs chaos up down status clean

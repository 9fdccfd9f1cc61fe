# CityScale — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
export HTTP_PORT GRPC_PORT

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=..."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	@touch $@

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment and install the project (done by every target that needs it)

.PHONY: run
run: $(STAMP) ## Run the training pipeline locally (kfp.local), serve the model, print a 24 h forecast
	$(BIN)/cityscale run

.PHONY: test
test: $(STAMP) ## Run the whole test suite (unit, contract, kfp.local e2e, real servers on loopback)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

.PHONY: compile
compile: $(STAMP) ## Compile the pipelines to pipelines/compiled/*.yaml
	$(BIN)/cityscale compile

.PHONY: serve
serve: $(STAMP) ## Serve the production model over V2 REST (HTTP_PORT) and gRPC (GRPC_PORT) until stopped
	$(BIN)/cityscale serve

.PHONY: lint
lint: $(STAMP) ## Lint and format-check the Python code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: bench
bench: $(STAMP) ## Run every benchmark; each prints a table and writes build/bench/<name>.json
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

.PHONY: clean
clean: ## Remove local outputs, build files and caches (keeps the virtual environment)
	rm -rf local_outputs build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv*' -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## Also remove the virtual environment(s)
	rm -rf $(VENV) .venv-*

# tradeloom: `make demo` runs the main job end to end; `make test` runs the whole suite.
# Both first run `setup` (Debian packages, TimescaleDB, the three venvs), which is idempotent.
SHELL := /bin/bash
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# numba keeps its compiled kernels here rather than beside the sources.
export NUMBA_CACHE_DIR := $(CURDIR)/.loom/numba-cache
ML := .loom/venv-ml/bin
LIVE := .loom/venv-live/bin
BENCH ?=

.PHONY: setup setup-system setup-venvs demo test test-ml test-live lint bench lock db-up db-down clean

setup: setup-system setup-venvs

setup-system:
	@bash scripts/setup_system.sh

setup-venvs:
	@bash scripts/setup_venvs.sh ml live airflow

demo: setup
	$(ML)/tradeloom demo

lint: setup-venvs
	$(ML)/ruff check tradeloom pipelines executor dags tests bench
	$(ML)/mypy
	$(ML)/lint-imports

test: setup lint
	$(ML)/python -m pytest -q --timeout=900 --ignore=tests/live tests
	@if [ -d tests/live ]; then $(LIVE)/python -m pytest -q --timeout=900 tests/live; fi

# Benchmarks that drive the executor and the broker SDKs say "Runs in .loom/venv-live" in their docstring.
bench: setup
	@for b in $(if $(BENCH),bench/$(BENCH).py,bench/*.py); do \
	  if grep -q "Runs in .loom/venv-live" $$b; then py=$(LIVE)/python; else py=$(ML)/python; fi; \
	  echo "== $$b" >&2; $$py $$b || exit 1; done

db-up: setup
	$(ML)/tradeloom db up

db-down:
	$(ML)/tradeloom db down

# Re-resolve the lock files from requirements/*.in (needs the package registry).
lock:
	for v in ml live airflow; do rm -rf .loom/lock-$$v && python3.11 -m venv .loom/lock-$$v && \
	  .loom/lock-$$v/bin/pip install -q -r requirements/$$v.in && \
	  .loom/lock-$$v/bin/pip freeze --exclude-editable > locks/$$v.txt; done

clean:
	-$(ML)/tradeloom db down
	rm -rf .loom

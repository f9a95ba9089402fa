# cache_core developer targets. `make test` builds everything it needs from a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
NATIVE_SOURCES := $(wildcard native/*.c native/*.h native/*.py)

.DEFAULT_GOAL := help
.PHONY: help install test test-pure test-native bench lint typecheck sanitize demo clean redis check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install -q -e '.[test,bench,dev]'
	$(BIN)/python -I -c "import cache_core; print('cache_core NATIVE =', cache_core.NATIVE)"
	touch $@

install: $(STAMP) ## create .venv and install cache_core (editable) with the C core
	@true

redis: ## make sure a redis-server binary is installed (apt-get when missing)
	@sh scripts/ensure-redis.sh

test: install redis ## run the whole test suite (both bloom backends, real Redis + Cluster)
	$(PYTEST) tests

test-pure: install redis ## run the suite with the pure-Python fallback forced
	CACHE_CORE_PURE_PYTHON=1 $(PYTEST) tests

bench: install redis ## run the pytest-benchmark suite (numbers go to BENCHMARKS.md)
	$(PYTEST) benchmarks --benchmark-only --benchmark-columns=min,median,mean,stddev,rounds \
		--benchmark-sort=name $(BENCH_ARGS)

lint: install ## ruff
	$(BIN)/ruff check cache_core tests benchmarks native examples
	$(BIN)/ruff format --check cache_core tests benchmarks native examples

typecheck: install ## mypy --strict
	$(BIN)/mypy

sanitize: install ## build the C core with ASan+UBSan and run the native tests under it
	sh native/sanitize.sh $(BIN)/python

demo: install ## run the demo scenario on the embedded cache
	$(BIN)/python -m cache_core demo $(DEMO_ARGS)

check: lint typecheck test ## what CI runs

clean: ## remove build products and the venv
	rm -rf build dist *.egg-info cache_core/_native*.so cache_core/_native.c native/_sanitize_build \
		.pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks $(VENV)
	find . -name __pycache__ -prune -exec rm -rf {} +

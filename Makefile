# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Prerequisites: Python >= 3.11, Java 17+ and Maven (the local Kafka broker comes from Maven Central).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit integration bench bench-quick bench-translate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

demo: install ## Local Kafka + Klaviyo emulator + the guide's sample orders, end to end
	$(PY) -m kafka_klaviyo_dev demo

lint: install
	$(VENV)/bin/ruff check consumer kafka_klaviyo_dev tests bench

typecheck: install
	$(VENV)/bin/mypy --strict consumer kafka_klaviyo_dev

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

test: lint typecheck ## ruff, mypy --strict and the whole pytest suite (integration on the real broker)
	$(PY) -m pytest -q

bench: bench-translate ## All benchmarks: figures and same-run ratios -> bench-results.json (~10 min)
	$(PY) -m bench.e2e

bench-quick: install ## A small smoke run of the end-to-end benchmarks (~3 min)
	$(PY) -m bench.e2e --quick

bench-translate: install ## Compiled registry vs hand-written OrderPlaced translation -> bench-results.json
	$(PY) bench/translate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results.json

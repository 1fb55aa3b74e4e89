# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs what it needs there; the stamps re-install when
# pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: run test bench e2e clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# The server with both inference engines. llama-cpp-python compiles llama.cpp the
# first time (about 6 minutes on 2 cores); pip caches the wheel after that.
$(VENV)/.run-deps: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[engines]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[engines,operator,test]'
	touch $@

run: $(VENV)/.run-deps
	$(VENV)/bin/modelyard serve

test: $(VENV)/.test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-deps
	$(PY) bench/registry_bench.py

clean:
	rm -rf $(VENV) .cache

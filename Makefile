# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs what it needs there; the stamps re-install when
# pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: run test bench bench-registry bench-inference bench-operator e2e clean

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

$(VENV)/.bench-deps: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[engines,operator,test,bench]'
	touch $@

# llama-cpp-python's source: real tokenizer vocabularies for the test models, and the
# llama.cpp that the benchmark builds llama-server from. The tests fetch it on first use too.
.cache/llama-cpp-python/.version: tools/llama_sdist.sh | $(VENV)/bin/python
	sh tools/llama_sdist.sh

run: $(VENV)/.run-deps
	$(VENV)/bin/modelyard serve

test: $(VENV)/.test-deps .cache/llama-cpp-python/.version
	$(PY) -m pytest $(PYTEST_ARGS)

# Each benchmark compares Modelyard with its peers in one run; results go into
# docs/benchmarks.md with the command that produced them.
bench: bench-registry bench-inference bench-operator

bench-registry: $(VENV)/.test-deps
	$(PY) bench/registry_bench.py

# Builds llama-server from the sdist's llama.cpp first (about 25 minutes on 2 cores, once).
bench-inference: $(VENV)/.bench-deps .cache/llama-cpp-python/.version
	sh tools/build_llama_server.sh
	$(PY) bench/inference_bench.py --threads $$(nproc) --tokens 128

bench-operator: $(VENV)/.test-deps
	$(PY) bench/operator_bench.py --models 200

# kind: a cluster, the images, the chart, a Model, one chat completion. Skips (and
# passes) with a message where there is no Docker engine.
e2e: $(VENV)/.test-deps
	bash tests/e2e/run.sh

clean:
	rm -rf $(VENV) .cache

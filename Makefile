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

# llama-cpp-python, with llama.cpp compiled for this machine's CPU: once per version,
# about 4 to 6 minutes on 2 cores, into .cache/wheels, then installed into the venv.
# pip's own build of it leaves -march=native off (its isolated build sets
# SOURCE_DATE_EPOCH, which ggml takes for a reproducible build), so AVX-512 went unused
# where the CPU has it, and llama-server built from the same source decoded faster.
# CMAKE_ARGS adds to the flags, e.g. CMAKE_ARGS=-DGGML_CUDA=on on a GPU machine.
LLAMA_PIN := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
WHEELS := .cache/wheels
LLAMA_WHEEL := $(WHEELS)/.$(subst ==,-,$(LLAMA_PIN))

$(LLAMA_WHEEL): | $(VENV)/bin/python
	rm -f $(WHEELS)/llama_cpp_python-*.whl
	CMAKE_ARGS="-DGGML_NATIVE=ON $(CMAKE_ARGS)" $(PIP) wheel --quiet --no-deps --no-cache-dir \
		-w $(WHEELS) '$(LLAMA_PIN)'
	$(PIP) install --quiet --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl
	touch $@

# The server with both inference engines.
$(VENV)/.run-deps: pyproject.toml $(LLAMA_WHEEL) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines]'
	touch $@

$(VENV)/.test-deps: pyproject.toml $(LLAMA_WHEEL) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test]'
	touch $@

$(VENV)/.bench-deps: pyproject.toml $(LLAMA_WHEEL) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test,bench]'
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

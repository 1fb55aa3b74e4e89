# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Each creates .venv and installs what it needs there; the stamps re-install when
# pyproject.toml changes.

PYTHON ?= python3
# The repo root holds a folder named operator/ (imported as modelyard.operator); `python -m`
# from here would put it in front of the standard library's operator module. PYTHONSAFEPATH
# keeps the current directory off sys.path.
export PYTHONSAFEPATH := 1
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: run test gateway-test trainer-image-test fuzz mutation soak k8s clients bench bench-registry bench-inference bench-operator bench-router bench-finetune e2e clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# llama-cpp-python, with llama.cpp compiled for this machine's CPU: once per version and
# flags, about 4 to 6 minutes on 2 cores, into a cache outside the checkout
# (~/.cache/modelyard/wheels), then installed into the venv.
# - pip's own build of it leaves -march=native off (its isolated build sets
#   SOURCE_DATE_EPOCH, which ggml takes for a reproducible build), so AVX-512 went unused
#   where the CPU has it: GGML_NATIVE=ON puts it back.
# - -march=native also turns on ggml's AMX kernels on Sapphire Rapids and later, and
#   ggml_backend_amx_mul_mat crashes the process on ordinary Q8_0 models there
#   (docs/engines.md). -mno-amx-* keeps every other feature of the CPU (AVX-512, VNNI,
#   BF16) and leaves the AMX path out; GCC honours an explicit -mno-* whatever -march says.
# - LLAMA_AMX=patched opts in to the AMX kernels with their tile configuration fixed
#   (tools/amx_ldtilecfg_fix.h): about 3x faster Q8_0 prompts on AMX CPUs
#   (docs/benchmarks.md), on a code path upstream barely exercises (docs/engines.md).
# CMAKE_ARGS adds to the flags, e.g. CMAKE_ARGS=-DGGML_CUDA=on on a GPU machine.
LLAMA_PIN := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_AMX ?= off
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
ifeq ($(LLAMA_AMX),patched)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DCMAKE_CXX_FLAGS='-include $(CURDIR)/tools/amx_ldtilecfg_fix.h' $(CMAKE_ARGS)
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)' $(CMAKE_ARGS)
endif
MODELYARD_CACHE ?= $(HOME)/.cache/modelyard
WHEELS := $(MODELYARD_CACHE)/wheels/$(subst ==,-,$(LLAMA_PIN))-$(shell echo "$(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
LLAMA_WHEEL := $(WHEELS)/.built
LLAMA_INSTALLED := $(VENV)/.llama-$(notdir $(WHEELS))

$(LLAMA_WHEEL): | $(VENV)/bin/python
	rm -rf $(WHEELS).tmp && mkdir -p $(WHEELS).tmp
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --quiet --no-deps --no-cache-dir \
		-w $(WHEELS).tmp '$(LLAMA_PIN)'
	rm -rf $(WHEELS) && mv $(WHEELS).tmp $(WHEELS) && touch $@

$(LLAMA_INSTALLED): $(LLAMA_WHEEL)
	$(PIP) install --quiet --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl
	touch $@

# The server with both inference engines.
$(VENV)/.run-deps: pyproject.toml $(LLAMA_INSTALLED) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines]'
	touch $@

$(VENV)/.test-deps: pyproject.toml $(LLAMA_INSTALLED) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test]'
	touch $@

# The finetune extra (torch, transformers, peft) for the trainer and tests/finetune: PyPI's torch
# is its CUDA build, about 5.6 GB and 2-3 minutes to install here (docs/engines.md).
$(VENV)/.finetune-deps: pyproject.toml $(VENV)/.test-deps
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test,finetune]'
	touch $@

$(VENV)/.bench-deps: pyproject.toml $(LLAMA_INSTALLED) | $(VENV)/bin/python
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test,bench]'
	touch $@

# llama-cpp-python's source: real tokenizer vocabularies for the test models, and the
# llama.cpp that the benchmark builds llama-server from. The tests fetch it on first use too.
.cache/llama-cpp-python/.version: tools/llama_sdist.sh | $(VENV)/bin/python
	sh tools/llama_sdist.sh

run: $(VENV)/.run-deps
	$(VENV)/bin/modelyard serve

# The control plane that tests/cluster starts on loopback (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok), built from their Go modules once per
# machine into $(MODELYARD_CACHE)/k8s; a no-op once built. See docs/kubernetes.md.
k8s:
	MODELYARD_CACHE=$(MODELYARD_CACHE) bash tools/k8s/build.sh

# The program that drives Ollama's own Go client in the tests (tests/clients/ollama_go),
# built once per machine into $(MODELYARD_CACHE)/clients: about 10 s once k8s has filled Go's
# build cache, 90 s from a cold one. Without Go, its tests skip.
clients:
	@if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then \
		MODELYARD_CACHE=$(MODELYARD_CACHE) bash tools/clients/build.sh >/dev/null; \
	else echo "No Go here: the tests that drive Ollama's Go client will skip"; fi

# tests/images need podman, runc and debootstrap (tools/image_tools.sh installs them when
# missing) and put the llama-cpp-python wheel above into the server image.
test: $(VENV)/.test-deps $(VENV)/.finetune-deps .cache/llama-cpp-python/.version k8s clients
	$(VENV)/bin/lint-imports
	sh tools/image_tools.sh
	MODELYARD_CACHE=$(MODELYARD_CACHE) MODELYARD_LLAMA_WHEELS=$(WHEELS) $(PY) -m pytest $(PYTEST_ARGS)

# The Gateway API Inference Extension's endpoint picker (GAIE v1.5.0) on our pods: its own
# metrics extractor reads a loaded server's /metrics (tools/gaie/probe.sh; about 4 minutes the
# first time per machine, seconds after), and the picker itself, built into $(MODELYARD_CACHE)/gaie
# (tools/gaie/build.sh, about 6 minutes once), routes over ext_proc on the real control plane
# (tests/cluster/test_gateway_epp.py, with the `gateway` extra's ext_proc stubs). Not part of
# `make test`.
$(VENV)/.gateway-deps: pyproject.toml $(VENV)/.test-deps
	$(PIP) install --quiet --find-links $(WHEELS) -e '.[engines,operator,test,gateway]'
	touch $@

gateway-test: $(VENV)/.gateway-deps .cache/llama-cpp-python/.version k8s
	MODELYARD_CACHE=$(MODELYARD_CACHE) bash tools/gaie/build.sh
	MODELYARD_GATEWAY_TEST=1 MODELYARD_CACHE=$(MODELYARD_CACHE) $(PY) -m pytest \
		tests/inference/test_picker_metrics.py tests/cluster/test_gateway_epp.py

# The trainer image (the Dockerfile's `trainer` target: PyPI's CUDA torch, about 5.6 GB) built
# with podman and run as a FineTune's Job on the generated llama model
# (tests/images/test_trainer_image.py). Not part of `make test`: the build alone takes minutes.
trainer-image-test: $(VENV)/.test-deps .cache/llama-cpp-python/.version
	sh tools/image_tools.sh
	MODELYARD_TRAINER_IMAGE_TEST=1 MODELYARD_CACHE=$(MODELYARD_CACHE) $(PY) -m pytest \
		tests/images/test_trainer_image.py

# A longer schemathesis run against /openapi.json than the one in `make test`.
fuzz: $(VENV)/.test-deps .cache/llama-cpp-python/.version
	MODELYARD_FUZZ_EXAMPLES=40 MODELYARD_FUZZ_MIN_CASES=2000 $(PY) -m pytest tests/api/test_fuzz.py

# Mutation testing of the pure modules with mutmut, in a staging copy under .cache/mutation
# (docs/testing.md has the scores). Not part of `make test`: it takes tens of minutes.
mutation: $(VENV)/.test-deps
	$(PY) tests/support/mutation.py

# 64 concurrent chats (OpenAI SSE, Ollama NDJSON, non-streamed) on one model for 10 minutes
# against the real server: exits non-zero on any failed request or an RSS drift of 5% or more
# (docs/benchmarks.md#soak). Not part of `make test`. SOAK_ARGS=--seconds 60 for a short one.
SOAK_ARGS ?=
soak: $(VENV)/.bench-deps .cache/llama-cpp-python/.version
	$(PY) bench/soak.py $(SOAK_ARGS)

# Each benchmark compares Modelyard with its peers in one run; results go into
# docs/benchmarks.md with the command that produced them.
bench: bench-registry bench-inference bench-operator bench-router bench-finetune

bench-registry: $(VENV)/.test-deps
	$(PY) bench/registry_bench.py

# Our LoRA trainer against a plain peft script (steps/s), and decoding with adapters against
# without, one stream and 8 (docs/benchmarks.md#fine-tuning); needs the finetune extra.
bench-finetune: $(VENV)/.finetune-deps .cache/llama-cpp-python/.version
	$(PY) bench/finetune_bench.py --threads $$(nproc)

# Builds llama-server from the sdist's llama.cpp first (about 25 minutes on 2 cores, once).
bench-inference: $(VENV)/.bench-deps .cache/llama-cpp-python/.version
	sh tools/build_llama_server.sh
	$(PY) bench/inference_bench.py --threads $$(nproc) --tokens 128

bench-operator: $(VENV)/.test-deps
	$(PY) bench/operator_bench.py --models 200

# The router: overhead against a direct call, CHWBL against round robin and least-loaded on three
# real servers, scale from zero; prints the markdown tables of docs/benchmarks.md.
bench-router: $(VENV)/.test-deps .cache/llama-cpp-python/.version
	$(PY) bench/router_bench.py all

# kind: a cluster, the images, the chart, a Model, one chat completion. Skips (and
# passes) with a message where there is no Docker engine.
e2e: $(VENV)/.test-deps
	bash tests/e2e/run.sh

clean:
	rm -rf $(VENV) .cache

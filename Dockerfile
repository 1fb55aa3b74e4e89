# syntax=docker/dockerfile:1.7
#
# Three images from one file (podman builds it the same way: `podman build ...`):
#   docker build --target server      -t modelyard-server .       # `modelyard fetch` and `modelyard serve`
#   docker build --target server-cuda -t modelyard-server:cuda .  # the same, llama.cpp built with CUDA
#   docker build --target operator    -t modelyard-operator .     # `modelyard operator`, no llama.cpp
#   docker build --target trainer     -t modelyard-trainer .      # `modelyard train` (a FineTune's Job):
#                                                                 # torch, transformers, peft; no llama.cpp
# All run as uid 10001, so the pods' runAsNonRoot holds.
#
# The variants are separate targets, not a build argument that names a stage: the
# buildah inside Debian bookworm's podman (4.3) does not resolve `FROM ${ARG}-stage` to a
# stage, and the tests build with it.
#
# Build arguments:
#   PYTHON_IMAGE    base of the CPU server and of the operator. Any Debian-like image
#                   with apt and a `python3` of 3.11 or newer. The tests pass a local
#                   Debian bookworm made with debootstrap (no image registry is
#                   reachable there), which is why the default is bookworm's Python too.
#   LLAMA_CPU_ARGS  llama.cpp's CPU options. The default is x86-64-v3 (AVX2, FMA, F16C:
#                   Haswell, Zen and later), never -march=native: an image runs on
#                   other machines than the one that built it. Pass
#                   "-DGGML_NATIVE=OFF -DGGML_AVX512=ON" for an AVX-512 fleet, or
#                   "-DGGML_NATIVE=OFF" for any x86-64. Ignored on arm64.
# Build context `wheels` (optional): a folder of prebuilt wheels that pip prefers to
# building from source, e.g. `--build-context wheels=DIR` holding a llama-cpp-python
# wheel of the pinned version. The tests pass the one the Makefile built for the host,
# so they do not compile llama.cpp a second time; such an image is for that CPU only.
# Without it the `wheels` stage below is empty and llama.cpp is compiled here (about
# 6 minutes on 2 cores, once per change of the runtime dependencies: they are a layer
# of their own, below the source).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

# Empty unless replaced with `--build-context wheels=DIR`.
FROM scratch AS wheels

# The runtime dependencies of each image, read from pyproject.toml. The build stages copy
# these files, whose content alone decides whether their install layer is rebuilt: an
# edit of the test extras, the README or the source does not compile llama.cpp again.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extra = p['optional-dependencies']; \
open('/server.txt', 'w').write('\n'.join(p['dependencies'] + extra['engines']) + '\n'); \
open('/operator.txt', 'w').write('\n'.join(p['dependencies'] + extra['operator']) + '\n'); \
open('/trainer.txt', 'w').write('\n'.join(p['dependencies'] + extra['finetune']) + '\n')"

# ---- bases: the build and run images of each variant share the Python path, so
# ---- the virtualenv built in one runs in the other.
FROM ${PYTHON_IMAGE} AS cpu-build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

FROM ${PYTHON_IMAGE} AS cpu-run
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_DEVEL_IMAGE} AS cuda-build
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_RUNTIME_IMAGE} AS cuda-run
RUN apt-get update && apt-get install -y --no-install-recommends python3 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# ---- the server: the package with its inference engines.
# The two build stages differ only in llama.cpp's CMake flags (CMAKE_ARGS below).
FROM cpu-build AS server-build
ARG LLAMA_CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY --from=wheels / /wheels/
COPY --from=requirements /server.txt /tmp/requirements.txt
# The CPU options, and never ggml's AMX kernels (tools/llama_cmake_args.sh says why).
COPY tools/llama_cmake_args.sh /tmp/
RUN CMAKE_ARGS="$(sh /tmp/llama_cmake_args.sh "$LLAMA_CPU_ARGS")" \
        pip install --find-links /wheels -r /tmp/requirements.txt
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
RUN pip install --no-deps .

FROM cuda-build AS server-cuda-build
# GPU generations to compile kernels for (Turing to Hopper); a build has no GPU to ask.
ARG CUDA_ARCHITECTURES="75;80;86;89;90"
ARG LLAMA_CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY --from=wheels / /wheels/
COPY --from=requirements /server.txt /tmp/requirements.txt
COPY tools/llama_cmake_args.sh /tmp/
RUN CMAKE_ARGS="$(sh /tmp/llama_cmake_args.sh "$LLAMA_CPU_ARGS") -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" \
        pip install --find-links /wheels -r /tmp/requirements.txt
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
RUN pip install --no-deps .

FROM cpu-run AS server
COPY --from=server-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
# The pods mount a writable /tmp over a read-only root; caches go there.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8083
ENTRYPOINT ["modelyard"]
CMD ["serve", "--help"]

FROM cuda-run AS server-cuda
COPY --from=server-cuda-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8083
ENTRYPOINT ["modelyard"]
CMD ["serve", "--help"]

# ---- the operator: kopf and the kubernetes client, no inference engine.
FROM ${PYTHON_IMAGE} AS operator-build
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY --from=requirements /operator.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE} AS operator
COPY --from=operator-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["modelyard"]
CMD ["operator", "--help"]

# ---- the trainer: `modelyard train` with the finetune extra (torch, transformers, peft), which
# ---- the server image never carries. No llama.cpp: the trainer reads GGUF with transformers
# ---- and writes the adapter with the gguf package.
# PyPI's torch is its CUDA build (about 5.6 GB with the nvidia-* wheels): it trains on a GPU
# node with only the NVIDIA driver there, and on CPU elsewhere. TORCH_INDEX_URL (for example
# https://download.pytorch.org/whl/cpu) takes torch from another index: a CPU-only image of
# about a tenth of the size.
FROM ${PYTHON_IMAGE} AS trainer-build
ARG TORCH_INDEX_URL=""
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY --from=requirements /trainer.txt /tmp/requirements.txt
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements.txt
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE} AS trainer
COPY --from=trainer-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["modelyard"]
CMD ["train", "--help"]

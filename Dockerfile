# syntax=docker/dockerfile:1.7
#
# Two images from one file:
#   docker build --target server   -t modelyard-server .    # `modelyard fetch` and `modelyard serve`
#   docker build --target operator -t modelyard-operator .  # `modelyard operator`, no llama.cpp
# The server image for NVIDIA GPU nodes (llama.cpp built with CUDA):
#   docker build --target server --build-arg VARIANT=cuda -t modelyard-server:cuda .
# Both run as uid 10001, so the pods' runAsNonRoot holds.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

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
FROM ${VARIANT}-build AS server-build
ARG VARIANT
# GPU generations to compile kernels for (Turing to Hopper); a build has no GPU to ask.
ARG CUDA_ARCHITECTURES="75;80;86;89;90"
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
# GGML_NATIVE=OFF: code for any x86-64 node, not only for the build machine's CPU.
RUN if [ "$VARIANT" = "cuda" ]; then \
        export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"; \
    else \
        export CMAKE_ARGS="-DGGML_NATIVE=OFF"; \
    fi \
    && pip install ".[engines]"

FROM ${VARIANT}-run AS server
COPY --from=server-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
# The pods mount a writable /tmp over a read-only root; caches go there.
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
COPY pyproject.toml README.m[d] ./
COPY server ./server
COPY operator ./operator
RUN pip install ".[operator]"

FROM ${PYTHON_IMAGE} AS operator
COPY --from=operator-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp modelyard
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["modelyard"]
CMD ["operator", "--help"]

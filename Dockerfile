# CityScale pipeline image (the app image): every KFP component, the TrainJobs' training pods and a GPU predictor
# (deploy-serving --gpus) run in it. The CPU InferenceService (predictor, transformer) runs the slim serving image
# instead (Dockerfile.serving: requirements/serving.lock, CPU torch, no kfp/Feast SDK/Airbyte/statsforecast).
# Build: make images (tags by git SHA: $REGISTRY/cityscale:<sha>). The compiled pipeline points at CITYSCALE_IMAGE.
FROM python:3.11.13-slim-bookworm
# checkov:skip=CKV_DOCKER_2: KServe/Kubernetes readiness and liveness probes check the server; KFP step containers exit when done.

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 cityscale \
    && useradd --system --uid 10001 --gid cityscale --home-dir /app --shell /usr/sbin/nologin cityscale

# LightGBM (the model's boosters, the LightGBM baseline) links the system OpenMP runtime; slim images lack it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Locked runtime dependencies first (a layer that changes only with the lock): requirements/app.lock pins every
# package by sha256 (make lock). Its torch is PyPI's torch==2.13.0, on Linux x86-64 the CUDA build with the nvidia-*
# CUDA runtime wheels and triton, so training steps on GPU nodes use the GPU; the local venv and CI use the CPU
# build from requirements/dev.lock (torch==2.13.0+cpu), with every other package at the same version.
COPY requirements/app.lock /tmp/app.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/app.lock && rm /tmp/app.lock
COPY pyproject.toml README.md ./
COPY cityscale ./cityscale
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
# The Feast repo (feature_store.yaml + definitions) is not a Python package: copy it beside the code.
COPY feature_repo ./feature_repo
# The Airbyte low-code manifests and connection files (embedded and airbyte-server ingestion modes).
COPY airbyte ./airbyte
# The project itself only: its dependencies are all in the lock (pip check proves it), and its build backend
# (setuptools, wheel) too, so nothing is resolved or downloaded unpinned here.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check

USER 10001:10001
ENV CITYSCALE_WORKDIR=/tmp/cityscale \
    CITYSCALE_FEAST_REPO=/app/feature_repo/feast \
    CITYSCALE_AIRBYTE_DIR=/app/airbyte
# 8080: REST (V1/V2, /metrics; the InferenceService names it http1), 8081: gRPC V2 (h2c).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "serving"]

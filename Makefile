# CityScale — run `make help` for the list of targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081
export HTTP_PORT GRPC_PORT
ENV ?= dev
GIT_SHA ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LINT_VENV ?= .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed
TF_DIR = terraform/envs/$(ENV)
TF_OUT := build/terraform
REGISTRY ?= $(shell $(PYTHON) -c 'import json;print(json.load(open("$(TF_OUT)/$(ENV).helmfile-values.json"))["registry"])' 2>/dev/null)
# The model registry the cluster serves from (terraform output pipeline_config.models_uri); make deploy-serving resolves
# and promotes registry versions there, not in the local workdir.
MODELS_URI ?= $(shell $(PYTHON) -c 'import json;print(json.load(open("$(TF_OUT)/$(ENV).pipeline-config.json"))["models_uri"])' 2>/dev/null)
# The immutable images of this commit; without REGISTRY (dry runs only) unqualified names, never a :dev tag.
# IMAGE_REF: the pipeline image (Dockerfile: KFP steps, TrainJobs, a GPU predictor); SERVING_IMAGE_REF: the slim
# serving image (Dockerfile.serving: the CPU InferenceService's predictor and transformer).
IMAGE_REF = $(if $(REGISTRY),$(REGISTRY)/cityscale:$(GIT_SHA),cityscale:$(GIT_SHA))
SERVING_IMAGE_REF = $(if $(REGISTRY),$(REGISTRY)/cityscale-serving:$(GIT_SHA),cityscale-serving:$(GIT_SHA))
HELMFILE := helmfile --file helmfile.d --environment $(ENV) --state-values-set image.tag=$(GIT_SHA)
# Locked installs (README "Installs and locks"): make venv installs requirements/dev.lock with hashes; the pipeline
# image installs requirements/app.lock, the serving image requirements/serving.lock; make lock regenerates all three
# with uv (pinned in requirements/tools.lock, in LOCK_VENV).
LOCK ?= requirements/dev.lock
APP_LOCK := requirements/app.lock
SERVING_LOCK := requirements/serving.lock
LOCK_VENV ?= .venv-lock
# Where pip and uv find the CPU torch wheel (torch==2.13.0+cpu): /opt/wheels when it holds one, else the PyTorch CPU
# index's torch page. The lock's sha256 decides which file is accepted, wherever it comes from.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*+cpu-*.whl),/opt/wheels,$(TORCH_CPU_INDEX)/torch/)
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet --generate-hashes --no-header --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple $(if $(UPGRADE),--upgrade)

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or set PYTHON=..."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# --no-deps, as in the Dockerfiles: the lock is the whole closure (pip check below proves it). Resolving it again,
	@# the venv's pip 23.2 takes the newest release for an extra (feast -> dask[dataframe]) and refuses it as unpinned.
	$(BIN)/pip install --quiet --require-hashes --no-deps --find-links $(TORCH_FIND_LINKS) -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@touch $@

$(LOCK_VENV)/.installed: requirements/tools.lock
	@test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --require-hashes -r requirements/tools.lock
	@touch $@

.PHONY: lock
lock: $(LOCK_VENV)/.installed ## Regenerate requirements/dev.lock (venv, CPU torch), app.lock (pipeline image, CUDA torch), serving.lock (serving image, CPU torch) with hashes (UPGRADE=1: newest versions)
	$(UV_COMPILE) pyproject.toml requirements/dev.in --extra dev --find-links $(TORCH_FIND_LINKS) -o $(LOCK)
	@mkdir -p build/lock && grep -E '^[A-Za-z0-9]' $(LOCK) | sed 's/ \\$$//' | grep -v '^torch==' > build/lock/dev-pins.txt
	$(UV_COMPILE) pyproject.toml requirements/app.in --constraint build/lock/dev-pins.txt -o $(APP_LOCK)
	$(UV_COMPILE) requirements/serving.in --constraint build/lock/dev-pins.txt --find-links $(TORCH_FIND_LINKS) \
	  -o $(SERVING_LOCK)
	@for f in $(LOCK):requirements/dev.in $(APP_LOCK):requirements/app.in $(SERVING_LOCK):requirements/serving.in; do \
	  { sed -n '/^#/!q;p' $${f#*:}; echo; grep -v '^#' $${f%%:*}; } > $${f%%:*}.tmp && mv $${f%%:*}.tmp $${f%%:*}; done
	@echo "lock: wrote $(LOCK), $(APP_LOCK) and $(SERVING_LOCK); make venv reinstalls from $(LOCK)"

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(STAMP) ## Create the virtual environment and install the project (done by every target that needs it)

.PHONY: run
run: $(STAMP) ## Run the training pipeline locally (kfp.local), serve the model, print a 24 h forecast
	$(BIN)/cityscale run

.PHONY: test
test: $(STAMP) $(LINT_STAMP) ## Run the whole test suite (unit, contract, kfp.local e2e, real servers, offline infra checks)
	$(BIN)/ruff check .
	LINT_VENV=$(LINT_VENV) bash scripts/lint_infra.sh
	LINT_VENV=$(LINT_VENV) $(BIN)/python -m pytest

.PHONY: features-test
features-test: $(STAMP) ## Feature-platform tests: Feast always; Tecton SDK tests only with CITYSCALE_TECTON=1 (licensed)
	$(BIN)/python -m pytest tests/test_features_spec.py tests/test_feast_training.py tests/test_feast_online.py \
	  tests/test_tecton_repo_static.py tests/test_tecton_client.py tests/test_tecton_sdk.py -rs

.PHONY: bench-features
bench-features: $(STAMP) ## Feature build/materialize/online benchmark on ../shared/data (writes build/bench/features.json)
	$(BIN)/python benchmarks/bench_features.py

.PHONY: bench-realtime
bench-realtime: $(STAMP) ## Push-to-fresh-forecast p50/p99 at 70 sensors/s + push throughput, loopback (build/bench/realtime.json)
	$(BIN)/python benchmarks/bench_realtime.py

# Without CITYSCALE_IMAGE: the committed, deterministic pipelines/compiled/*.yaml (image cityscale:dev, never deployed).
# With CITYSCALE_IMAGE=<registry>/cityscale:<git sha>: the deployable YAML in $(DEPLOY_DIR)/, never the committed folder.
.PHONY: compile
compile: $(STAMP) ## Compile the pipelines: pipelines/compiled/ (image cityscale:dev), or CITYSCALE_IMAGE=<registry>/cityscale:<sha> -> build/pipelines/
	$(if $(CITYSCALE_IMAGE),CITYSCALE_IMAGE=$(CITYSCALE_IMAGE) $(BIN)/cityscale compile --out-dir $(DEPLOY_DIR),env -u CITYSCALE_IMAGE $(BIN)/cityscale compile)

.PHONY: serve
serve: $(STAMP) ## Serve the production model over V2 REST (HTTP_PORT) and gRPC (GRPC_PORT) until stopped
	$(BIN)/cityscale serve

.PHONY: lint
lint: $(STAMP) ## Lint and format-check the Python code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: train-full
train-full: $(STAMP) ## Train on ../shared/data + Auckland without the held-out months, score them, register that model (ARGS=--refit: retrain on all first)
	$(BIN)/cityscale train-full --melbourne ../shared/data/melbourne_pcs $(ARGS)

.PHONY: bench-accuracy
bench-accuracy: $(STAMP) ## Model vs all baselines on both cities' held-out months (writes build/bench/accuracy.json)
	$(BIN)/python benchmarks/bench_accuracy.py

.PHONY: ablation-boosters
ablation-boosters: $(STAMP) ## One booster ablation on a validation period, e.g. ARGS="mel2022 --window 168" (appends build/bench/ablation_boosters.json)
	$(BIN)/python benchmarks/ablation_boosters.py $(ARGS)

.PHONY: bench-train
bench-train: $(STAMP) ## Training samples/s, 1 process vs 2-process DDP on CPU, + loss equivalence (build/bench/train.json)
	$(BIN)/python benchmarks/bench_train.py

.PHONY: gpu-check
gpu-check: ## On a single-GPU machine, offline: full Melbourne history, bf16; samples/s, time to target loss, GPU memory/util (build/bench/gpu_check.json)
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh

.PHONY: bench-monitoring
bench-monitoring: $(STAMP) ## Forecast-log overhead on the request path + monitoring run time (build/bench/monitoring.json)
	$(BIN)/python benchmarks/bench_monitoring.py

.PHONY: bench-ingest
bench-ingest: $(STAMP) ## Ingestion throughput + peak memory, snapshot and embedded, full Melbourne history (build/bench/ingest.json)
	$(BIN)/python benchmarks/bench_ingest.py

.PHONY: airbyte-apply
airbyte-apply: $(STAMP) ## Create/update airbyte/ definitions, sources, destination, connections on CITYSCALE_AIRBYTE_SERVER_URL
	@test -n "$$CITYSCALE_AIRBYTE_SERVER_URL" || { echo "CITYSCALE_AIRBYTE_SERVER_URL is required (OSS: http://HOST:8000/api/public/v1; Cloud: https://api.airbyte.com/v1)"; exit 1; }
	@test -n "$$CITYSCALE_AIRBYTE_WORKSPACE_ID" || { echo "CITYSCALE_AIRBYTE_WORKSPACE_ID is required"; exit 1; }
	$(BIN)/python -m cityscale.ingestion.apply

.PHONY: bench
bench: $(STAMP) ## Run every benchmark; each prints a table and writes build/bench/<name>.json
	@failed=""; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "benchmarks that failed or missed a checked target:$$failed"; exit 1; fi

# --- Infrastructure (docs/runbook.md) ------------------------------------------------------------
$(LINT_STAMP): requirements/infra-lint.txt
	@test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet -r requirements/infra-lint.txt
	$(LINT_VENV)/bin/pip check
	@touch $@

.PHONY: lint-infra
lint-infra: $(LINT_STAMP) ## Offline infra checks: terraform fmt/HCL/checkov, hadolint, shellcheck, yamllint, helmfile, rendered manifests
	@echo "lint-infra: every offline infrastructure check (venv $(LINT_VENV), manifests in build/manifests/)"
	LINT_VENV=$(LINT_VENV) bash scripts/lint_infra.sh


.PHONY: infra-plan
infra-plan: ## Terraform plan of terraform/envs/$(ENV) (needs GCP_PROJECT, TF_STATE_BUCKET)
	@test -n "$(GCP_PROJECT)" || { echo "GCP_PROJECT is required"; exit 1; }
	@test -n "$(TF_STATE_BUCKET)" || { echo "TF_STATE_BUCKET is required (docs/runbook.md step 2)"; exit 1; }
	@echo "infra-plan: terraform init+plan $(TF_DIR) for project $(GCP_PROJECT), state gs://$(TF_STATE_BUCKET)/cityscale/$(ENV) -> $(TF_DIR)/tfplan"
	terraform -chdir=$(TF_DIR) init -input=false -backend-config="bucket=$(TF_STATE_BUCKET)"
	terraform -chdir=$(TF_DIR) plan -input=false -var="project_id=$(GCP_PROJECT)" -out=tfplan

.PHONY: infra-apply
infra-apply: ## Apply the saved plan, export outputs for helmfile/pipelines, fetch cluster credentials
	@test -f $(TF_DIR)/tfplan || { echo "no $(TF_DIR)/tfplan: run make infra-plan first"; exit 1; }
	@echo "infra-apply: terraform apply $(TF_DIR)/tfplan, write $(TF_OUT)/$(ENV).helmfile-values.json and $(TF_OUT)/$(ENV).pipeline-config.json, get-credentials"
	terraform -chdir=$(TF_DIR) apply -input=false tfplan
	@rm -f $(TF_DIR)/tfplan
	@mkdir -p $(TF_OUT)
	terraform -chdir=$(TF_DIR) output -json helmfile_values > $(TF_OUT)/$(ENV).helmfile-values.json
	terraform -chdir=$(TF_DIR) output -json pipeline_config > $(TF_OUT)/$(ENV).pipeline-config.json
	gcloud container clusters get-credentials "$$(terraform -chdir=$(TF_DIR) output -raw cluster_name)" \
	  --region "$$(terraform -chdir=$(TF_DIR) output -raw cluster_location)"

.PHONY: platform-sync
platform-sync: ## helmfile sync of helmfile.d for $(ENV) with image tag $(GIT_SHA)
	@test -f $(TF_OUT)/$(ENV).helmfile-values.json || { echo "missing $(TF_OUT)/$(ENV).helmfile-values.json: run make infra-apply"; exit 1; }
	@echo "platform-sync: helmfile.d -> context $$(kubectl config current-context), environment $(ENV), image tag $(GIT_SHA)"
	$(HELMFILE) --selector tier=platform sync
	kubectl -n cityscale get secret feast-redis-auth >/dev/null 2>&1 || \
	  kubectl -n cityscale create secret generic feast-redis-auth --from-literal=password="$$(openssl rand -hex 32)"
	kubectl -n cityscale get secret cityscale-realtime-token >/dev/null 2>&1 || \
	  kubectl -n cityscale create secret generic cityscale-realtime-token --from-literal=token="$$(openssl rand -hex 32)"
	$(HELMFILE) --selector tier=app sync

.PHONY: images
images: ## Build and push the pipeline image $(REGISTRY)/cityscale:$(GIT_SHA) and the serving image $(REGISTRY)/cityscale-serving:$(GIT_SHA) (TECTON=1 also builds the licensed Tecton image)
	@test -n "$(REGISTRY)" || { echo "REGISTRY is required (or run make infra-apply)"; exit 1; }
	@git diff --quiet HEAD || { echo "working tree is dirty: commit first, images are tagged by git SHA"; exit 1; }
	@echo "images: build+push $(IMAGE_REF) (pipeline) and $(SERVING_IMAGE_REF) (serving)$(if $(TECTON), and $(REGISTRY)/cityscale-tecton:$(GIT_SHA) (Tecton Proprietary licence)) for linux/amd64"
	docker build --platform linux/amd64 --build-arg SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) \
	  --label org.opencontainers.image.revision=$(GIT_SHA) -t $(IMAGE_REF) .
	docker build --platform linux/amd64 -f Dockerfile.serving --build-arg SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) \
	  --label org.opencontainers.image.revision=$(GIT_SHA) -t $(SERVING_IMAGE_REF) .
	docker push $(IMAGE_REF)
	docker push $(SERVING_IMAGE_REF)
	$(if $(TECTON),docker build --platform linux/amd64 -f Dockerfile.tecton --build-arg GIT_SHA=$(GIT_SHA) -t $(REGISTRY)/cityscale-tecton:$(GIT_SHA) . && docker push $(REGISTRY)/cityscale-tecton:$(GIT_SHA))

DEPLOY_DIR := build/pipelines
DRY := $(filter 1 true yes,$(DRY_RUN))

.PHONY: deploy
deploy: $(STAMP) ## Upload the pipelines to KFP_HOST as version $(GIT_SHA) and apply pipelines/schedules.yaml (DRY_RUN=1: plan only)
	@test -n "$(GIT_SHA)" || { echo "GIT_SHA is required (not a git checkout?)"; exit 1; }
	@test -n "$(REGISTRY)$(DRY)" || { echo "REGISTRY is required (or run make infra-apply)"; exit 1; }
	@test -n "$(DRY)" || git diff --quiet HEAD || { echo "working tree is dirty: commit first, pipeline versions and images are named by git SHA (DRY_RUN=1 previews)"; exit 1; }
	@echo "deploy: compile with image $(IMAGE_REF)$(if $(REGISTRY),, (no REGISTRY: dry run only)) -> $(DEPLOY_DIR)/, upload to $${KFP_HOST:-<KFP_HOST unset>} as version $(GIT_SHA), apply pipelines/schedules.yaml in ENV=$(ENV)$(if $(DRY), (DRY_RUN: nothing changes))"
	CITYSCALE_IMAGE=$(IMAGE_REF) ENV=$(ENV) GIT_SHA=$(GIT_SHA) REGISTRY=$(REGISTRY) DRY_RUN=$(DRY) \
	  $(BIN)/cityscale deploy --compile --compiled-dir $(DEPLOY_DIR)

MODEL_VERSION ?= production
.PHONY: deploy-serving
deploy-serving: $(STAMP) ## Create/patch the KServe InferenceService for MODEL_VERSION, wait Ready, roll back on failure (DRY_RUN=1: YAML to build/manifests/)
	@test -n "$(REGISTRY)$(DRY)" || { echo "REGISTRY is required (or run make infra-apply); DRY_RUN=1 only writes the manifests"; exit 1; }
	@test -n "$(MODELS_URI)$(DRY)" || { echo "MODELS_URI is required: the cluster's model registry, gs://<prefix>-models (or run make infra-apply)"; exit 1; }
	@echo "deploy-serving: InferenceService for $(MODEL_VERSION) of $(or $(MODELS_URI),<local registry>), image $(SERVING_IMAGE_REF) (GPU predictor: $(IMAGE_REF))$(if $(DRY), -> build/manifests/ (DRY_RUN: no cluster))"
	CITYSCALE_SERVING_IMAGE=$(SERVING_IMAGE_REF) CITYSCALE_IMAGE=$(IMAGE_REF) $(if $(MODELS_URI),CITYSCALE_REGISTRY_URI=$(MODELS_URI)) \
	  $(BIN)/cityscale deploy-serving --version $(MODEL_VERSION) $(if $(DRY),--dry-run --out build/manifests) $(if $(TRANSFORMER),--transformer)

.PHONY: bench-images
bench-images: $(STAMP) ## Image sizes per role from the locks, no Docker: wheels downloaded + installed (several GB; build/bench/image_sizes.json)
	$(BIN)/python benchmarks/image_sizes.py

.PHONY: bench-serving
bench-serving: $(STAMP) ## Serving load test on loopback: bare kserve model vs full CityScale path, REST+gRPC (build/bench/serving.json)
	$(BIN)/python benchmarks/bench_serving.py

.PHONY: test-reliability
test-reliability: $(STAMP) ## Reliability tests, full profile: >= 10k fuzz requests, 2-min soak, ingest/pipeline faults, security (~15 min)
	CITYSCALE_RELIABILITY_PROFILE=full LINT_VENV=$(LINT_VENV) $(BIN)/python -m pytest tests/reliability -rs -s

.PHONY: bench-soak
bench-soak: $(STAMP) ## Soak of the real server on loopback, REST+gRPC, RSS watched (SOAK_SECONDS=300, build/bench/soak.json)
	$(BIN)/python benchmarks/bench_soak.py

.PHONY: clean
clean: ## Remove local outputs, build files and caches (keeps the virtual environment)
	rm -rf local_outputs build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv*' -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## Also remove the virtual environment(s)
	rm -rf $(VENV) .venv-*

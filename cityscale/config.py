"""One typed settings object for the whole project.

Every value can be overridden from the environment (``CITYSCALE_<FIELD>``; ports also honour the
plain ``HTTP_PORT``/``GRPC_PORT`` the Makefile documents), so components, servers and the CLI read
their configuration from one place instead of scattering constants.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, AliasPath, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DATA = Path(__file__).parent / "data"
# The ConfigMap the platform chart renders from the Terraform outputs (CITYSCALE_* keys of the fields below); every
# cluster workload loads it as environment: pipeline tasks (pipelines/cluster.py) and the InferenceService.
CLUSTER_CONFIG_MAP = "cityscale-config"

# Every Settings field that training reads (``train_model`` in cityscale/training/train/ and what it hands to
# cityscale/model/lightning.py and cityscale/model/boosted.py). A cluster TrainJob's pods build their own
# ``Settings()`` from the environment, so these are the values the launcher must send them (``Settings.as_env``,
# training/trainjob.py): a field missing here silently trains with the pod's default instead of the run's value.
# tests/test_training_settings.py records which fields a real ``train_model`` reads and fails when this list and
# those reads disagree.
TRAINING_FIELDS: tuple[str, ...] = (
    "seed",
    "max_epochs",
    "batch_size",
    "learning_rate",
    "hidden_size",
    "dropout",
    "volume_weighted_loss",
    "quantiles",
    "model_members",
    "gbm_rounds",
    "gbm_num_leaves",
    "gbm_learning_rate",
    "gbm_steps_per_example",
    "gbm_band_steps_per_example",
    "gbm_early_stopping_rounds",
    "gbm_volume_weighted",
    "gbm_max_bin",
    "gbm_bagging_fraction",
    "gbm_feature_fraction",
    "validation_days",
    "calibrate_band",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYSCALE_", extra="ignore")

    # Where things live. Local paths and file:// or gs:// URIs are all accepted (fsspec).
    workdir: Path = Path("local_outputs")
    store_uri: str = ""  # raw zone root; default: <workdir>/store
    registry_uri: str = ""  # model registry root; default: <workdir>/registry
    pipeline_root: str = ""  # kfp.local pipeline root; default: <workdir>/pipeline_root
    pipeline_task_retries: int = 2  # ingest/features tasks: retries of a failed attempt (compiled into the spec)
    pipeline_retry_backoff_s: int = 30  # first retry after this long, doubling (kfp.local honours it too)
    sample_data: Path = PACKAGE_DATA / "melbourne_sample.parquet"

    # The pipeline image every component runs in (the compiled YAML points at it; Dockerfile): also the TrainJobs'
    # image and a GPU predictor's (CUDA torch).
    image: str = "cityscale:dev"
    # The slim serving image of the CPU InferenceService's predictor and transformer (Dockerfile.serving: CPU torch,
    # only what serving imports). Like ``image``, the cluster sets it to an immutable git-SHA tag (cityscale-config).
    serving_image: str = "cityscale-serving:dev"

    # Kubeflow Pipelines API that `make deploy` (pipelines/publish.py) uploads to. Plain names as documented
    # in docs/runbook.md: KFP_HOST (e.g. http://localhost:8888 through a port-forward of svc/ml-pipeline),
    # KFP_TOKEN (optional bearer token), KFP_NAMESPACE (multi-user KFP only; empty = single-user).
    kfp_host: str = Field("", validation_alias=AliasChoices("kfp_host", "KFP_HOST", "CITYSCALE_KFP_HOST"))
    kfp_token: str = Field(
        "", repr=False, validation_alias=AliasChoices("kfp_token", "KFP_TOKEN", "CITYSCALE_KFP_TOKEN")
    )
    kfp_namespace: str = Field(
        "", validation_alias=AliasChoices("kfp_namespace", "KFP_NAMESPACE", "CITYSCALE_KFP_NAMESPACE")
    )

    # Cluster resources of the train task (ignored by kfp.local). Requests fit a g2-standard-8 L4 node's
    # allocatable (about 7.9 CPU, 29 GB); the limits let the pod burst to the node's size.
    gpu_node_type: str = "nvidia-l4"  # GKE accelerator label of the GPU node pool
    train_gpus: int = 1
    train_cpu_request: str = "6"
    train_memory_request: str = "24G"
    train_cpu_limit: str = "8"
    train_memory_limit: str = "32G"

    # Cluster training as a Kubeflow Trainer v2 TrainJob (training/trainjob.py, the train step's "trainjob" mode).
    trainjob_runtime: str = "torch-distributed"  # the ClusterTrainingRuntime the TrainJob references
    trainjob_namespace: str = "cityscale"  # the pipeline runner may create/watch/delete TrainJobs only here
    trainjob_service_account: str = "cityscale-trainer"  # Workload Identity SA of the training pods (GCS access)
    trainjob_timeout_s: int = 4 * 3600  # then the TrainJob is deleted and the step fails
    trainjob_poll_s: int = 10
    trainjob_precision: str = "bf16-mixed"  # on GPU nodes; CPU-only TrainJobs train in 32-bit

    # Forecast contract defaults (the trained model artifact records the values it used).
    model_name: str = "cityscale"
    # Hours of history each forecast reads: four weeks, so the boosters see the same hour of the week four times
    # and the level's trend (cityscale/model/boosted.py); the network reads the latest week of it.
    input_window: int = 672
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    origin_stride_hours: int = 6
    min_history_fraction: float = 0.5

    # Training.
    seed: int = 42
    max_epochs: int = 8
    batch_size: int = 512
    learning_rate: float = 2e-3
    hidden_size: int = 256
    dropout: float = 0.1
    volume_weighted_loss: bool = False  # weigh examples by their level, as WAPE does
    # Members whose quantiles are averaged: the MLP (Lightning) and LightGBM quantile boosters over the same
    # inputs (cityscale/model/boosted.py). ("mlp",) trains the MLP alone.
    model_members: tuple[Literal["mlp", "lightgbm"], ...] = ("mlp", "lightgbm")
    # Boosters: every example (gbm_steps_per_example of its 24 target hours, sampled), at most gbm_rounds rounds,
    # stopped early on the validation examples. Trees dominate serving cost (~8 ns per tree per row compiled).
    gbm_rounds: int = 300
    gbm_num_leaves: int = 127  # 63 -> 127: WAPE -0.4 to -1.1 % on three validation periods, fit ~1.1x (benchmarks.md)
    gbm_learning_rate: float = 0.1
    gbm_steps_per_example: int = 8
    # The P10/P90 boosters read this many of those steps: their band is conformalized afterwards, and WAPE scores
    # the median (docs/benchmarks.md, "train-full time")
    gbm_band_steps_per_example: int = 4
    gbm_early_stopping_rounds: int = 20
    gbm_volume_weighted: bool = True  # rows weighed by their level: the loss counts pedestrians, as WAPE does
    gbm_max_bin: int = 63  # histogram bins per feature (255 -> 63 with bagging 0.5: fit 0.76x, same WAPE)
    gbm_bagging_fraction: float = 0.5  # share of the rows each round reads (docs/benchmarks.md, issue #19)
    gbm_feature_fraction: float = 1.0  # share of the features each round reads
    # The latest days of training origins held out from fitting: the network's validation loss, the boosters'
    # early stopping and the conformal calibration of the band (cityscale/model/calibration.py).
    validation_days: int = 56
    calibrate_band: bool = True

    # Evaluation: baselines computed in the same backtest (the seasonal ones always are), and the
    # ones a candidate must beat to be registered. MSTL refits per (sensor, origin): slow, opt-in.
    strong_baselines: tuple[str, ...] = ("lightgbm",)
    gate_baselines: tuple[str, ...] = ("snaive24", "snaive168", "mean4w")

    # Serving.
    http_port: int = Field(8080, validation_alias=AliasChoices("HTTP_PORT", "CITYSCALE_HTTP_PORT"))
    grpc_port: int = Field(8081, validation_alias=AliasChoices("GRPC_PORT", "CITYSCALE_GRPC_PORT"))
    max_batch_sensors: int = 512
    serving_calendar_cache_size: int = 4096  # (city, forecast start) calendar blocks kept by the predictor
    # Forecasts kept by the predictor, keyed by their history window's content, start and city (serving/caches.py):
    # a repeated request between two pushes is answered without the model. 0: every request runs the model.
    serving_forecast_cache_size: int = 16384
    serving_torch_threads: int = 1  # intra-op threads per server process (see serving/predictor.py)
    serving_freeze_model: bool = True  # trace + freeze the network at load (same outputs, less per-call overhead)
    # Compile the LightGBM boosters to native code at load (lleaves; same answers, ~3x faster trees), cached by model
    # hash in compiled_trees_dir (default <workdir>/cache/compiled-trees). Off or failing: LightGBM serves them.
    serving_compiled_trees: bool = True
    # Then compile the inlined forest in a separate process and swap it in when done (2.7x faster trees for ~18 s
    # of compilation per booster; the forest above serves meanwhile). Metric cityscale_compiled_trees: 2 when in.
    serving_inline_trees: bool = True
    compiled_trees_dir: str = ""
    # Forecasts run in a pool of this many threads instead of on the event loop that REST and gRPC share
    # (serving/predictor.py): 0 = one per CPU the process may use (the pod's CPU limit), -1 = on the event loop, where
    # a REST flood starves gRPC. One: waiting requests coalesce into bigger calls and one thread fewer takes the GIL;
    # measured against one per CPU in docs/benchmarks.md, "Serving: mixed REST + gRPC traffic".
    serving_predict_threads: int = 1
    # At most this many waiting requests share one forecast call (serving/batching.py); 1 = no coalescing.
    serving_batch_max_requests: int = 32
    # GIL switch interval of the predictor process: how long a forecast thread may keep the event loop waiting
    # (Python's default 5 ms; <= 0 keeps it). Shorter: lower p99 under mixed load (docs/benchmarks.md).
    serving_gil_switch_interval_ms: float = 0.5
    # gRPC on its own event loop (serving/server.py): an older mitigation of the same starvation, superseded by the
    # predict threads above; gRPC alone is slower with it. Off: one loop, kserve's default.
    serving_grpc_own_loop: bool = False
    # kserve's INFO line per gRPC call ("grpc method: ..."); off: ~3 % of the server's CPU under load, and log volume.
    serving_log_grpc_calls: bool = False

    # KServe InferenceService (serving/inference_service.py, the deploy step's "kserve" target).
    serving_namespace: str = "cityscale"  # the pipeline runner may create/patch InferenceServices only here
    serving_service_account: str = "cityscale-serving"  # Workload Identity SA of the predictor/transformer pods
    serving_deployment_mode: str = "Standard"  # KServe 0.21 default (Deployment + HPA); or "Knative"
    serving_min_replicas: int = 1
    serving_max_replicas: int = 3
    serving_scale_metric: str = "cpu"  # Standard (HPA): cpu or memory; Knative: concurrency or rps
    serving_scale_target: int = 70  # % utilisation (cpu/memory) or requests (concurrency/rps) per replica
    serving_cpu_request: str = "1"
    serving_cpu_limit: str = "2"
    serving_memory_request: str = "2Gi"
    serving_memory_limit: str = "4Gi"
    serving_gpus: int = 0  # >0: the GPU variant (nvidia.com/gpu limit, GPU node selector and toleration)
    serving_transformer: bool = False  # deploy the feature-fetching transformer in front of the predictor
    serving_canary_percent: int = 0  # Knative mode only (KServe ignores canaryTrafficPercent in Standard)
    serving_ready_timeout_s: float = 600.0  # deploy waits this long for Ready, then rolls back
    serving_ready_poll_s: float = 5.0

    # Ingestion (cityscale/ingestion/run.py, airbyte/). Modes: snapshot (files, the offline default), embedded
    # (the airbyte/ manifests in-process with airbyte-cdk), airbyte-server (a sync job through airbyte-api).
    ingest_mode: str = "snapshot"
    airbyte_dir: Path = PACKAGE_DATA.parents[1] / "airbyte"  # connections/, manifests/, destinations/
    airbyte_config_overrides: dict[str, dict] = {}  # per connector, e.g. {"melbourne": {"base_url": ...}} (JSON)
    airbyte_server_url: str = ""  # OSS: http://HOST:8000/api/public/v1; Cloud: https://api.airbyte.com/v1
    airbyte_token_url: str = ""  # absolute; default <server_url>/applications/token
    airbyte_client_id: str = ""
    airbyte_client_secret: str = Field("", repr=False)
    airbyte_workspace_id: str = ""
    airbyte_landing_uri: str = ""  # where the GCS destination writes: gs://<bucket>/<gcs_bucket_path>
    airbyte_sync_timeout_s: float = 3 * 3600  # then the job is cancelled and the step fails (safe to retry)
    airbyte_poll_initial_s: float = 5.0
    airbyte_poll_max_s: float = 60.0
    quality_missing_rate_warn: float = 0.2  # per sensor and batch: reported
    quality_missing_rate_max: float = 0.98  # per sensor and batch (sensors with >= 1 week in it): fails the run
    raw_zone_lock_timeout_s: float = 600.0  # a writer waits this long for the raw zone's writer lock, then fails
    raw_zone_lock_stale_s: float = 3600.0  # gs:// only: a lock object older than this is a dead writer's, taken over

    # Feature platform (feature_repo/, cityscale/features/). Feast is the open default; Tecton is opt-in
    # for licensees only. The feature server URL and Tecton settings also honour the plain names that the
    # cityscale-feast Helm chart's ConfigMap exports (FEAST_FEATURE_SERVER_URL, TECTON_URL, ...).
    feature_backend: str = Field("feast", validation_alias=AliasChoices("CITYSCALE_FEATURE_BACKEND", "FEATURE_BACKEND"))
    features_dir: str = ""  # Feast registry, online store and computed tables; default: <workdir>/features
    feast_repo: str = ""  # directory holding feature_store.yaml; default: feature_repo/feast of this checkout
    feature_server_url: str = Field(
        "",
        validation_alias=AliasChoices("feature_server_url", "CITYSCALE_FEATURE_SERVER_URL", "FEAST_FEATURE_SERVER_URL"),
    )
    feature_server_timeout_s: float = 2.0
    tecton_url: str = Field("", validation_alias=AliasChoices("tecton_url", "CITYSCALE_TECTON_URL", "TECTON_URL"))
    tecton_workspace: str = Field(
        "", validation_alias=AliasChoices("tecton_workspace", "CITYSCALE_TECTON_WORKSPACE", "TECTON_WORKSPACE")
    )
    tecton_api_key: str = Field(
        "", validation_alias=AliasChoices("tecton_api_key", "CITYSCALE_TECTON_API_KEY", "TECTON_API_KEY")
    )
    tecton_feature_service: str = "sensor_online"

    # Real-time path (cityscale/realtime/): the push gateway journals every accepted count, pushes the
    # recomputed feature rows to the feature server at once and commits the journal into the raw zone.
    realtime_journal_dir: str = ""  # write-ahead journal; default: <workdir>/realtime/journal
    realtime_commit_interval_s: float = 5.0  # journal -> raw zone at least this often while counts arrive ...
    realtime_commit_rows: int = 50_000  # ... or as soon as this many rows wait
    realtime_max_records: int = 10_000  # per push request; larger batches get a 413
    realtime_push_timeout_s: float = 5.0  # the gateway's calls to the feature server's /push
    realtime_catch_up_delay_s: float = 1.0  # rows of sensors that did not push into a new hour: sent this late
    # The aggregate views (no forecast reads them) are pushed at most this often, for every sensor touched meanwhile
    realtime_aggregates_interval_s: float = 0.5
    # One /push at a time from the gateway to the feature server. Feast's SQLite online store (the embedded default)
    # shares one connection across the server's threads: a window round and an aggregates push at the same moment
    # failed with "cannot start a transaction within a transaction" (a 500; the round retried 0.5 s later, the
    # p99 of make bench-realtime). An online store that takes concurrent writes (Redis) may turn it off.
    realtime_serial_pushes: bool = True
    # Bearer token every gateway request but GET /health must carry (`Authorization: Bearer <token>`, else a 401).
    # Empty: no check (loopback use). The cluster's Deployment sets it from a Secret (cityscale-platform chart).
    realtime_token: str = Field("", repr=False)

    # Monitoring (cityscale/monitoring/). The predictor records every served forecast to
    # <store>/forecast_log/ in the background (dropped, never blocking, when the queue is full).
    forecast_log_enabled: bool = True
    forecast_log_queue_batches: int = 1_000  # served batches waiting to be written (<= 150 MB); more are dropped
    forecast_log_flush_rows: int = 20_000  # write a part file once this many forecast rows wait ...
    forecast_log_flush_interval_s: float = 10.0  # ... or this long after the first of them arrived
    monitor_window_days: int = 7  # accuracy, drift and outage verdicts are over the last days before as_of
    monitor_drift_reference_days: int = 28  # drift compares the window with the days before it
    monitor_psi_threshold: float = 0.25  # PSI above it marks a sensor's recent counts as drifted
    monitor_outage_hours: int = 24  # outages are looked for in the last hours before the newest count
    monitor_zero_run_hours: int = 6  # zeros at hours that usually see traffic, this many in a row: stuck at zero
    monitor_zero_expected_min: float = 10.0  # "usually see traffic": reference median for the hour of day
    monitor_flatline_hours: int = 6  # the same non-zero count this many hours in a row: flatline
    monitor_retrain_wape: float = 0.5  # rolling WAPE above it asks for retraining
    monitor_retrain_degradation: float = 0.25  # or WAPE this much (relative) above the model's backtest WAPE
    monitor_retrain_coverage_min: float = 0.5  # or P10-P90 coverage below it
    monitor_retrain_drift_share: float = 0.3  # or this share of sensors drifted
    monitor_pushgateway_url: str = ""  # also push the gauges to a Prometheus Pushgateway (the store always gets a file)

    @field_validator("model_members")
    @classmethod
    def _mlp_is_a_member(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        if "mlp" not in members or len(set(members)) != len(members):
            raise ValueError(f"model_members must hold 'mlp' (and optionally 'lightgbm') once each, got {members}")
        return members

    def as_env(self, fields: Iterable[str]) -> dict[str, str]:
        """``CITYSCALE_<FIELD>`` variables from which ``Settings()`` reads these fields back with equal values.

        Strings (and paths, literals) go as they are; every other value as JSON, which pydantic-settings parses
        for complex types (tuples, dicts) and which spells numbers and booleans the way it reads them. A field with
        a validation alias is read from the first of its alias names that is set; it is refused unless
        ``CITYSCALE_<FIELD>`` is that first name (e.g. ``http_port``: a plain ``HTTP_PORT`` would win).
        """
        fields = tuple(fields)
        unknown = [name for name in fields if name not in type(self).model_fields]
        if unknown:
            raise ValueError(f"not Settings fields: {unknown}")
        values = self.model_dump(mode="json", include=set(fields))
        env: dict[str, str] = {}
        for name in fields:
            var = f"{self.model_config.get('env_prefix', '')}{name}".upper()
            info = type(self).model_fields[name]
            alias = info.validation_alias or info.alias
            if alias is not None:
                first = alias.choices[0] if isinstance(alias, AliasChoices) else alias
                if isinstance(first, AliasPath) or first.upper() != var:
                    raise ValueError(f"{name} is read from the environment as {alias!r}, not first as {var}")
            value = values[name]
            env[var] = value if isinstance(value, str) else json.dumps(value)
        return env

    @property
    def resolved_features_dir(self) -> str:
        return self.features_dir or str((self.workdir / "features").absolute())

    @property
    def resolved_store_uri(self) -> str:
        return self.store_uri or str((self.workdir / "store").absolute())

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or str((self.workdir / "registry").absolute())

    @property
    def resolved_compiled_trees_dir(self) -> Path:
        return Path(self.compiled_trees_dir) if self.compiled_trees_dir else self.workdir / "cache" / "compiled-trees"

    @property
    def resolved_pipeline_root(self) -> str:
        return self.pipeline_root or str((self.workdir / "pipeline_root").absolute())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

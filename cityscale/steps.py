"""The pipeline steps as plain functions over paths, URIs and the settings: what the KFP components call.

Each component in ``components/`` reads its settings once and calls exactly one function here (the deploy
component's ``kserve`` target calls ``serving.rollout`` instead, a layer above this library), so every step
can be tested and run without an orchestrator. ``make train-full`` (``cityscale.training.full``) reuses the
same training and scoring functions and the registry's model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cityscale import raw_zone, registry
from cityscale.config import Settings
from cityscale.evaluation.backtest import held_out_start
from cityscale.evaluation.gate import Evaluation, evaluate_candidate
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model.contract import ModelContract
from cityscale.model.examples import Examples
from cityscale.panel import Panel
from cityscale.training.train import train_model


def ingest(
    mode: str, source: str, store_uri: str, start: str, end: str, raw_out: str, report_out: str, settings: Settings
) -> dict[str, object]:
    """Ingest into the raw zone, then write the run's data window (Parquet) and the quality report (Markdown).

    Empty strings mean "default" (KFP parameters): the configured mode, the bundled sample, the whole window.
    """
    from cityscale.ingestion.run import ingest as run_ingest

    mode = mode or settings.ingest_mode
    if mode == "snapshot" and not source:
        source = str(settings.sample_data)
    result = run_ingest(mode, source, store_uri, start or None, end or None, settings=settings)
    window = raw_zone.read(store_uri, start=start or None, end=end or None)
    window.to_parquet(raw_out, index=False)
    Path(report_out).write_text(result.report.to_markdown())
    return {
        "mode": mode,
        "rows": len(window),
        "rows_landed": len(result.rows),
        "sensors": int(window["sensor_id"].nunique()),
        "artefacts_masked": result.report.daily_total_artefacts_masked,
        "dst_gap_hours_dropped": result.report.dst_nonexistent_hours_dropped,
        "warnings": len(result.report.warnings),
    }


def build_features(raw_path: str, test_start: str, examples_out: str, settings: Settings) -> dict[str, Any]:
    """Point-in-time training examples at strided origins before ``test_start`` through the feature platform.

    The configured backend (Feast by default, Tecton for licensees) joins the spec's features onto a spine
    of (sensor, origin) rows; only the origins the model trains on are computed, which keeps this fast.
    The Dataset holds the ``Examples`` fields plus the spec's extra features and a schema, checked here
    before it is handed on. Targets end before ``test_start``. Returns that schema.
    """
    from cityscale.features.retrieval import build_training_set
    from cityscale.features.training_set import validate_training_set

    raw = pd.read_parquet(raw_path)
    if raw.empty:
        raise ValueError(f"no raw counts in {raw_path}")
    test_start = str(held_out_start(test_start, raw["timestamp_local"].max()))
    last_origin = pd.Timestamp(test_start) - pd.Timedelta(hours=settings.horizon - 1)
    start = pd.Timestamp(raw["timestamp_local"].min())
    if settings.origin_stride_hours <= 0 or (24 % settings.origin_stride_hours and settings.origin_stride_hours % 24):
        raise ValueError(f"origin stride must divide a day or be whole days, got {settings.origin_stride_hours} h")
    origins = pd.date_range(start.ceil("D"), last_origin, freq=f"{settings.origin_stride_hours}h", inclusive="left")
    training = build_training_set(raw, origins, settings)
    examples = training.examples
    # A target window must not reach into the test period.
    keep = examples.origins + pd.Timedelta(hours=settings.horizon) <= pd.Timestamp(test_start)
    training.examples = examples.select(keep)
    training.extras = {k: v[keep] for k, v in training.extras.items()}
    if len(training.examples) == 0:
        raise ValueError(f"no training examples before {test_start}")
    training.save(examples_out)
    return validate_training_set(examples_out, settings.input_window, settings.horizon)


def train(examples_path: str, model_dir: str, settings: Settings, mode: str = "local") -> ModelContract:
    """Train in this process, after validating the features step's Dataset (the pod holds the GPU).

    ``mode`` is the pipeline's ``train_mode``: anything but ``local`` here is a typo that must not train.
    """
    from cityscale.features.training_set import validate_training_set

    if mode != "local":
        raise ValueError(f"train mode {mode!r} is not supported: use 'local' or 'trainjob'")
    validate_training_set(examples_path, settings.input_window, settings.horizon)
    return train_model(Examples.load(examples_path), model_dir, settings)


def train_on_trainjob(
    examples_uri: str,
    model_dir: str,
    settings: Settings,
    *,
    output_uri: str,
    num_nodes: int,
    gpus_per_node: int,
    task_config: Any = None,
) -> ModelContract:
    """Train as a Kubeflow Trainer TrainJob and copy the model it wrote into ``model_dir``.

    The TrainJob reads ``examples_uri`` and writes under ``output_uri`` (a retried step reuses it and resumes
    from the last checkpoint); the hyper-parameters are ``settings``, the placement the task's ``task_config``.
    """
    from cityscale.training.trainjob import train_on_cluster

    return train_on_cluster(
        examples_uri,
        model_dir,
        settings,
        output_uri=output_uri,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        task_config=task_config,
    )


def evaluate(
    raw_path: str, model_dir: str, test_start: str, test_end: str, registry_uri: str, settings: Settings
) -> Evaluation:
    """Backtest the candidate, the production model (if any) and the baselines on the same cells; decide the gate."""
    panel = Panel.from_raw(pd.read_parquet(raw_path))
    test_start = str(held_out_start(test_start, panel.index[-1]).date())
    production = None
    if registry.get_alias(registry_uri, settings.model_name, "production"):
        uri, version = registry.resolve("production", registry_uri, settings.model_name)
        production = (version, Forecaster.load(uri, version))
    return evaluate_candidate(panel, Forecaster.load(model_dir), test_start, test_end, settings, production)


def write_evaluation(evaluation: Evaluation, markdown_out: str, html_out: str, verdict_out: str) -> None:
    """The evaluate step's artifacts: the Markdown and HTML reports and the verdict JSON the register step reads."""
    Path(markdown_out).write_text(evaluation.to_markdown())
    Path(html_out).write_text(evaluation.to_html())
    verdict = {"passed": evaluation.passed, "reason": evaluation.reason, "metrics": evaluation.metrics}
    Path(verdict_out).write_text(json.dumps(verdict, indent=2))


def register(
    model_dir: str | Path,
    verdict: dict[str, Any],
    registry_uri: str,
    settings: Settings,
    scored_on: str = "held-out period of the run, daily origins",
) -> str:
    """Register a model that passed evaluation as the next version (``latest``) with its metrics and card."""
    if not verdict["passed"]:
        raise ValueError(f"refusing to register a model that failed evaluation: {verdict['reason']}")
    card = registry.model_card(ModelContract.load(model_dir), settings.model_name, verdict["metrics"], scored_on)
    return registry.register(model_dir, registry_uri, settings.model_name, verdict["metrics"], card)


def deploy_local(version: str, registry_uri: str, settings: Settings) -> str:
    """Promote a registered version to ``production``; the local model server serves that alias."""
    registry.set_alias(registry_uri, settings.model_name, "production", version)
    return registry.version_uri(registry_uri, settings.model_name, version)


def batch_forecast(
    data: str, model: str, registry_uri: str, start: str, end: str, out_csv: str, settings: Settings
) -> dict[str, Any]:
    """Forecast every sensor in ``data`` for every daily origin in [start, end] into a CSV; returns its metadata."""
    from cityscale.forecasting.batch import batch_forecast as run_batch

    uri, version = registry.resolve(model, registry_uri, settings.model_name)
    frame, skipped = run_batch(data, Forecaster.load(uri, version), start, end, settings.min_history_fraction)
    frame.to_csv(out_csv, index=False, float_format="%.2f", date_format="%Y-%m-%dT%H:%M:%S")
    return {"model_version": version, "rows": len(frame), "pairs_skipped": skipped}


def monitor(store_uri: str, registry_uri: str, as_of: str, html_out: str, markdown_out: str, settings: Settings) -> Any:
    """Score served forecasts, check drift and outages, write the reports; returns the ``MonitoringResult``."""
    from cityscale.monitoring import report
    from cityscale.monitoring.run import monitor as run_monitor

    result = run_monitor(store_uri, settings, registry_uri, pd.Timestamp(as_of) if as_of else None)
    Path(html_out).write_text(report.to_html(result))
    Path(markdown_out).write_text(report.to_markdown(result))
    return result

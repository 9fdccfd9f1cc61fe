"""The training pipeline's steps as plain functions over paths and URIs.

Each KFP component in ``components/`` is a thin wrapper that calls exactly one of these, so the
whole pipeline can be unit-tested (and run from the CLI) without an orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cityscale import raw_zone, registry
from cityscale.backtest import BacktestResult, daily_origins, run_backtest
from cityscale.config import Settings
from cityscale.forecaster import Forecaster
from cityscale.ingest import ingest_snapshot
from cityscale.model.contract import ModelContract
from cityscale.panel import Panel
from cityscale.train import train_model
from cityscale.windows import Examples, cut_examples, origin_grid


def ingest(source: str, store_uri: str, start: str, end: str, raw_out: str, report_out: str) -> dict[str, Any]:
    """Snapshot ingestion into the raw zone; writes the run's data window and a quality report."""
    result = ingest_snapshot(source or Settings().sample_data, store_uri, start or None, end or None)
    window = raw_zone.read(store_uri, start=start or None, end=end or None)
    window.to_parquet(raw_out, index=False)
    Path(report_out).write_text(result.report.to_markdown())
    return {
        "rows": len(window),
        "sensors": int(window["sensor_id"].nunique()),
        "artefacts_masked": result.report.daily_total_artefacts_masked,
        "dst_gap_hours_dropped": result.report.dst_nonexistent_hours_dropped,
    }


def build_features(raw_path: str, test_start: str, examples_out: str, settings: Settings) -> int:
    """Training examples at strided origins before ``test_start`` (targets end before it too)."""
    panel = Panel.from_raw(pd.read_parquet(raw_path))
    last_origin = pd.Timestamp(test_start) - pd.Timedelta(hours=settings.horizon - 1)
    origins = origin_grid(panel, panel.index[0], last_origin, settings.origin_stride_hours)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    # A target window must not reach into the test period.
    examples = examples.select(examples.origins + pd.Timedelta(hours=settings.horizon) <= pd.Timestamp(test_start))
    if len(examples) == 0:
        raise ValueError(f"no training examples before {test_start}")
    examples.save(examples_out)
    return len(examples)


def train(examples_path: str, model_dir: str, settings: Settings) -> ModelContract:
    return train_model(Examples.load(examples_path), model_dir, settings)


@dataclass
class Evaluation:
    result: BacktestResult
    metrics: dict[str, float]
    passed: bool
    reason: str

    def to_markdown(self) -> str:
        table = self.result.summary.drop(columns=["n_hours"], errors="ignore")
        lines = [
            "# Backtest: model vs baselines",
            "",
            f"Rolling daily origins at 00:00, horizon {self.result.actual.shape[1]} h, "
            f"{self.result.summary['n_pairs'].max():.0f} (sensor, origin) pairs, all methods scored on the same cells.",
            "",
            table.to_markdown(floatfmt=".4f"),
            "",
            f"**Gate: {'PASSED' if self.passed else 'FAILED'}** — {self.reason}",
            "",
            "## WAPE by sensor",
            "",
            self.result.per_sensor.to_markdown(floatfmt=".3f"),
            "",
            "## MAE by hour of day",
            "",
            self.result.by_hour.to_markdown(floatfmt=".1f"),
        ]
        return "\n".join(lines) + "\n"


def evaluate(
    raw_path: str,
    model_dir: str,
    test_start: str,
    test_end: str,
    registry_uri: str,
    model_name: str,
    settings: Settings,
) -> Evaluation:
    """Backtest the candidate, the production model (if any) and baselines; decide the gate.

    The candidate passes when its WAPE beats the best baseline and is no worse than production.
    """
    panel = Panel.from_raw(pd.read_parquet(raw_path))
    candidate = Forecaster.load(model_dir)
    models = {"model": candidate}
    production = registry.get_alias(registry_uri, model_name, "production")
    if production:
        uri, version = registry.resolve("production", registry_uri, model_name)
        models["production"] = Forecaster.load(uri, version)
    end = test_end or str(panel.index[-1] - pd.Timedelta(hours=candidate.horizon - 1))
    origins = daily_origins(panel, test_start, end)
    result = run_backtest(panel, origins, models, candidate.horizon, settings.min_history_fraction)
    model_wape = result.summary.loc["model", "wape"]
    best = result.best_baseline("wape")
    best_wape = result.summary.loc[best, "wape"]
    passed = bool(model_wape < best_wape)
    reason = f"model WAPE {model_wape:.4f} vs best baseline {best} {best_wape:.4f}"
    if "production" in models:
        prod_wape = result.summary.loc["production", "wape"]
        passed = passed and bool(model_wape <= prod_wape)
        reason += f"; production v{production['version']} WAPE {prod_wape:.4f}"
    metrics = {f"{k}": float(v) for k, v in result.metrics("model").items()}
    for method in result.summary.index.drop("model"):
        for key in ("wape", "mase"):
            metrics[f"{method}_{key}"] = float(result.summary.loc[method, key])
    metrics["forecast_rate"] = result.summary.loc["model", "n_pairs"] / max(result.pairs_with_actuals, 1)
    return Evaluation(result, metrics, passed, reason)


def register(model_dir: str, metrics: dict[str, float], registry_uri: str, model_name: str) -> str:
    contract = ModelContract.load(model_dir)
    card = "\n".join(
        [
            f"# {model_name}",
            "",
            f"Global quantile model ({contract.architecture}) forecasting {contract.horizon} hourly counts "
            f"(quantiles {contract.quantiles}) from the previous {contract.input_window} hours and calendar "
            f"covariates. Trained on origins {contract.training_start} .. {contract.training_end} "
            f"({contract.n_train_examples:,} examples, {len(contract.sensors_seen)} sensors, "
            f"cities {contract.cities}).",
            "",
            "## Backtest metrics",
            "",
            *[f"- {k}: {v:.4f}" for k, v in sorted(metrics.items())],
            "",
            "Data: City of Melbourne Pedestrian Counting System, CC BY 4.0.",
        ]
    )
    return registry.register(model_dir, registry_uri, model_name, metrics, card)


def deploy_local(version: str, registry_uri: str, model_name: str) -> str:
    """Promote a registered version to ``production``; the local model server serves that alias."""
    registry.set_alias(registry_uri, model_name, "production", version)
    return registry.version_uri(registry_uri, model_name, version)

"""The training pipeline's steps as plain functions over paths and URIs.

Each KFP component in ``components/`` is a thin wrapper that calls exactly one of these, so the
whole pipeline can be unit-tested (and run from the CLI) without an orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cityscale import registry
from cityscale.config import Settings
from cityscale.evaluation.backtest import BacktestResult, daily_origins, run_backtest
from cityscale.evaluation.strong_baselines import backtest_baselines
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model.contract import ModelContract
from cityscale.model.examples import Examples
from cityscale.panel import Panel
from cityscale.training.train import train_model


def build_features(raw_path: str, test_start: str, examples_out: str, settings: Settings) -> int:
    """Point-in-time training examples at strided origins before ``test_start`` through the feature platform.

    The configured backend (Feast by default, Tecton for licensees) joins the spec's features onto a spine
    of (sensor, origin) rows; only the origins the model trains on are computed, which keeps this fast.
    The Dataset holds the ``Examples`` fields plus the spec's extra features and a schema that
    ``validate_training_set`` checks. Targets end before ``test_start``.
    """
    from cityscale.features.retrieval import build_training_set
    from cityscale.features.training_set import validate_training_set

    raw = pd.read_parquet(raw_path)
    if raw.empty:
        raise ValueError(f"no raw counts in {raw_path}")
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
    validate_training_set(examples_out, settings.input_window, settings.horizon)
    return len(training.examples)


def train(examples_path: str, model_dir: str, settings: Settings) -> ModelContract:
    """Validate the features step's Dataset against the model's contract, then train on it."""
    from cityscale.features.training_set import validate_training_set

    validate_training_set(examples_path, settings.input_window, settings.horizon)
    return train_model(Examples.load(examples_path), model_dir, settings)


@dataclass
class Evaluation:
    result: BacktestResult
    metrics: dict[str, float]
    passed: bool
    reason: str

    def summary_text(self) -> str:
        n_pairs = self.result.summary["n_pairs"].max()
        return (
            f"Rolling daily origins at 00:00, horizon {self.result.actual.shape[1]} h, {n_pairs:.0f} (sensor, origin) "
            f"pairs, every method scored on the same cells. Gate: {'PASSED' if self.passed else 'FAILED'} "
            f"({self.reason})."
        )

    def to_markdown(self) -> str:
        table = self.result.summary.drop(columns=["n_hours"], errors="ignore")
        lines = [
            "# Backtest: model vs baselines",
            "",
            self.summary_text(),
            "",
            table.to_markdown(floatfmt=".4f"),
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

    def to_html(self) -> str:
        from cityscale.evaluation.report import backtest_charts, render_html

        tables = [
            ("Model vs baselines", self.result.summary.drop(columns=["n_hours"], errors="ignore")),
            ("WAPE by sensor", self.result.per_sensor),
        ]
        return render_html("CityScale backtest", tables, self.summary_text(), backtest_charts(self.result))


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

    The candidate passes when its WAPE beats the best of ``settings.gate_baselines`` and production's on the
    same cells. A tie with production fails: a retrain that is no better is not worth a new deployment.
    Every other baseline is scored on the same cells and reported.
    """
    panel = Panel.from_raw(pd.read_parquet(raw_path))
    candidate = Forecaster.load(model_dir)
    models = {"model": candidate}
    production = registry.get_alias(registry_uri, model_name, "production")
    if production:
        uri, version = registry.resolve("production", registry_uri, model_name)
        models["production"] = Forecaster.load(uri, version)
    end = test_end or str(panel.index[-1] - pd.Timedelta(hours=candidate.horizon - 1))
    origins = daily_origins(test_start, end)
    baselines = backtest_baselines(panel, pd.Timestamp(test_start), list(settings.strong_baselines))
    result = run_backtest(panel, origins, models, candidate.horizon, settings.min_history_fraction, baselines)
    model_wape = result.summary.loc["model", "wape"]
    gate = result.summary.loc[[b for b in settings.gate_baselines if b in result.summary.index]]
    best = str(gate["wape"].idxmin())
    best_wape = gate.loc[best, "wape"]
    passed = bool(model_wape < best_wape)
    reason = f"model WAPE {model_wape:.4f} vs best gate baseline {best} {best_wape:.4f}"
    strongest = result.best_baseline("wape")
    if strongest != best:
        reason += f" (strongest baseline overall: {strongest} {result.summary.loc[strongest, 'wape']:.4f})"
    if "production" in models:
        prod_wape = result.summary.loc["production", "wape"]
        passed = passed and bool(model_wape < prod_wape)
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

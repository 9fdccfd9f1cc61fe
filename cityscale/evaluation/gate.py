"""The deploy gate: backtest a candidate beside the baselines (and production) and decide whether it ships.

One implementation for every caller: the pipeline's evaluate step and ``make train-full`` both score through
:func:`score`, so a model is always judged on the same cells, origins and baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cityscale.config import Settings
from cityscale.evaluation.backtest import BacktestResult, daily_origins, run_backtest
from cityscale.evaluation.strong_baselines import backtest_baselines
from cityscale.forecasting.forecaster import Forecaster
from cityscale.panel import Panel


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


def score(
    panel: Panel,
    models: dict[str, Forecaster],
    test_start: str,
    test_end: str,
    settings: Settings,
    train_panel: Panel | None = None,
) -> BacktestResult:
    """Backtest ``models`` (``"model"`` is the candidate) and every configured baseline on daily origins.

    ``test_end`` ends the origin days, exclusive (empty: the last origin whose horizon fits the data).
    The strong baselines train on ``train_panel`` (default: ``panel``; e.g. every city when ``panel`` is one
    city's rows, as the model did) before ``test_start`` only.
    """
    horizon = models["model"].horizon
    end = test_end or str(panel.index[-1] - pd.Timedelta(hours=horizon - 1))
    baselines = backtest_baselines(
        train_panel if train_panel is not None else panel, pd.Timestamp(test_start), list(settings.strong_baselines)
    )
    origins = daily_origins(test_start, end)
    return run_backtest(panel, origins, models, horizon, settings.min_history_fraction, baselines)


def metrics_of(result: BacktestResult) -> dict[str, float]:
    """The model's metrics, ``<method>_wape``/``_mase`` of every other method, and the share of pairs forecast."""
    metrics = {k: float(v) for k, v in result.metrics("model").items()}
    for method in result.summary.index.drop("model"):
        for key in ("wape", "mase"):
            metrics[f"{method}_{key}"] = float(result.summary.loc[method, key])
    metrics["forecast_rate"] = result.forecast_rate()
    return metrics


def decide(result: BacktestResult, settings: Settings, production_version: str | None = None) -> tuple[bool, str]:
    """Pass when the model's WAPE beats the best of ``settings.gate_baselines`` and production's (if scored).

    A tie with production fails: a retrain that is no better is not worth a new deployment.
    """
    summary = result.summary
    model_wape = summary.loc["model", "wape"]
    gate = summary.loc[[b for b in settings.gate_baselines if b in summary.index]]
    best = str(gate["wape"].idxmin())
    best_wape = gate.loc[best, "wape"]
    passed = bool(model_wape < best_wape)
    reason = f"model WAPE {model_wape:.4f} vs best gate baseline {best} {best_wape:.4f}"
    strongest = result.best_baseline("wape")
    if strongest != best:
        reason += f" (strongest baseline overall: {strongest} {summary.loc[strongest, 'wape']:.4f})"
    if "production" in summary.index:
        prod_wape = summary.loc["production", "wape"]
        passed = passed and bool(model_wape < prod_wape)
        reason += f"; production v{production_version} WAPE {prod_wape:.4f}"
    return passed, reason


def evaluate_candidate(
    panel: Panel,
    candidate: Forecaster,
    test_start: str,
    test_end: str,
    settings: Settings,
    production: tuple[str, Forecaster] | None = None,
) -> Evaluation:
    """Score the candidate (and ``(version, production model)``, if any) and decide the gate."""
    models = {"model": candidate}
    if production is not None:
        models["production"] = production[1]
    result = score(panel, models, test_start, test_end, settings)
    passed, reason = decide(result, settings, production[0] if production else None)
    return Evaluation(result, metrics_of(result), passed, reason)

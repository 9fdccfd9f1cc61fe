"""Accuracy benchmark: the chosen model configuration vs every baseline on both cities' held-out months.

The protocol of ``make train-full``'s selection fit: one model trained on Melbourne (../shared/data, origins
from ``--train-since``) and the bundled Auckland export, every example ending before its city's held-out
months (``cityscale.training.full.HOLDOUT``: Melbourne Jul-Oct 2022, Auckland Oct-Dec 2025), then scored on
daily 00:00 origins of those months (horizon 24 h) against every baseline, the LightGBM one with the
model's own four-week features. Prints one table per city, writes build/bench/accuracy.json and an HTML
report (build/bench/accuracy.html). Typer options override the model settings for ablations, e.g.
``python benchmarks/bench_accuracy.py --input-window 168``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, timed, write_result  # noqa: E402

from cityscale import raw_zone  # noqa: E402
from cityscale.config import Settings  # noqa: E402
from cityscale.evaluation.backtest import daily_origins, run_backtest  # noqa: E402
from cityscale.evaluation.baselines import same_hour_mean  # noqa: E402
from cityscale.evaluation.report import backtest_charts, render_html  # noqa: E402
from cityscale.evaluation.strong_baselines import backtest_baselines  # noqa: E402
from cityscale.forecasting.forecaster import Forecaster  # noqa: E402
from cityscale.ingestion.run import AKL_PACKAGE, ingest_snapshot  # noqa: E402
from cityscale.model.examples import cut_examples, origin_grid  # noqa: E402
from cityscale.panel import Panel  # noqa: E402
from cityscale.training.full import HOLDOUT, before_holdout  # noqa: E402
from cityscale.training.train import train_model  # noqa: E402

MELBOURNE = Path(__file__).resolve().parents[2] / "shared" / "data" / "melbourne_pcs"


def daily_level_oracle(panel: Panel, origins: list[pd.Timestamp], horizon: int = 24) -> dict[str, float]:
    """WAPE of mean4w's hourly shape rescaled to each day's TRUE total: a bound, not a forecast (it sees the future).

    It separates the two errors of a day-ahead forecast: the daily level and the hourly shape. Whatever a model
    learns from counts and calendars, if this bound is close to a target WAPE, the target needs the daily level
    almost exactly right, which history alone cannot give (weather and events are not in the data).
    """
    positions = np.array([panel.position(o) for o in origins])
    rows = np.repeat(np.arange(len(panel.sensor_ids)), len(positions))
    pos = np.tile(positions, len(panel.sensor_ids))
    actual = panel.window(rows, pos, horizon)
    shape = same_hour_mean(panel, rows, pos, horizon)
    ok = np.isfinite(actual).all(1) & np.isfinite(shape).all(1) & (shape.sum(1) > 0)
    actual, shape = actual[ok], shape[ok]
    rescaled = shape * (actual.sum(1) / shape.sum(1))[:, None]

    def wape(pred: np.ndarray) -> float:
        return float(np.abs(pred - actual).sum() / actual.sum())

    return {"wape": wape(rescaled), "mean4w_wape_same_cells": wape(shape), "n_pairs": float(ok.sum())}


def main(
    input_window: int = typer.Option(Settings().input_window),
    max_epochs: int = typer.Option(Settings().max_epochs),
    origin_stride_hours: int = typer.Option(Settings().origin_stride_hours),
    hidden_size: int = typer.Option(Settings().hidden_size),
    train_since: str = typer.Option("2014-01-01", help="First origin used for training."),
    baselines: str = typer.Option("lightgbm,mstl", help="Strong baselines to compute (comma separated)."),
    name: str = typer.Option("accuracy", help="Result file name under build/bench/."),
) -> None:
    work = Path(tempfile.mkdtemp(prefix="cityscale-accuracy-"))
    settings = Settings(
        workdir=work,
        input_window=input_window,
        max_epochs=max_epochs,
        origin_stride_hours=origin_stride_hours,
        hidden_size=hidden_size,
    )
    ingest_snapshot(MELBOURNE, settings.resolved_store_uri, settings=settings)
    ingest_snapshot(AKL_PACKAGE, settings.resolved_store_uri, settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(pd.Timestamp(train_since), panel.index[-1], settings.origin_stride_hours)
    examples = cut_examples(panel, origins, input_window, settings.horizon, settings.min_history_fraction)
    examples = examples.select(before_holdout(examples, settings.horizon))
    contract, train_s = timed(lambda: train_model(examples, work / "model", settings))
    # The model and, for the ablation in the README, each of its members alone (same weights, uncalibrated band).
    models = {"model": Forecaster.load(work / "model")}
    if len(contract.members) > 1:
        models.update({f"{m} member": Forecaster.load(work / "model", members=[m]) for m in contract.members})

    rows: dict[str, dict] = {}
    sections, charts, texts = [], {}, []
    for city, (start, end) in HOLDOUT.items():
        test_start = pd.Timestamp(start)
        chosen = backtest_baselines(panel, test_start, [b for b in baselines.split(",") if b])
        test_origins = daily_origins(start, end)
        # Only this city's sensors: the other city's counts of the same months may be training data.
        city_panel = panel.select_city(city)
        started = time.perf_counter()
        result = run_backtest(city_panel, test_origins, models, 24, settings.min_history_fraction, chosen)
        eval_s = time.perf_counter() - started
        city_rows = {
            f"{city} {method}": {k: float(v) for k, v in metrics.dropna().items() if k != "n_hours"}
            for method, metrics in result.summary.iterrows()
        }
        best = result.best_baseline("wape", models=tuple(models))
        model = city_rows[f"{city} model"]
        model.update(
            {
                "wape_vs_mean4w": 1 - model["wape"] / city_rows[f"{city} mean4w"]["wape"],
                "wape_vs_lightgbm": 1 - model["wape"] / city_rows[f"{city} lightgbm"]["wape"]
                if f"{city} lightgbm" in city_rows
                else float("nan"),
                "wape_vs_best_baseline": 1 - model["wape"] / city_rows[f"{city} {best}"]["wape"],
                "forecast_rate": result.forecast_rate(),
                "backtest_s": eval_s,
            }
        )
        city_rows[f"{city} oracle_daily_level (not a forecast)"] = daily_level_oracle(city_panel, list(test_origins))
        rows.update(city_rows)
        sections.append((f"{city}: model vs baselines", result.summary))
        charts.update({f"{city}: {caption}": png for caption, png in backtest_charts(result).items()})
        texts.append(f"{city}: daily origins {start}..{end}, best baseline {best}")
    rows["config"] = {
        "input_window": input_window,
        "max_epochs": max_epochs,
        "origin_stride_hours": origin_stride_hours,
        "hidden_size": hidden_size,
        "train_since": train_since,
        "train_s": train_s,
        "train_examples": len(examples),
    }
    write_result(name, rows)
    text = f"Trained from {train_since} on examples before each city's held-out months. " + "; ".join(texts)
    (BENCH_DIR / f"{name}.html").write_text(render_html("CityScale accuracy benchmark", sections, text, charts))


if __name__ == "__main__":
    typer.run(main)

"""Accuracy benchmark: the chosen model configuration vs every baseline on held-out months.

Melbourne: trained on all history before 2022-07-01 from ../shared/data, scored on daily origins
2022-07-01 .. 2022-10-30 (horizon 24 h). Prints the table, writes build/bench/accuracy.json and an
HTML report (build/bench/accuracy.html). Typer options override the model settings for ablations,
e.g. ``python benchmarks/bench_accuracy.py --input-window 168``.
"""

from __future__ import annotations

import sys
import tempfile
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
from cityscale.ingestion.run import ingest_snapshot  # noqa: E402
from cityscale.model.examples import cut_examples, origin_grid  # noqa: E402
from cityscale.panel import Panel  # noqa: E402
from cityscale.training.train import train_model  # noqa: E402

MELBOURNE = Path(__file__).resolve().parents[2] / "shared" / "data" / "melbourne_pcs"
TEST_START, TEST_END = "2022-07-01", "2022-10-31"


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
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    test_start = pd.Timestamp(TEST_START)
    origins = origin_grid(pd.Timestamp(train_since), test_start, settings.origin_stride_hours)
    examples = cut_examples(panel, origins, input_window, settings.horizon, settings.min_history_fraction)
    examples = examples.select(examples.origins + pd.Timedelta(hours=settings.horizon) <= test_start)
    contract, train_s = timed(lambda: train_model(examples, work / "model", settings))
    # The registered model and, for the ablation in the README, each of its members alone (same weights).
    models = {"model": Forecaster.load(work / "model")}
    if len(contract.members) > 1:
        models.update({f"{m} member": Forecaster.load(work / "model", members=[m]) for m in contract.members})

    chosen = backtest_baselines(panel, test_start, [b for b in baselines.split(",") if b])
    test_origins = daily_origins(TEST_START, TEST_END)
    result, eval_s = timed(lambda: run_backtest(panel, test_origins, models, 24, 0.5, chosen))
    rows = {
        method: {k: float(v) for k, v in metrics.dropna().items() if k != "n_hours"}
        for method, metrics in result.summary.iterrows()
    }
    best = result.best_baseline("wape", models=tuple(models))
    rows["model"].update(
        {
            "wape_vs_mean4w": 1 - rows["model"]["wape"] / rows["mean4w"]["wape"],
            "wape_vs_best_baseline": 1 - rows["model"]["wape"] / rows[best]["wape"],
            "forecast_rate": rows["model"]["n_pairs"] / result.pairs_with_actuals,
            "train_s": train_s,
            "train_examples": len(examples),
        }
    )
    rows["oracle_daily_level (not a forecast)"] = daily_level_oracle(panel, list(test_origins))
    rows["config"] = {
        "input_window": input_window,
        "max_epochs": max_epochs,
        "origin_stride_hours": origin_stride_hours,
        "hidden_size": hidden_size,
        "backtest_s": eval_s,
    }
    write_result(name, rows)
    text = f"Melbourne, daily origins {TEST_START}..{TEST_END}, trained from {train_since}; best baseline {best}"
    html = render_html(
        "CityScale accuracy benchmark", [("Model vs baselines", result.summary)], text, backtest_charts(result)
    )
    (BENCH_DIR / f"{name}.html").write_text(html)


if __name__ == "__main__":
    typer.run(main)

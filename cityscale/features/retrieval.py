"""Offline retrieval: a point-in-time training set from the configured feature backend.

The one place that chooses the backend, so neither backend module needs to know the other: Feast (the open
default) or Tecton (licensed, opt-in; imported only when chosen).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.spec import HISTORY_FEATURE, HISTORY_VIEW, SPEC, FeatureSpec
from cityscale.features.training_set import TrainingSet, frame_to_training_set


def _check_contract(settings: Settings, spec: FeatureSpec) -> None:
    window = spec.view(HISTORY_VIEW).feature(HISTORY_FEATURE).length
    calendar_len = min(f.length for f in spec.view("region_calendar").features)
    if window != settings.input_window or calendar_len < settings.horizon:
        raise ValueError(
            f"the feature spec serves a {window}-hour history and {calendar_len}-hour calendar, the settings ask for "
            f"input_window={settings.input_window}, horizon={settings.horizon}: change cityscale/features/spec.py"
        )


def build_training_set(
    raw: Any,
    origins: pd.DatetimeIndex,
    settings: Settings,
    features_dir: str | Path | None = None,
    require_target: bool = True,
) -> TrainingSet:
    """Point-in-time-correct examples at ``origins`` through the configured backend (Feast by default).

    ``features_dir`` holds the Feast registry and offline tables of this build; by default a temporary
    directory, so concurrent pipeline runs never share (or clobber) one registry.
    """
    _check_contract(settings, SPEC)
    backend = settings.feature_backend
    if backend == "tecton":
        from cityscale.features.tecton_backend import build_training_set as tecton_build  # licensed, opt-in

        return tecton_build(raw, origins, settings)
    if backend != "feast":
        raise ValueError(f"unknown feature backend {backend!r}; use 'feast' (default) or 'tecton'")
    from cityscale.features.feast_backend import FeastBackend

    computer = FeatureComputer(raw)
    spine = computer.training_spine(origins)
    tables = computer.compute(spine, horizon=settings.horizon)
    with tempfile.TemporaryDirectory(prefix="cityscale-feast-") as tmp:
        store = FeastBackend(settings, features_dir or tmp)
        frame = store.training_frame(tables)
    return frame_to_training_set(frame, tables.spine, tables.labels, settings, "feast", require_target)

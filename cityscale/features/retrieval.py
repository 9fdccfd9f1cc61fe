"""Offline retrieval: a point-in-time training set from the configured feature backend.

The one place that chooses the backend, so neither backend module needs to know the other: Feast (the open
default) or Tecton (licensed, opt-in; imported only when chosen).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.spec import HISTORY_FEATURE, HISTORY_VIEW, SPEC, FeatureSpec
from cityscale.features.training_set import TrainingSet, frame_to_training_set

# Said by the pipeline's features task when the cluster config (the cityscale-config ConfigMap, whose
# CITYSCALE_FEATURE_BACKEND every task loads) selects Tecton, and by `cityscale compile` for the same setting.
TECTON_NOT_IN_PIPELINE_IMAGE = (
    "feature_backend=tecton cannot build the pipeline's training set: the pipeline's features task (build_features) "
    "runs in the main CityScale image, which has no Tecton SDK (`tecton` is Tecton Proprietary and needs protobuf<5, "
    "so it cannot share the kfp/kserve environment). The pipeline builds its features with Feast: compile and run it "
    "with CITYSCALE_FEATURE_BACKEND=feast (the default; on a cluster the cityscale-config ConfigMap sets it for every "
    "task from the helmfile value featureBackend.type). Tecton licensees manage their features with `tecton apply` on "
    "feature_repo/tecton (feature_repo/README.md) and build Tecton training sets in the licensed image from "
    "Dockerfile.tecton (`make images TECTON=1`), which has the Tecton SDK and cityscale.features.tecton_backend."
)


class TectonUnavailable(RuntimeError):
    """The Tecton backend was chosen in a process whose environment has no Tecton SDK."""


def require_tecton_sdk() -> None:
    """Fail fast, before any feature computation, when ``tecton`` cannot be imported here.

    Why: otherwise the task dies deep inside the Tecton repository's imports with a bare ModuleNotFoundError
    that says nothing about images or licences.
    """
    if importlib.util.find_spec("tecton") is None:
        raise TectonUnavailable(TECTON_NOT_IN_PIPELINE_IMAGE)


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
        require_tecton_sdk()
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

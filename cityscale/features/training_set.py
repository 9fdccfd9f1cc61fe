"""Training sets through the feature platform: spine -> point-in-time join -> ``Examples`` + extras.

The model consumes :class:`cityscale.model.examples.Examples`; this module turns the feature store's
point-in-time training frame into exactly those arrays (history = the window feature, calendar = the
calendar covariates with the region's holiday/lockdown flags from the feature store, target = the labels
cut at the spine) and carries every other spec feature alongside as ``feature__<view>__<name>`` arrays
for the model to use later. The Dataset is one ``.npz``: ``Examples.load`` reads it unchanged, and an
embedded ``__schema__`` lets :func:`validate_training_set` check it before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cityscale.calendar import CALENDAR_FEATURES, calendar_features
from cityscale.config import Settings
from cityscale.features.spec import HISTORY_FEATURE, HISTORY_VIEW, SPEC, FeatureSpec
from cityscale.model.examples import Examples
from cityscale.model.inputs import has_enough_history

SCHEMA_KEY = "__schema__"
EXTRA_PREFIX = "feature__"
DATASET_FORMAT = "cityscale.training_set/v1"


@dataclass
class TrainingSet:
    examples: Examples
    extras: dict[str, np.ndarray]  # feature__<view>__<name> -> [N] or [N, length]
    backend: str

    def schema(self) -> dict[str, Any]:
        arrays = {**self.examples.__dict__, **self.extras}
        return {
            "format": DATASET_FORMAT,
            "backend": self.backend,
            "spec_version": SPEC.version,
            "n_examples": len(self.examples),
            "calendar_features": list(CALENDAR_FEATURES),
            "arrays": {k: {"dtype": v.dtype.str, "shape": [-1, *v.shape[1:]]} for k, v in arrays.items()},
        }

    def save(self, path: str | Path) -> None:
        """One compressed npz: the ``Examples`` fields (readable by ``Examples.load``), extras, schema."""
        arrays = {**self.examples.__dict__, **self.extras, SCHEMA_KEY: np.array(json.dumps(self.schema()))}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)


class TrainingSetError(ValueError):
    """The Dataset does not match the training-set contract."""


def validate_training_set(path: str | Path, input_window: int | None = None, horizon: int | None = None) -> dict:
    """Check a Dataset against its embedded schema and the model's contract; returns the schema."""
    with np.load(path, allow_pickle=False) as data:
        if SCHEMA_KEY not in data:
            raise TrainingSetError(f"{path} has no {SCHEMA_KEY}: not written by the features step")
        schema = json.loads(str(data[SCHEMA_KEY]))
        if schema.get("format") != DATASET_FORMAT:
            raise TrainingSetError(f"{path}: format {schema.get('format')!r}, expected {DATASET_FORMAT!r}")
        n = schema["n_examples"]
        for field in Examples.__dataclass_fields__:
            if field not in data:
                raise TrainingSetError(f"{path} lacks the Examples field {field!r}")
        for name, meta in schema["arrays"].items():
            if name not in data:
                raise TrainingSetError(f"{path} lacks array {name!r} declared in its schema")
            arr = data[name]
            if arr.dtype.str != meta["dtype"] or len(arr) != n or list(arr.shape[1:]) != meta["shape"][1:]:
                raise TrainingSetError(
                    f"{path}: {name} is {arr.dtype.str}{list(arr.shape)}, schema says {meta['dtype']}{meta['shape']}"
                )
        if schema["calendar_features"] != list(CALENDAR_FEATURES):
            raise TrainingSetError(f"{path}: calendar features {schema['calendar_features']} != {CALENDAR_FEATURES}")
        if input_window is not None and data["history"].shape[1] != input_window:
            raise TrainingSetError(f"{path}: history window {data['history'].shape[1]} != model's {input_window}")
        if horizon is not None and data["target"].shape[1] != horizon:
            raise TrainingSetError(f"{path}: horizon {data['target'].shape[1]} != model's {horizon}")
    return schema


def load_extras(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if k.startswith(EXTRA_PREFIX)}


def frame_to_training_set(
    frame: pd.DataFrame,
    spine: pd.DataFrame,
    labels: np.ndarray,
    settings: Settings,
    backend: str,
    require_target: bool = True,
    spec: FeatureSpec = SPEC,
) -> TrainingSet:
    """Convert a point-in-time training frame (``<view>__<feature>`` columns, spine order) to ``Examples``."""
    horizon = settings.horizon
    col = f"{HISTORY_VIEW}__{HISTORY_FEATURE}"
    history = _stack(frame[col], settings.input_window)
    history[history < 0] = np.nan  # -1 marks a missing hour in the feature store
    target = labels[:, :horizon]
    keep = has_enough_history(history, settings.min_history_fraction)
    if require_target:
        keep &= np.isfinite(target).any(axis=1)
    frame, spine, history, target = frame[keep], spine[keep], history[keep], target[keep]

    cities = spine["city"].to_numpy().astype(str)
    origins = pd.DatetimeIndex(spine["origin"])
    pos = ((origins - origins.min()) // pd.Timedelta(hours=1)).to_numpy() if len(origins) else np.zeros(0, int)
    calendar = np.empty((len(spine), horizon, len(CALENDAR_FEATURES)), dtype=np.float32)
    for city in np.unique(cities):
        sel = cities == city
        lo, hi = int(pos[sel].min()), int(pos[sel].max()) + horizon
        stamps = pd.date_range(origins.min() + pd.Timedelta(hours=lo), periods=hi - lo, freq="h")
        calendar[sel] = calendar_features(stamps, str(city))[(pos[sel] - lo)[:, None] + np.arange(horizon)[None, :]]
    # The region's flags come from the feature store (region_calendar view), not from recomputation.
    for flag in ("holiday", "lockdown"):
        if flag in CALENDAR_FEATURES:
            calendar[:, :, CALENDAR_FEATURES.index(flag)] = _stack(frame[f"region_calendar__{flag}_24h"], None)[
                :, :horizon
            ]

    extras: dict[str, np.ndarray] = {}
    for view in spec.views:
        for f in view.features:
            name = f"{view.name}__{f.name}"
            if name == col or view.name == "region_calendar" or name not in frame:
                continue
            if f.dtype == "float32_array":
                arr = _stack(frame[name], f.length)
                arr[arr < 0] = np.nan
            elif f.dtype == "string":
                arr = frame[name].fillna("").astype(str).to_numpy().astype(str)
            else:
                arr = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float32)
            extras[f"{EXTRA_PREFIX}{name}"] = arr
    examples = Examples(
        history=history,
        calendar=calendar,
        target=target.astype(np.float32),
        sensor_ids=spine["sensor_id"].to_numpy().astype(str),
        cities=cities,
        origins=origins.to_numpy().astype("datetime64[ns]"),
    )
    return TrainingSet(examples, extras, backend)


def _stack(values: pd.Series, length: int | None) -> np.ndarray:
    """A column of arrays (None where the point-in-time join found no row) as float32 [N, length]."""
    width = length or max((len(v) for v in values if v is not None), default=0)
    out = np.full((len(values), width), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            out[i] = np.asarray(v, dtype=np.float32)
    return out

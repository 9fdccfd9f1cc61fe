"""Encoding of raw windows into the network's input vector, shared by training and serving.

Counts are divided by a per-example scale (mean of the observed history + 1) so one global model
fits busy and quiet sensors alike; the log of the scale is an input so the level is not lost.
Missing hours become 0 with a 0 in the mask channel: the model sees that they are missing.

The last ``horizon`` inputs are a seasonal profile: for each target hour, the mean of the same
hour of the week over the weeks in the window (the same hour of the day where no week is
observed), aligned with the target so the network need not learn the alignment itself.
"""

from __future__ import annotations

import numpy as np

WEEK, DAY = 168, 24


def history_scale(history: np.ndarray) -> np.ndarray:
    """Per-example scale [N] from history [N, L] (NaN-aware)."""
    observed = np.isfinite(history)
    total = np.where(observed, history, 0.0).sum(axis=1)
    count = np.maximum(observed.sum(axis=1), 1)
    return (total / count + 1.0).astype(np.float32)


def _seasonal_mean(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Mean over past periods of the value at the same phase as each target hour; NaN if none."""
    n, length = history.shape
    k = np.arange(horizon)
    total = np.zeros((n, horizon), dtype=np.float64)
    count = np.zeros((n, horizon), dtype=np.int64)
    for lag in range(1, length // period + 1):
        idx = length - period * (lag + k // period) + k % period
        inside = idx >= 0
        values = np.where(inside, history[:, np.clip(idx, 0, length - 1)], np.nan)
        seen = np.isfinite(values)
        total += np.where(seen, values, 0.0)
        count += seen
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def seasonal_profile(history: np.ndarray, horizon: int) -> np.ndarray:
    """Weekly profile where available, else daily, else the window mean ([N, H], counts)."""
    profile = _seasonal_mean(history, horizon, WEEK)
    daily = _seasonal_mean(history, horizon, DAY)
    profile = np.where(np.isfinite(profile), profile, daily)
    fallback = history_scale(history)[:, None] - 1.0
    return np.where(np.isfinite(profile), profile, fallback).astype(np.float32)


def encode(history: np.ndarray, calendar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network input [N, input_size] and scale [N] from history [N, L] and calendar [N, H, K]."""
    scale = history_scale(history)
    observed = np.isfinite(history)
    normalised = np.where(observed, history, 0.0) / scale[:, None]
    profile = seasonal_profile(history, calendar.shape[1]) / scale[:, None]
    x = np.concatenate(
        [
            normalised.astype(np.float32),
            observed.astype(np.float32),
            calendar.reshape(len(calendar), -1).astype(np.float32),
            (np.log1p(scale) / 10.0)[:, None].astype(np.float32),
            profile.astype(np.float32),
        ],
        axis=1,
    )
    return x, scale


def input_size(input_window: int, horizon: int, n_calendar: int) -> int:
    return 2 * input_window + horizon * n_calendar + 1 + horizon

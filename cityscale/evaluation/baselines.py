"""Seasonal baselines that every model must beat, computed on the same panel and origins."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cityscale.panel import Panel

# A baseline maps (panel, rows, origin positions, horizon) to point forecasts [P, horizon].
Baseline = Callable[[Panel, np.ndarray, np.ndarray, int], np.ndarray]


def seasonal_naive(panel: Panel, rows: np.ndarray, positions: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """y_hat(t0 + k) = y(t0 + k - season * (k // season + 1)): the last observed season repeated."""
    k = np.arange(horizon)
    lag = season * (k // season + 1)
    offsets = positions[:, None] + k[None, :] - lag[None, :]
    return panel.gather(rows, offsets)


def same_hour_mean(panel: Panel, rows: np.ndarray, positions: np.ndarray, horizon: int, weeks: int = 4) -> np.ndarray:
    """Mean of the same hour of the week over the last ``weeks`` weeks (missing weeks ignored)."""
    k = np.arange(horizon)
    stack = []
    for w in range(1, weeks + 1):
        lag = 168 * (k // 168 + w)
        stack.append(panel.gather(rows, positions[:, None] + k[None, :] - lag[None, :]))
    stacked = np.stack(stack)
    counts = np.isfinite(stacked).sum(axis=0)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)


BASELINES: dict[str, Baseline] = {
    "snaive24": lambda p, r, pos, h: seasonal_naive(p, r, pos, h, 24),
    "snaive168": lambda p, r, pos, h: seasonal_naive(p, r, pos, h, 168),
    "mean4w": lambda p, r, pos, h: same_hour_mean(p, r, pos, h, 4),
}

"""Encoding of raw windows into the network's input vector, shared by training and serving.

The window a model receives may be long (four weeks: the boosters' weekly and daily summaries need
it), but the level and the eligibility of an example are judged on its most recent week
(``RECENT_HOURS``): a sensor that came back a week ago is forecast from that week, with its older
summaries simply missing. Counts are divided by a per-example scale (mean of the observed recent
hours + 1) so one global model fits busy and quiet sensors alike; the log of the scale is an input so
the level is not lost. Missing hours become 0 with a 0 in the mask channel: the model sees that they
are missing.
"""

from __future__ import annotations

import numpy as np

RECENT_HOURS = 168  # the hours that set an example's scale, its eligibility and the network's input


def recent(history: np.ndarray) -> np.ndarray:
    """The last ``RECENT_HOURS`` of windows [N, L] (all of them when the window is shorter)."""
    return history[:, -RECENT_HOURS:]


def observed_fraction(history: np.ndarray) -> np.ndarray:
    """Share of the recent hours observed, per example [N]."""
    return np.isfinite(recent(history)).mean(axis=1)


def has_enough_history(history: np.ndarray, min_fraction: float) -> np.ndarray:
    """Which examples [N] may be forecast: at least ``min_fraction`` of their recent hours observed."""
    return observed_fraction(history) >= min_fraction


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the observed values along ``axis``; NaN where none was observed (no warning)."""
    observed = np.isfinite(values)
    count = observed.sum(axis=axis)
    total = np.where(observed, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def history_scale(history: np.ndarray) -> np.ndarray:
    """Per-example scale [N] from history [N, L] (NaN-aware, recent hours only)."""
    window = recent(history)
    observed = np.isfinite(window)
    total = np.where(observed, window, 0.0).sum(axis=1)
    count = np.maximum(observed.sum(axis=1), 1)
    return (total / count + 1.0).astype(np.float32)


def long_summaries(history: np.ndarray, horizon: int, scale: np.ndarray) -> np.ndarray:
    """What the network sees of the window beyond its recent week, scaled, missing as 0: ``[N, 2 H + D + W]``.

    For each target hour the mean of the same hour of the week over the window's weeks and whether any was
    observed; each 24-hour block's mean (D blocks) and each week's mean (W weeks). Empty when the window is
    no longer than the recent week.
    """
    n, window = history.shape
    if window <= RECENT_HOURS:
        return np.zeros((n, 0), dtype=np.float32)
    x = history / scale[:, None]
    weeks, days = window // 168, window // 24
    same_hour = np.stack([x[:, window - 168 * k + np.arange(horizon) % 168] for k in range(1, weeks + 1)])
    blocks = [
        same_hour,
        x[:, window - days * 24 :].reshape(n, days, 24),
        x[:, window - weeks * 168 :].reshape(n, weeks, 168),
    ]
    how_seen = np.isfinite(same_hour).any(axis=0)
    how, day, week = (
        np.nan_to_num(nanmean(block, axis), nan=0.0) for block, axis in zip(blocks, (0, 2, 2), strict=True)
    )
    return np.concatenate([how, how_seen, day, week], axis=1).astype(np.float32)


def encode(history: np.ndarray, calendar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network input [N, input_size] and scale [N] from history [N, L] and calendar [N, H, K]."""
    scale = history_scale(history)
    window = recent(history)
    observed = np.isfinite(window)
    normalised = np.where(observed, window, 0.0) / scale[:, None]
    x = np.concatenate(
        [
            normalised.astype(np.float32),
            observed.astype(np.float32),
            calendar.reshape(len(calendar), -1).astype(np.float32),
            (np.log1p(scale) / 10.0)[:, None].astype(np.float32),
            long_summaries(history, calendar.shape[1], scale),
        ],
        axis=1,
    )
    return x, scale


def input_size(input_window: int, horizon: int, n_calendar: int) -> int:
    long = 2 * horizon + input_window // 24 + input_window // 168 if input_window > RECENT_HOURS else 0
    return 2 * min(input_window, RECENT_HOURS) + horizon * n_calendar + 1 + long

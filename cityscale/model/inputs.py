"""Encoding of raw windows into the network's input vector, shared by training and serving.

Counts are divided by a per-example scale (mean of the observed history + 1) so one global model
fits busy and quiet sensors alike; the log of the scale is an input so the level is not lost.
Missing hours become 0 with a 0 in the mask channel: the model sees that they are missing.
"""

from __future__ import annotations

import numpy as np


def history_scale(history: np.ndarray) -> np.ndarray:
    """Per-example scale [N] from history [N, L] (NaN-aware)."""
    observed = np.isfinite(history)
    total = np.where(observed, history, 0.0).sum(axis=1)
    count = np.maximum(observed.sum(axis=1), 1)
    return (total / count + 1.0).astype(np.float32)


def encode(history: np.ndarray, calendar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network input [N, input_size] and scale [N] from history [N, L] and calendar [N, H, K]."""
    scale = history_scale(history)
    observed = np.isfinite(history)
    normalised = np.where(observed, history, 0.0) / scale[:, None]
    x = np.concatenate(
        [
            normalised.astype(np.float32),
            observed.astype(np.float32),
            calendar.reshape(len(calendar), -1).astype(np.float32),
            (np.log1p(scale) / 10.0)[:, None].astype(np.float32),
        ],
        axis=1,
    )
    return x, scale


def input_size(input_window: int, horizon: int, n_calendar: int) -> int:
    return 2 * input_window + horizon * n_calendar + 1

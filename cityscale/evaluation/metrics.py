"""Forecast accuracy metrics, NaN-aware (missing actuals are not scored)."""

from __future__ import annotations

import numpy as np


def mase_scale(values: np.ndarray, positions: np.ndarray, season: int = 24) -> np.ndarray:
    """Mean |y_t - y_(t-season)| over all history before each position, for every panel row.

    Returns [n_rows, len(positions)]; NaN where the history holds no such pair.
    """
    diffs = np.abs(values[:, season:] - values[:, :-season])
    observed = np.isfinite(diffs)
    csum = np.concatenate([np.zeros((len(values), 1)), np.cumsum(np.where(observed, diffs, 0.0), axis=1)], axis=1)
    ccnt = np.concatenate([np.zeros((len(values), 1)), np.cumsum(observed, axis=1)], axis=1)
    # diffs[:, j] is the pair ending at time j + season; the history before p covers j < p - season.
    upto = np.clip(positions - season, 0, diffs.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return csum[:, upto] / ccnt[:, upto]


def pinball(pred: np.ndarray, actual: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Pinball loss per cell and quantile: pred [..., Q], actual [...]."""
    err = actual[..., None] - pred
    return np.maximum(quantiles * err, (quantiles - 1) * err)


def summarise(
    point: np.ndarray,
    actual: np.ndarray,
    scale: np.ndarray,
    quantile_pred: np.ndarray | None = None,
    quantiles: np.ndarray | None = None,
) -> dict[str, float]:
    """Overall metrics over scored cells. point/actual [P, H] (NaN actual = unscored), scale [P]."""
    scored = np.isfinite(actual) & np.isfinite(point)
    abs_err = np.where(scored, np.abs(point - actual), np.nan)
    n_scored = scored.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pair_mae = np.where(n_scored > 0, np.where(scored, abs_err, 0.0).sum(axis=1) / n_scored, np.nan)
    valid_pairs = np.isfinite(pair_mae) & np.isfinite(scale) & (scale > 0)
    out = {
        "mae": float(np.nanmean(abs_err)),
        "wape": float(np.nansum(abs_err) / np.nansum(np.where(scored, np.abs(actual), np.nan))),
        "mase": float(np.mean(pair_mae[valid_pairs] / scale[valid_pairs])),
        "n_pairs": int(np.isfinite(pair_mae).sum()),
        "n_hours": int(scored.sum()),
    }
    if quantile_pred is not None and quantiles is not None:
        loss = pinball(quantile_pred, actual, quantiles)[scored]
        out["pinball"] = float(loss.mean())
        # Weighted quantile loss (scale-free): 2 * sum(pinball) / sum(|y|), averaged over quantiles.
        out["wql"] = float(2 * loss.sum(axis=0).mean() / np.abs(actual[scored]).sum())
        lo, hi = quantile_pred[..., 0], quantile_pred[..., -1]
        inside = (actual >= lo) & (actual <= hi)
        out["coverage"] = float(inside[scored].mean())
    return out

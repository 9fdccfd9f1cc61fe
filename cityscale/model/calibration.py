"""Calibration of the ensemble on the latest weeks its members did not train on: member weights and band.

Why: the members' quality differs by period and their average is not always the best mix; and quantile losses
give bands whose coverage drifts with the period (82-85 % for a nominal 80 % on unseen months). After training,
each member forecasts the validation examples (the latest ``validation_days`` of origins, held out from both).

1. **Weights**: the mix of the members' quantiles (a convex combination, so the quantiles stay ordered) whose
   median has the smallest absolute error there: WAPE is what the forecast is judged by.
2. **Band** (split conformal): per city, the outer quantiles of that mix are shifted by the empirical quantile
   of their residuals, so that the held-out share below P10 is 10 % and above P90 is 10 %. Shifts are in the
   scaled units the members predict in, so a busy and a quiet sensor move by the same fraction of their level.
   The median is never moved; a city with too few validation residuals uses the pooled shift.

Stored as ``calibration.json`` beside the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

CALIBRATION_FILE = "calibration.json"
MIN_RESIDUALS = 2_000  # per city; fewer: the pooled shift
POOLED = "*"
WEIGHT_GRID = np.linspace(0.0, 1.0, 21)  # the first member's weight, in steps of 0.05


class EnsembleCalibration(BaseModel):
    """Member weights and additive shifts of each outer quantile (scaled units), per city and pooled (``"*"``)."""

    members: list[str]
    weights: list[float]
    quantiles: list[float]
    shifts: dict[str, list[float]]  # city -> one shift per quantile (0 for the median)
    n_residuals: dict[str, int]

    def combine(self, member_quantiles: list[np.ndarray]) -> np.ndarray:
        """The weighted mix ``[N, H, Q]`` of the members' quantiles (given in ``members`` order)."""
        return sum(w * q for w, q in zip(self.weights, member_quantiles, strict=True))

    def apply(self, scaled: np.ndarray, cities: np.ndarray) -> np.ndarray:
        """Quantiles ``[N, H, Q]`` (scaled units) shifted per city, kept ordered around the unmoved median."""
        shift = np.array([self.shifts.get(str(c), self.shifts[POOLED]) for c in cities], dtype=scaled.dtype)
        out = scaled + shift[:, None, :]
        median = self.quantiles.index(0.5)
        for i in range(median - 1, -1, -1):  # a lower quantile never rises above the one after it
            out[..., i] = np.minimum(out[..., i], out[..., i + 1])
        for i in range(median + 1, len(self.quantiles)):
            out[..., i] = np.maximum(out[..., i], out[..., i - 1])
        return out

    def save(self, directory: str | Path) -> None:
        Path(directory, CALIBRATION_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> EnsembleCalibration | None:
        path = Path(directory, CALIBRATION_FILE)
        return cls.model_validate_json(path.read_text()) if path.exists() else None


def _weights(
    member_quantiles: list[np.ndarray], target_scaled: np.ndarray, scale: np.ndarray, median: int
) -> list[float]:
    """Weights whose mixed median has the smallest absolute error in counts (the WAPE numerator)."""
    if len(member_quantiles) == 1:
        return [1.0]
    if len(member_quantiles) != 2:  # Settings.model_members names two kinds of member
        raise ValueError(f"the ensemble mixes one or two members, not {len(member_quantiles)}")
    first, second = (q[..., median] * scale[:, None] for q in member_quantiles)
    target = target_scaled * scale[:, None]
    seen = np.isfinite(target)
    errors = [np.abs(w * first + (1 - w) * second - target)[seen].sum() for w in WEIGHT_GRID]
    best = float(WEIGHT_GRID[int(np.argmin(errors))])
    return [best, 1.0 - best]


def fit_ensemble_calibration(
    members: list[str],
    member_quantiles: list[np.ndarray],
    target_scaled: np.ndarray,
    scale: np.ndarray,
    cities: np.ndarray,
    quantiles: list[float],
) -> EnsembleCalibration:
    """Weights, then shifts that give each outer quantile its nominal share of held-out targets below it.

    ``member_quantiles`` are each member's quantiles ``[N, H, Q]`` on the validation examples, ``target_scaled``
    their targets ``[N, H]`` (NaN missing), both divided by each example's ``scale`` ``[N]``.
    """
    weights = _weights(member_quantiles, target_scaled, scale, quantiles.index(0.5))
    mixed = sum(w * q for w, q in zip(weights, member_quantiles, strict=True))
    residual = target_scaled[..., None] - mixed  # [N, H, Q]
    shifts: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    groups = {POOLED: np.ones(len(cities), dtype=bool)} | {str(c): cities == c for c in np.unique(cities)}
    for name, sel in groups.items():
        r = residual[sel].reshape(-1, len(quantiles))
        r = r[np.isfinite(r).all(axis=1)]
        counts[name] = len(r)
        if name != POOLED and len(r) < MIN_RESIDUALS:
            continue
        if not len(r):
            shifts[name] = [0.0] * len(quantiles)
            continue
        shifts[name] = [0.0 if q == 0.5 else float(np.quantile(r[:, i], q)) for i, q in enumerate(quantiles)]
    return EnsembleCalibration(
        members=list(members), weights=weights, quantiles=list(quantiles), shifts=shifts, n_residuals=counts
    )

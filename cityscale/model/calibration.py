"""Conformal calibration of the forecast band (P10/P90) on the latest weeks the members did not train on.

Why: quantile losses give bands whose coverage drifts with the period (82-85 % for a nominal 80 % on unseen
months). After training, the ensemble forecasts the validation examples (the latest ``validation_days`` of
origins, held out from both members); per city, the outer quantiles are shifted by the empirical quantile of
their residuals there, so that the held-out share below P10 is 10 % and above P90 is 10 % (split conformal,
one shift per quantile, in the scaled units both members predict in, so a busy and a quiet sensor move by the
same fraction of their level). The median is never moved. Stored as ``calibration.json`` beside the weights;
a city with too few validation residuals uses the pooled shift.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

CALIBRATION_FILE = "calibration.json"
MIN_RESIDUALS = 2_000  # per city; fewer: the pooled shift
POOLED = "*"


class BandCalibration(BaseModel):
    """Additive shifts of each outer quantile (scaled units), per city and pooled (``"*"``)."""

    quantiles: list[float]
    shifts: dict[str, list[float]]  # city -> one shift per quantile (0 for the median)
    n_residuals: dict[str, int]

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
    def load(cls, directory: str | Path) -> BandCalibration | None:
        path = Path(directory, CALIBRATION_FILE)
        return cls.model_validate_json(path.read_text()) if path.exists() else None


def fit_band_calibration(
    scaled: np.ndarray, target_scaled: np.ndarray, cities: np.ndarray, quantiles: list[float]
) -> BandCalibration:
    """Shifts that give each outer quantile its nominal share of held-out targets below it.

    ``scaled`` are the ensemble's quantiles ``[N, H, Q]`` on validation examples, ``target_scaled`` their
    targets ``[N, H]`` (NaN missing), both divided by each example's scale.
    """
    residual = target_scaled[..., None] - scaled  # [N, H, Q]
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
    return BandCalibration(quantiles=list(quantiles), shifts=shifts, n_residuals=counts)

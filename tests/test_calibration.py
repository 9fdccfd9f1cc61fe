"""Ensemble calibration: the member weights and the conformal band are fit on held-out examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cityscale.model.calibration import POOLED, EnsembleCalibration, fit_ensemble_calibration
from cityscale.model.examples import validation_mask

QUANTILES = [0.1, 0.5, 0.9]


def _members(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Two members whose medians miss the truth by different amounts, with bands too narrow for it."""
    truth = rng.uniform(0.5, 2.0, (n, 24))
    target = truth + rng.normal(0.0, 0.3, truth.shape)
    good = truth + rng.normal(0.0, 0.05, truth.shape)  # the better member ...
    poor = truth + rng.normal(0.0, 0.4, truth.shape)  # ... and a noisy one
    members = [np.stack([m - 0.1, m, m + 0.1], axis=-1) for m in (good, poor)]
    cities = np.where(np.arange(n) % 3 == 0, "auckland", "melbourne")
    return members, target, np.full(n, 10.0), cities


def test_weights_favour_the_better_member_and_the_band_covers_80_percent(tmp_path: Path) -> None:
    members, target, scale, cities = _members(np.random.default_rng(0), 3000)
    fit = fit_ensemble_calibration(["mlp", "lightgbm"], members, target, scale, cities, QUANTILES)
    assert fit.weights[0] >= 0.8 and sum(fit.weights) == pytest.approx(1.0)
    mixed = fit.combine(members)
    for city in ("melbourne", "auckland"):
        sel = cities == city
        band = fit.apply(mixed[sel], cities[sel])
        y = target[sel]
        assert np.mean(y < band[..., 0]) == pytest.approx(0.1, abs=0.01)
        assert np.mean(y > band[..., 2]) == pytest.approx(0.1, abs=0.01)
        np.testing.assert_array_equal(band[..., 1], mixed[sel][..., 1])  # the median never moves
    fit.save(tmp_path)
    assert EnsembleCalibration.load(tmp_path) == fit


def test_a_city_with_few_residuals_uses_the_pooled_shift_and_quantiles_stay_ordered() -> None:
    members, target, scale, _ = _members(np.random.default_rng(1), 400)
    cities = np.array(["melbourne"] * 395 + ["auckland"] * 5)
    fit = fit_ensemble_calibration(["mlp", "lightgbm"], members, target, scale, cities, QUANTILES)
    assert "auckland" not in fit.shifts and fit.n_residuals["auckland"] == 5 * 24
    unseen = fit.apply(fit.combine(members)[:2], np.array(["auckland", "tokyo"]))
    pooled = fit.apply(fit.combine(members)[:2], np.array([POOLED, POOLED]))
    np.testing.assert_array_equal(unseen, pooled)
    # A huge lower shift may not lift P10 above the median.
    fit.shifts[POOLED] = [5.0, 0.0, -5.0]
    squeezed = fit.apply(fit.combine(members), np.array([POOLED] * 400))
    assert (np.diff(squeezed, axis=-1) >= 0).all()


def test_a_single_member_takes_all_the_weight_and_three_are_refused() -> None:
    members, target, scale, cities = _members(np.random.default_rng(2), 300)
    alone = fit_ensemble_calibration(["mlp"], members[:1], target, scale, cities, QUANTILES)
    assert alone.weights == [1.0]
    with pytest.raises(ValueError, match="one or two members"):
        fit_ensemble_calibration(["a", "b", "c"], [*members, members[0]], target, scale, cities, QUANTILES)


def test_validation_holds_out_the_latest_days_or_the_latest_tenth_of_a_short_history() -> None:
    origins = np.arange("2022-01-01", "2022-07-01", np.timedelta64(6, "h"), dtype="datetime64[ns]")
    held = validation_mask(origins, days=56)
    assert origins[held].min() > origins.max() - np.timedelta64(56, "D")
    assert held.sum() == 56 * 4 and not held[:-224].any()
    # Four weeks of origins and a 56-day window: every example would be held out, so the latest tenth is.
    short = origins[-112:]
    held = validation_mask(short, days=56)
    assert 0 < held.sum() < len(short) and held.sum() == pytest.approx(len(short) / 10, abs=1)
    assert held[-held.sum() :].all()

"""The model's two members (MLP + LightGBM quantile boosters): storage, averaging, leakage, old artifacts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cityscale import raw_zone
from cityscale.calendar import CALENDAR_FEATURES, calendar_features
from cityscale.config import Settings
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model import boosted
from cityscale.model.calibration import CALIBRATION_FILE
from cityscale.model.contract import CONTRACT_FILE
from cityscale.panel import Panel

START = pd.Timestamp("2022-10-10 00:00")


@pytest.fixture(scope="module")
def panel(trained_workdir: Path) -> Panel:
    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


WINDOW = Settings().input_window


def _inputs(panel: Panel, start: pd.Timestamp = START) -> tuple[np.ndarray, list[pd.Timestamp], list[str]]:
    rows = np.arange(len(panel.sensor_ids))
    pos = np.full(len(rows), panel.position(start))
    return panel.window(rows, pos - WINDOW, WINDOW), [start] * len(rows), list(panel.cities)


def test_the_default_model_stores_both_members(trained_workdir: Path) -> None:
    model = trained_workdir / "model"
    contract = json.loads((model / CONTRACT_FILE).read_text())
    assert contract["members"] == ["mlp", "lightgbm"]
    assert contract["architecture"] == "quantile-mlp+lightgbm-quantile"
    assert sorted(p.name for p in model.glob(boosted.BOOSTER_GLOB)) == [
        "booster_q10.txt",
        "booster_q50.txt",
        "booster_q90.txt",
    ]


def test_forecast_mixes_the_members_with_their_fitted_weights(trained_workdir: Path, panel: Panel) -> None:
    model = trained_workdir / "model"
    history, starts, cities = _inputs(panel)
    ensemble = Forecaster.load(model)
    calibration = ensemble.calibration  # fit on the held-out validation weeks at training time
    assert calibration is not None and calibration.members == ["mlp", "lightgbm"]
    assert sum(calibration.weights) == pytest.approx(1.0) and min(calibration.weights) >= 0
    calibrated = ensemble.predict(history, starts, cities)
    ensemble.calibration = None  # without it: the plain mean of the members' quantiles
    mean = ensemble.predict(history, starts, cities)
    mlp = Forecaster.load(model, members=["mlp"]).predict(history, starts, cities)
    gbm = Forecaster.load(model, members=["lightgbm"]).predict(history, starts, cities)
    assert not np.allclose(mlp, gbm, rtol=0.01)  # two different learners, both used
    # Where neither member was clipped at 0, scaling commutes with the mix.
    unclipped = ((mlp > 0) & (gbm > 0)).all(axis=-1)
    assert unclipped.mean() > 0.5
    np.testing.assert_allclose(mean[unclipped], ((mlp + gbm) / 2)[unclipped], rtol=1e-5, atol=1e-3)
    median = ensemble.contract.quantiles.index(0.5)
    w_mlp, w_gbm = calibration.weights
    mixed = (w_mlp * mlp + w_gbm * gbm)[..., median]  # the band's shifts never move the median
    np.testing.assert_allclose(calibrated[..., median][unclipped], mixed[unclipped], rtol=1e-5, atol=1e-3)
    assert not np.allclose(calibrated[..., [0, 2]], mean[..., [0, 2]])  # the band was shifted
    for q in (mean, calibrated):
        assert (q >= 0).all() and (np.diff(q, axis=-1) >= 0).all()


def test_the_boosters_ignore_everything_at_or_after_the_origin(trained_workdir: Path, panel: Panel) -> None:
    gbm = Forecaster.load(trained_workdir / "model", members=["lightgbm"])
    history, starts, cities = _inputs(panel)
    clean = gbm.predict(history, starts, cities)
    corrupted = Panel(panel.values.copy(), panel.index, panel.sensor_ids, panel.cities)
    corrupted.values[:, panel.position(START) :] = 1e6
    np.testing.assert_array_equal(clean, gbm.predict(_inputs(corrupted)[0], starts, cities))
    corrupted.values[:, panel.position(START) - 24 : panel.position(START)] *= 3  # yesterday does matter
    assert not np.allclose(clean, gbm.predict(_inputs(corrupted)[0], starts, cities))


def test_an_artifact_from_before_the_boosters_loads_as_the_mlp_alone(trained_workdir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-model"
    shutil.copytree(trained_workdir / "model", old)
    for booster in old.glob(boosted.BOOSTER_GLOB):
        booster.unlink()
    (old / CALIBRATION_FILE).unlink()  # calibration came with the boosters
    contract = json.loads((old / CONTRACT_FILE).read_text())
    del contract["members"]
    contract["architecture"] = "quantile-mlp"
    (old / CONTRACT_FILE).write_text(json.dumps(contract))

    loaded = Forecaster.load(old)
    assert loaded.contract.members == ["mlp"] and loaded.boosters is None
    panel_like = np.random.default_rng(0).uniform(0, 500, (3, WINDOW)).astype(np.float32)
    starts = [START] * 3
    np.testing.assert_array_equal(
        loaded.predict(panel_like, starts, ["melbourne"] * 3),
        Forecaster.load(trained_workdir / "model", members=["mlp"]).predict(panel_like, starts, ["melbourne"] * 3),
    )
    with pytest.raises(ValueError, match="cannot use"):
        Forecaster.load(old, members=["lightgbm"])


def test_settings_keep_the_mlp_as_a_member(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().model_members == ("mlp", "lightgbm")
    monkeypatch.setenv("CITYSCALE_MODEL_MEMBERS", '["mlp"]')
    assert Settings().model_members == ("mlp",)
    for bad in (("lightgbm",), ("mlp", "mlp"), ("mlp", "xgboost")):
        with pytest.raises(ValidationError):
            Settings(model_members=bad)


def test_booster_features_by_hand() -> None:
    history = np.arange(1, 673, dtype=np.float32)[None, :]  # hour i of the four-week window holds i + 1
    history[0, 600] = np.nan
    stamps = pd.date_range("2022-10-10 00:00", periods=24, freq="h")  # a Monday
    calendar = calendar_features(stamps, "melbourne")[None]
    rows, scale = boosted.features(history, calendar, CALENDAR_FEATURES)
    recent = history[0, -168:]
    assert scale[0] == pytest.approx(recent[np.isfinite(recent)].mean() + 1)  # the level is the latest week's
    x = history[0] / scale[0]
    assert rows.shape[0] == 24
    step = 5
    lag24, w1, w2, w3, w4, mean2w, mean4w, median4w, hod7, hod28, k, hour, dow = rows[step, :13]
    assert lag24 == pytest.approx(x[648 + step])
    assert [w1, w2, w3, w4] == pytest.approx([x[672 - 168 * w + step] for w in (1, 2, 3, 4)])
    assert mean2w == pytest.approx((w1 + w2) / 2) and mean4w == pytest.approx((w1 + w2 + w3 + w4) / 4)
    assert median4w == pytest.approx(np.median([w1, w2, w3, w4]))
    assert hod7 == pytest.approx(np.mean([x[672 - 24 * d + step] for d in range(1, 8)]))
    day25 = [x[24 * d + step] for d in range(28) if np.isfinite(x[24 * d + step])]  # hour 600 is missing
    assert hod28 == pytest.approx(np.mean(day25))
    assert (k, hour, dow) == (step, 5, 0)
    assert (rows[step, 13 : 13 + 6] == 0).all()  # no holiday, lockdown, holiday eve or after, bridge, DST change
    per_example = rows[step, 19:]
    assert per_example[:6] == pytest.approx(x[-6:])
    assert per_example[6 + 27] == pytest.approx(x[-24:].mean())  # the last day's mean
    assert per_example[-3] == pytest.approx(671 / 672)  # observed share
    assert per_example[-2] == 0  # hours since the last count
    assert per_example[-1] == pytest.approx(np.log1p(scale[0]))
    with pytest.raises(ValueError, match="input_window >= 168"):
        boosted.features(history[:, -100:], calendar, CALENDAR_FEATURES)


def test_the_weekly_median_is_numpys_nanmedian() -> None:
    """Every count of observed weeks (0 to 4, odd and even) gives np.nanmedian's value; none observed gives NaN."""
    rng = np.random.default_rng(5)
    weeks = rng.gamma(2.0, 1.0, size=(4, 300, 24)).astype(np.float32)
    weeks[rng.random(weeks.shape) < 0.35] = np.nan
    weeks[:, :5] = np.nan  # whole columns unobserved
    observed = np.isfinite(weeks).sum(0)
    assert set(np.unique(observed)) == {0, 1, 2, 3, 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the all-NaN columns
        expected = np.nanmedian(weeks, axis=0)
    np.testing.assert_array_equal(boosted._nanmedian(weeks), expected)


def _synthetic_examples(n: int, unknown_hours: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    history = rng.gamma(2.0, 50.0, size=(n, 672)).astype(np.float32)
    stamps = pd.date_range("2022-10-10 00:00", periods=24, freq="h")
    calendar = np.repeat(calendar_features(stamps, "melbourne")[None], n, axis=0)
    target = rng.gamma(2.0, 50.0, size=(n, 24)).astype(np.float32)
    target[0, :unknown_hours] = np.nan  # unknown hours give no row
    return history, calendar, target


def test_a_lower_draw_rank_is_a_random_subset_of_each_examples_steps() -> None:
    history, calendar, target = _synthetic_examples(40)
    x, y, w, rank = boosted._rows(history, calendar, target, CALENDAR_FEATURES, 8, seed=0)
    assert len(x) == len(y) == len(w) == len(rank) < 40 * 8  # the first example's unknown hours give no row
    assert np.isfinite(y).all()
    assert set(np.bincount(rank, minlength=8)) <= {39, 40}  # each rank once per example, less a dropped hour
    last = x[-8:, 10]  # the last example's rows; column 10 is the horizon step
    assert len(set(last)) == 8 and rank[-8:].tolist() == list(range(8))
    first_three = [sorted(x[i : i + 8, 10][rank[i : i + 8] < 3]) for i in range(len(x) - 80, len(x), 8)]
    assert all(len(steps) == 3 for steps in first_three)
    assert len({tuple(steps) for steps in first_three}) > 1  # drawn per example, not the same hours for all


def test_the_band_boosters_train_on_fewer_steps_than_the_median(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightgbm as lgb

    rows_per_quantile: dict[float, int] = {}
    validation_sets: list[lgb.Dataset] = []  # the objects, kept alive: ids of freed ones could repeat
    real_train = lgb.train

    def recording_train(params: dict, train_set: lgb.Dataset, **kwargs: object) -> lgb.Booster:
        rows_per_quantile[params["alpha"]] = train_set.construct().num_data()
        validation_sets.extend(kwargs["valid_sets"])
        return real_train(params, train_set, **kwargs)

    monkeypatch.setattr(lgb, "train", recording_train)
    history, calendar, target = _synthetic_examples(60, unknown_hours=0)
    validation = np.zeros(60, dtype=bool)
    validation[-10:] = True
    common = dict(
        validation=validation, rounds=5, early_stopping_rounds=2, num_leaves=7, learning_rate=0.1,
        volume_weighted=True, seed=0, max_bin=63, bagging_fraction=1.0, feature_fraction=1.0, steps_per_example=8,
    )  # fmt: skip
    kept = boosted.train_boosters(
        history, calendar, target, CALENDAR_FEATURES, [0.1, 0.5, 0.9], tmp_path, band_steps_per_example=3, **common
    )
    assert sorted(kept) == [0.1, 0.5, 0.9]
    assert rows_per_quantile[0.5] == 50 * 8
    assert rows_per_quantile[0.1] == rows_per_quantile[0.9] == 50 * 3
    # the validation rows are binned once, for all three boosters
    assert len(validation_sets) == 3 and len({id(v) for v in validation_sets}) == 1
    for q in kept:
        assert lgb.Booster(model_file=str(tmp_path / boosted.booster_file(q))).num_trees() == kept[q]

"""Training sets through Feast: point-in-time correctness on real counts (bundled Melbourne sample)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cityscale import steps
from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.retrieval import build_training_set
from cityscale.features.training_set import TrainingSetError, load_extras, validate_training_set
from cityscale.model.examples import Examples, cut_examples, origin_grid
from cityscale.model.inputs import has_enough_history
from cityscale.panel import Panel


@pytest.fixture(scope="module")
def raw_2022(sample_rows: pd.DataFrame) -> pd.DataFrame:
    return sample_rows[sample_rows["timestamp_local"] >= "2022-01-01"].reset_index(drop=True)


def test_feast_training_set_equals_direct_cut_examples(raw_2022: pd.DataFrame, tmp_path) -> None:
    """The Feast path (DuckDB windows + get_historical_features) gives the model's exact arrays."""
    settings = Settings(workdir=tmp_path)
    panel = Panel.from_raw(raw_2022)
    origins = origin_grid(panel.index[0], pd.Timestamp("2022-10-01"), 6)
    direct = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    feast = build_training_set(raw_2022, origins, settings, features_dir=tmp_path / "features").examples
    assert len(direct) > 10_000
    assert len(feast) == len(direct)
    for field in Examples.__dataclass_fields__:
        a, b = getattr(direct, field), getattr(feast, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), field
        else:
            assert (a == b).all(), field
    # The holiday and lockdown flags came through the feature store, and they are not all zero.
    assert (tmp_path / "features" / "feast" / "registry.db").exists()
    assert feast.calendar[..., 9].sum() > 0


def _brute_force(values: np.ndarray, t: int) -> dict[str, float]:
    """Independent pandas/numpy computation of the spec's features for one sensor at grid position t."""
    before = pd.Series(values[max(t - 672, 0) : t], dtype="float64")
    out: dict[str, float] = {}
    for label, hours in (("1h", 1), ("24h", 24), ("7d", 168), ("28d", 672)):
        win = before.iloc[-hours:].dropna()
        out[f"pedestrians_mean_{label}"] = win.mean() if len(win) else np.nan
        out[f"pedestrians_count_{label}"] = float(len(win))
        out[f"pedestrians_stddev_{label}"] = win.std(ddof=1) if len(win) > 1 else np.nan
        out[f"pedestrians_sum_{label}"] = win.sum()
    return out


@pytest.mark.parametrize("seed", [0])
def test_features_match_brute_force_and_never_see_the_future(sample_rows: pd.DataFrame, seed: int) -> None:
    """Aggregates, windows and same-hour-of-week profiles equal an independent pandas computation at random
    (sensor, origin) rows of real data, and rewriting every count at or after each origin changes nothing."""
    raw = sample_rows[(sample_rows["timestamp_local"] >= "2021-06-01")].reset_index(drop=True)
    panel = Panel.from_raw(raw)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(panel.sensor_ids), 60)
    positions = rng.integers(700, len(panel.index) - 30, 60)
    sensors = [panel.sensor_ids[r] for r in rows]
    origins = [panel.index[p] for p in positions]

    computer = FeatureComputer(raw)
    spine = computer.spine_for(sensors, origins)
    tables = computer.compute(spine, views=["sensor_window", "sensor_aggregates"], horizon=24)
    agg = tables.views["sensor_aggregates"].set_index(["sensor_id", "event_timestamp"])
    win = tables.views["sensor_window"].set_index(["sensor_id", "event_timestamp"])
    checked = 0
    for row in tables.spine.itertuples():
        r, t = panel.row(row.sensor_id), panel.position(row.origin)
        values = panel.values[r]
        expected = _brute_force(values, t)
        got = agg.loc[(row.sensor_id, row.event_timestamp)]
        for name in agg.columns:
            assert np.isclose(got[name], expected[name], rtol=1e-5, equal_nan=True), (row, name)
            checked += 1
        history = np.where(np.isnan(values[t - 672 : t]), -1, values[t - 672 : t])
        assert np.array_equal(win.loc[(row.sensor_id, row.event_timestamp), "history_672h"], history)
        profile = np.array(
            [
                np.nanmean(v) if np.isfinite(v := values[[t + h - 168 * k for k in range(1, 5)]]).any() else -1
                for h in range(24)
            ],
            dtype=np.float32,
        )
        assert np.allclose(win.loc[(row.sensor_id, row.event_timestamp), "same_how_mean_4w"], profile, rtol=1e-6)
        np.testing.assert_array_equal(tables.labels[row.Index], values[t : t + 24])
        checked += 168 + 24
    assert checked > 10_000

    # Leakage: replace every count at or after each sensor's latest sampled origin with garbage (that is the
    # future of all its sampled origins); no feature may move.
    latest = pd.DataFrame({"sensor_id": sensors, "origin": origins}).groupby("sensor_id")["origin"].max()
    future = raw["timestamp_local"] >= raw["sensor_id"].map(latest).fillna(pd.Timestamp.max)
    assert future.sum() > 1000
    raw.loc[future, "count"] = 999_999
    tampered = FeatureComputer(raw).compute(spine, views=["sensor_window", "sensor_aggregates"])
    for view in ("sensor_window", "sensor_aggregates"):
        pd.testing.assert_frame_equal(tampered.views[view], tables.views[view])


def test_new_sensors_short_histories_and_missing_hours(sample_rows: pd.DataFrame, tmp_path) -> None:
    """Sensors installed in 2021-2022 get examples only once half their window is observed; missing hours
    stay NaN in the history and -1 in the store; rows before a sensor's first count are never built."""
    settings = Settings(workdir=tmp_path)
    raw = sample_rows[sample_rows["timestamp_local"] >= "2021-01-01"].reset_index(drop=True)
    first = raw.groupby("sensor_id")["timestamp_local"].min()
    newest = first.idxmax()
    assert first[newest] > pd.Timestamp("2021-06-01")  # a sensor installed during the window
    origins = pd.date_range("2021-01-02", "2022-10-01", freq="D")
    ts = build_training_set(raw, origins, settings, features_dir=tmp_path / "f").examples
    mine = ts.origins[ts.sensor_ids == newest]
    assert len(mine) > 0
    # At least half of the recent week before its first example is observed, none before its first count.
    assert pd.Timestamp(mine.min()) >= first[newest] + pd.Timedelta(hours=84)
    assert has_enough_history(ts.history, settings.min_history_fraction).all()
    assert np.isnan(ts.history).any()  # real gaps are carried as missing, not zero

    computer = FeatureComputer(raw)
    early = computer.spine_for([newest], [first[newest] - pd.Timedelta(days=3)])
    assert (
        computer.training_spine(pd.DatetimeIndex([first[newest] - pd.Timedelta(days=3)]))
        .query("sensor_id == @newest")
        .empty
    )
    window = computer.compute(early, views=["sensor_window"]).views["sensor_window"]
    assert (window["history_672h"].iloc[0] == -1).all()
    assert computer.spine_for(["no-such-sensor"], [pd.Timestamp("2022-01-01")]).empty


def test_build_features_step_writes_a_validated_dataset(raw_2022: pd.DataFrame, tmp_path) -> None:
    raw_path = tmp_path / "raw.parquet"
    raw_2022.to_parquet(raw_path)
    settings = Settings(workdir=tmp_path)
    out = tmp_path / "examples.npz"
    n = steps.build_features(str(raw_path), "2022-08-01", str(out), settings)["n_examples"]
    schema = validate_training_set(out, settings.input_window, settings.horizon)
    assert schema["backend"] == "feast" and schema["n_examples"] == n
    ex = Examples.load(out)
    assert len(ex) == n and ex.history.shape[1] == 672
    extras = load_extras(out)
    assert extras["feature__sensor_aggregates__pedestrians_mean_7d"].shape == (n,)
    assert extras["feature__sensor_window__same_how_mean_4w"].shape == (n, 24)
    with pytest.raises(TrainingSetError, match="history window"):
        validate_training_set(out, input_window=336)
    bad = tmp_path / "bad.npz"
    ex.save(bad)  # the old format without a schema
    with pytest.raises(TrainingSetError, match="__schema__"):
        validate_training_set(bad)

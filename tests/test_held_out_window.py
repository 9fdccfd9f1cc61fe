"""Scheduled runs judge the newest data: ``last:<span>`` held-out starts, and the schedules that use them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cityscale import raw_zone, steps
from cityscale.config import Settings
from cityscale.evaluation.backtest import held_out_start
from cityscale.model.examples import Examples

SCHEDULES = Path(__file__).resolve().parents[1] / "pipelines" / "schedules.yaml"


@pytest.mark.parametrize(
    "spec, end, expected",
    [
        ("2022-07-01", "2022-10-31 23:00", "2022-07-01"),
        ("last:28d", "2022-10-31 23:00", "2022-10-04"),  # the newest 28 full days
        ("last:4w", "2022-10-31 23:00", "2022-10-04"),
        ("last:7d", "2022-10-31 10:00", "2022-10-25"),  # a partial last day counts as a day
    ],
)
def test_held_out_start(spec: str, end: str, expected: str) -> None:
    assert held_out_start(spec, pd.Timestamp(end)) == pd.Timestamp(expected)


@pytest.mark.parametrize("spec", ["last:", "last:12h", "last:soon", "last:-3d"])
def test_a_bad_span_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="held-out start"):
        held_out_start(spec, pd.Timestamp("2022-10-31"))


def test_a_relative_start_moves_with_the_data(trained_workdir: Path, tmp_path: Path) -> None:
    """Two snapshots a week apart: the second run trains on a week more and holds out a week later."""
    raw = raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri)
    ends = []
    for cut in ("2022-09-01", "2022-09-08"):
        path = tmp_path / f"raw-{cut}.parquet"
        raw[raw["timestamp_local"] < pd.Timestamp(cut)].to_parquet(path)
        out = tmp_path / f"ex-{cut}.npz"
        steps.build_features(str(path), "last:14d", str(out), Settings(workdir=tmp_path))
        targets_end = pd.DatetimeIndex(Examples.load(out).origins).max() + pd.Timedelta(hours=24)
        assert targets_end <= pd.Timestamp(cut) - pd.Timedelta(days=14)
        ends.append(targets_end)
    assert ends[1] - ends[0] == pd.Timedelta(days=7)


def test_the_weekly_schedule_retrains_on_new_data_on_the_cluster() -> None:
    runs = {r["name"]: r for r in yaml.safe_load(SCHEDULES.read_text())["recurring_runs"]}
    weekly = runs["cityscale-training-weekly"]["parameters"]
    assert weekly["test_start"].startswith("last:")  # not a fixed date the data has long passed
    assert weekly["deploy_target"] == "kserve" and weekly["train_mode"] == "trainjob"
    monitoring = runs["cityscale-monitoring-daily"]["parameters"]
    assert monitoring["retrain_test_start"].startswith("last:") and monitoring["deploy_target"] == "kserve"

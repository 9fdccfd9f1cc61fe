"""The Melbourne reader and the quality step, on real exports."""

from __future__ import annotations

import pandas as pd
import pytest

from cityscale.ingest import load_snapshot
from cityscale.quality import DataQualityError, clean_and_check
from cityscale.sources.melbourne import parse_sensor_label, read_wide_csv
from tests.conftest import MELBOURNE_PCS, needs_shared_data


def test_parse_sensor_label_plain_and_combined() -> None:
    assert parse_sensor_label("Bourke Street Mall (North) | Bou292_T [1]") == ("Bou292_T", "Bourke Street Mall (North)")
    assert parse_sensor_label("Birrarung Marr | FedPed_T, FedCycle_T [7, 122]") == (
        "FedPed_T+FedCycle_T",
        "Birrarung Marr",
    )
    with pytest.raises(ValueError, match="Description"):
        parse_sensor_label("no separator here")


@needs_shared_data()
def test_wide_csv_2009_2013_masks_the_september_2010_daily_totals() -> None:
    long = read_wide_csv(MELBOURNE_PCS / "grouped_data_2009_2013.csv")
    assert set(long.columns) == {"city", "sensor_id", "sensor_name", "timestamp_local", "count"}
    sept = long[(long["timestamp_local"] >= "2010-09-01") & (long["timestamp_local"] < "2010-10-01")]
    assert (sept["timestamp_local"].dt.hour == 0).mean() > 0.9  # the artefact is really in the file
    assert sept["count"].max() > 10_000  # daily totals, not hourly counts

    clean, report = clean_and_check(long)
    assert report.daily_total_artefacts_masked >= 300
    assert report.hard_errors == []
    sept_clean = clean[(clean["timestamp_local"] >= "2010-09-01") & (clean["timestamp_local"] < "2010-10-01")]
    assert sept_clean.empty or sept_clean["count"].max() < 10_000
    assert clean["timestamp_utc"].dt.tz is not None
    assert not clean.duplicated(["city", "sensor_id", "timestamp_local"]).any()


def test_sample_has_dst_gap_hours_that_are_dropped(sample_rows: pd.DataFrame) -> None:
    # 2019-10-06 02:00 does not exist in Melbourne (clocks jump 02:00 -> 03:00), yet the export has it.
    assert (sample_rows["timestamp_local"] == pd.Timestamp("2019-10-06 02:00")).any()
    clean, report = clean_and_check(sample_rows)
    assert report.dst_nonexistent_hours_dropped > 0
    assert not (clean["timestamp_local"] == pd.Timestamp("2019-10-06 02:00")).any()
    # 2019-04-07 02:00 happens twice; the single column maps to daylight time (UTC+11).
    amb = clean[clean["timestamp_local"] == pd.Timestamp("2019-04-07 02:00")]
    assert (amb["timestamp_utc"] == pd.Timestamp("2019-04-06 15:00", tz="UTC")).all()
    assert (
        report.rows_out
        == len(clean)
        == len(sample_rows) - report.dst_nonexistent_hours_dropped - (report.daily_total_artefacts_masked)
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.assign(count=df["count"].where(df.index != 5, -3)), "negative"),
        (lambda df: pd.concat([df, df.iloc[:2]]), "duplicate"),
        (lambda df: df.assign(count=df["count"].where(df.index != 7, 5_000_000)), "above"),
    ],
)
def test_hard_errors_fail_the_run(sample_rows: pd.DataFrame, mutate, message: str) -> None:
    rows = mutate(sample_rows.head(500).reset_index(drop=True))
    _, report = clean_and_check(rows)
    with pytest.raises(DataQualityError, match=message):
        report.raise_for_errors()


def test_load_snapshot_rejects_unknown_inputs(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_snapshot(tmp_path / "missing.parquet")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported"):
        load_snapshot(tmp_path / "x.txt")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks columns"):
        load_snapshot(tmp_path / "bad.parquet")

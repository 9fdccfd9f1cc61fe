"""`cityscale run` picks a forecast start the chosen sensor can be served at."""

from __future__ import annotations

import pandas as pd
import pytest
import typer

from cityscale.cli import next_forecast
from cityscale.config import get_settings


@pytest.fixture(scope="module")
def melbourne() -> pd.DataFrame:
    return pd.read_parquet(get_settings().sample_data)


def _auckland_rows(end: str, hours: int = 48) -> pd.DataFrame:
    """A sensor of the other city whose data ends years later, as after `make train-full`."""
    times = pd.date_range(end=end, periods=hours, freq="h")
    return pd.DataFrame(
        {
            "city": "auckland",
            "sensor_id": "akl_queen_st",
            "sensor_name": "Queen St",
            "timestamp_local": times,
            "count": 100,
        }
    )


def test_default_sensor_is_the_longest_history_and_starts_after_its_own_last_hour(melbourne) -> None:
    raw = pd.concat([melbourne, _auckland_rows("2025-12-31 23:00")], ignore_index=True)
    sensor, start = next_forecast(raw)
    longest = melbourne["sensor_id"].value_counts().idxmax()
    assert sensor == longest
    assert start == melbourne.loc[melbourne["sensor_id"] == longest, "timestamp_local"].max() + pd.Timedelta(hours=1)
    assert start < pd.Timestamp("2023-01-01")  # not after the Auckland rows


def test_named_sensor_starts_after_its_own_last_hour(melbourne) -> None:
    raw = pd.concat([melbourne, _auckland_rows("2025-12-31 23:00")], ignore_index=True)
    assert next_forecast(raw, "akl_queen_st") == ("akl_queen_st", pd.Timestamp("2026-01-01 00:00"))


def test_unknown_sensor_is_a_clear_error(melbourne) -> None:
    with pytest.raises(typer.BadParameter, match="no rows in the raw zone"):
        next_forecast(melbourne, "nowhere")

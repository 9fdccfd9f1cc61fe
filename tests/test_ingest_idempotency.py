"""Idempotent, atomic raw-zone writes on file:// and on gs:// (gcp-storage-emulator on loopback).

The same tests run on both stores: the same window twice leaves the raw zone byte-identical, a
corrected value replaces the old one, and a real ingest subprocess killed mid-write leaves the
previous state readable and intact (or, if it was killed after its commit point, the complete new
state), after which a rerun completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cityscale import raw_zone, storage
from cityscale.ingestion.run import ingest_snapshot
from cityscale.schema import RAW_KEY
from tests.conftest import GCS_TEST_BUCKET as BUCKET


@pytest.fixture(params=["file", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/store"
    request.getfixturevalue("gcs_emulator")
    return f"gs://{BUCKET}/{tmp_path.name}/store"


def _files(store: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(store)
    fs.invalidate_cache()
    return {p: fs.cat_file(p) for p in sorted(fs.find(root)) if p.endswith(".parquet")}


def test_same_window_twice_leaves_the_raw_zone_identical(store: str, settings) -> None:
    first = ingest_snapshot(settings.sample_data, store, start="2022-09-20", end="2022-10-10", settings=settings)
    files = _files(store)
    assert first.partitions_written == 1 and len(files) == 1
    again = ingest_snapshot(settings.sample_data, store, start="2022-09-20", end="2022-10-10", settings=settings)
    assert again.partitions_written == 0
    assert _files(store) == files  # byte-identical: nothing rewritten
    raw = raw_zone.read(store)
    assert len(raw) == first.report.rows_out and not raw.duplicated(RAW_KEY).any()


def test_correction_replaces_and_overlapping_window_adds_no_duplicates(store: str, settings) -> None:
    first = ingest_snapshot(settings.sample_data, store, start="2021-12-25", end="2022-01-05", settings=settings)
    fix = first.rows.iloc[[3]].copy()
    fix["count"] = 31337
    raw_zone.upsert(store, fix, settings)
    ingest_snapshot(settings.sample_data, store, start="2022-01-01", end="2022-01-10", settings=settings)
    raw = raw_zone.read(store)
    assert not raw.duplicated(RAW_KEY).any()
    key = fix.iloc[0]
    hit = raw[(raw["sensor_id"] == key["sensor_id"]) & (raw["timestamp_local"] == key["timestamp_local"])]
    # the overlapping window re-ingested the original value only if the fixed hour lies inside it
    inside = key["timestamp_local"] >= pd.Timestamp("2022-01-01")
    assert hit["count"].tolist() == ([int(first.rows.iloc[3]["count"])] if inside else [31337])
    assert sorted(raw["timestamp_local"].dt.year.unique()) == [2021, 2022]


def test_uncommitted_staging_is_discarded_and_committed_is_rolled_forward(store: str, settings) -> None:
    ingest_snapshot(settings.sample_data, store, start="2022-10-01", end="2022-10-08", settings=settings)
    before = raw_zone.read(store)
    # A writer that died before its commit point: staged data, no journal.
    rows = before.head(5).assign(count=1)
    staged = storage.join(store, "raw", "_staging", "dead", "city=melbourne", "year=2022", "part.parquet")
    raw_zone._write_partition(staged, raw_zone.conform(rows))
    pd.testing.assert_frame_equal(raw_zone.read(store), before)
    assert raw_zone.recover(store) == {"rolled_forward": 0, "discarded": 1}
    # A writer that died after committing: readers already see the new state; recovery finishes it.
    new = before.assign(count=before["count"] + 1)
    staged = storage.join(store, "raw", "_staging", "late", "city=melbourne", "year=2022", "part.parquet")
    raw_zone._write_partition(staged, raw_zone.conform(new))
    storage.write_json(
        storage.join(store, "raw", "_staging", "late", "_COMMIT.json"),
        {"partitions": ["city=melbourne/year=2022/part.parquet"]},
    )
    pd.testing.assert_frame_equal(raw_zone.read(store), new)
    assert raw_zone.recover(store) == {"rolled_forward": 1, "discarded": 0}
    pd.testing.assert_frame_equal(raw_zone.read(store), new)
    assert not storage.exists(storage.join(store, "raw", "_staging", "late"))


def test_killed_mid_write_keeps_previous_state_and_rerun_completes(store: str, settings, tmp_path: Path) -> None:
    ingest_snapshot(settings.sample_data, store, start="2022-10-01", end="2022-11-01", settings=settings)
    before, before_files = raw_zone.read(store), _files(store)
    script = (
        "import sys; from cityscale.config import Settings; from cityscale.ingestion.run import ingest_snapshot\n"
        "ingest_snapshot(sys.argv[1], sys.argv[2], settings=Settings())"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(settings.sample_data), store], env=os.environ.copy())
    fs, root = storage.filesystem(storage.join(store, "raw", "_staging"))
    committed = None
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            fs.invalidate_cache()
            staged = [p for p in (fs.find(root) if fs.exists(root) else []) if p.endswith(".parquet")]
            if staged:
                proc.send_signal(signal.SIGKILL)  # a real kill, mid-write
                break
            time.sleep(0.005)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    fs.invalidate_cache()
    committed = any(p.endswith("_COMMIT.json") for p in (fs.find(root) if fs.exists(root) else []))
    after_kill = raw_zone.read(store)
    expected = ingest_snapshot(settings.sample_data, f"file://{tmp_path}/reference", settings=settings).rows
    if committed:  # killed after the commit point: readers see the whole new state
        assert len(after_kill) == len(expected)
    else:  # killed before it: the previous state, byte for byte
        pd.testing.assert_frame_equal(after_kill, before)
        assert {k: v for k, v in _files(store).items() if "/_staging/" not in k} == before_files

    rerun = ingest_snapshot(settings.sample_data, store, settings=settings)
    final = raw_zone.read(store)
    assert len(final) == len(expected) == len(rerun.rows)
    assert not final.duplicated(RAW_KEY).any()
    assert not any("/_staging/" in p for p in _files(store))

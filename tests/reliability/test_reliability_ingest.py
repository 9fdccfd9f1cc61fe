"""Ingestion under faults the other ingest tests do not cover: concurrent writers, a full disk, duplicated records.

(429/5xx, pages cut off mid-transfer, malformed pages and a process killed mid-write are covered by
tests/test_ingest_connectors.py and tests/test_ingest_idempotency.py.) Every test ends by comparing the raw zone
with a reference built by clean sequential runs: a rerun after a fault converges to the same rows.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.ingestion import state
from cityscale.ingestion.quality import DataQualityError
from cityscale.ingestion.run import ingest_embedded, ingest_snapshot
from cityscale.schema import RAW_KEY
from cityscale.sources import melbourne
from tests.conftest import MELBOURNE_2022_JANUARY, MELBOURNE_LOCATIONS
from tests.fixtures import melbourne_portal as replay

REPO = Path(__file__).resolve().parents[2]
SAMPLE = str(Settings().sample_data)
# Overlapping windows, all in the 2022 partition: concurrent writers would read-modify-write the same file.
WINDOWS = [("2022-01-01", "2022-03-01"), ("2022-02-15", "2022-05-01"), ("2022-04-20", "2022-08-01"),
           ("2022-07-25", "2022-11-01")]  # fmt: skip
INGEST = (
    "import sys; from cityscale.config import Settings; from cityscale.ingestion.run import ingest_snapshot\n"
    "ingest_snapshot(*sys.argv[1:3], *sys.argv[3:5], settings=Settings())"
)
HOLD = (
    "import sys, time; from cityscale import raw_zone\n"
    "with raw_zone.writer_lock(sys.argv[1], timeout_s=600.0, stale_s=3600.0):\n"
    "    print('held', flush=True); time.sleep(float(sys.argv[2]))"
)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(RAW_KEY, ignore_index=True)


def _reference(tmp_path: Path, windows: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    store = str(tmp_path / "reference")
    for start, end in windows:
        ingest_snapshot(SAMPLE, store, start=start, end=end, settings=Settings())
    return _sorted(raw_zone.read(store))


def _ingest_process(store: str, start: str, end: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", INGEST, SAMPLE, store, start, end], cwd=REPO, stderr=subprocess.PIPE, text=True
    )


# --- concurrent writers --------------------------------------------------------------------------------------
def test_writer_lock_excludes_a_second_writer_and_dies_with_its_holder(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, store, "60"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with pytest.raises(raw_zone.RawZoneLocked), raw_zone.writer_lock(store, timeout_s=1.0, stale_s=3600):
            pass
        assert time.monotonic() - began >= 1.0
        holder.kill()  # a writer killed while holding the lock: the kernel releases it, no stale lock remains
        holder.wait(timeout=10)
        with raw_zone.writer_lock(store, timeout_s=5.0, stale_s=3600):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_an_upsert_waits_for_the_lock_then_lands_everything(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, store, "3"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        result = ingest_snapshot(SAMPLE, store, start="2022-10-01", end="2022-11-01", settings=Settings())
        waited = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    assert waited >= 1.5, f"the upsert did not wait for the lock holder ({waited:.2f} s)"
    assert len(raw_zone.read(store)) == len(result.rows) > 0


def test_concurrent_ingest_processes_lose_nothing_and_converge(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    procs = [_ingest_process(store, start, end) for start, end in WINDOWS]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    landed = _sorted(raw_zone.read(store))
    assert not landed.duplicated(RAW_KEY).any()
    pd.testing.assert_frame_equal(landed, _reference(tmp_path, WINDOWS))
    assert not list(Path(store).glob("raw/_staging/*")), "a transaction was left in staging"


# --- a full disk -----------------------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs (room for one month of the sample, not for its four years); None where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_write_keeps_the_previous_state_and_rerun_converges(
    small_disk: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(small_disk or tmp_path / "store")
    ingest_snapshot(SAMPLE, store, start="2022-10-01", end="2022-11-01", settings=Settings())
    before = _sorted(raw_zone.read(store))
    if small_disk is None:  # not permitted to mount here: simulate ENOSPC at the third partition write
        calls = {"n": 0}
        real_write = raw_zone._write_partition

        def filling_write(uri: str, table) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            real_write(uri, table)

        monkeypatch.setattr(raw_zone, "_write_partition", filling_write)
    with pytest.raises(OSError) as caught:
        ingest_snapshot(SAMPLE, store, settings=Settings())  # four years: does not fit
    assert caught.value.errno == errno.ENOSPC
    pd.testing.assert_frame_equal(_sorted(raw_zone.read(store)), before)  # nothing partial is visible

    if small_disk is None:
        monkeypatch.undo()
    else:  # space freed: grow the filesystem in place, keeping its files
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    ingest_snapshot(SAMPLE, store, settings=Settings())
    expected = _reference(tmp_path, [("2022-10-01", "2022-11-01"), (None, None)])
    pd.testing.assert_frame_equal(_sorted(raw_zone.read(store)), expected)
    assert not list(Path(store).glob("raw/_staging/*")), "the failed run's staging was not cleaned up"


# --- duplicated records across pages --------------------------------------------------------------------------
def test_pages_with_duplicated_records_land_nothing_and_the_rerun_converges(tmp_path: Path) -> None:
    """The API serves some records twice (on two pages, as offset pagination does when rows shift).

    The quality step treats duplicate keys as a hard error: the run fails clearly, nothing lands, the cursor stays;
    the next (clean) sync lands exactly what a never-faulted sync lands.
    """
    long = melbourne.read_wide_csv(MELBOURNE_2022_JANUARY)
    days = long[long["timestamp_local"] < "2022-01-03"].reset_index(drop=True)
    records = replay.melbourne_records(days)
    duplicated = pd.concat([records, records.iloc[::7], records.iloc[95:105]], ignore_index=True)
    counts = "pedestrian-counting-system-monthly-counts-per-hour"
    portal = replay.ReplayPortal()
    portal.set_dataset(counts, duplicated)
    portal.set_dataset(
        "pedestrian-counting-system-sensor-locations",
        replay.melbourne_locations(MELBOURNE_LOCATIONS),
    )
    settings = Settings(workdir=tmp_path)
    store, clean_store = settings.resolved_store_uri, str(tmp_path / "clean")
    overrides = {"backoff_factor_seconds": 0.01, "max_retries": 3, "start_date": "2022-01-01T00:00:00",
                 "end_date": "2022-01-02T23:00:00"}  # fmt: skip
    with replay.serve(portal) as url:
        config = {"base_url": url, **overrides}
        with pytest.raises(DataQualityError, match="duplicate"):
            ingest_embedded("melbourne", store, settings=settings, config_overrides=config)
        assert raw_zone.read(store).empty and state.read_state(store, "melbourne") == {}
        portal.set_dataset(counts, records)  # the source fixed its pages
        rerun = ingest_embedded("melbourne", store, settings=settings, config_overrides=config)
        ingest_embedded("melbourne", clean_store, settings=settings, config_overrides=config)
    landed = _sorted(raw_zone.read(store))
    assert len(landed) == len(rerun.rows) > 0 and not landed.duplicated(RAW_KEY).any()
    pd.testing.assert_frame_equal(landed, _sorted(raw_zone.read(clean_store)))

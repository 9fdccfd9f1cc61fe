"""The raw zone: every city's hourly counts as Parquet, partitioned by city and year.

Layout (the raw counts contract): ``<store>/raw/city=<city>/year=<yyyy>/part.parquet``, read by
the feature platform with that glob, so the final files keep their names.

Writes are upserts keyed on (city, sensor_id, timestamp_local): re-ingesting the same hours adds no
duplicate, a corrected value replaces the old one, and a partition whose content would not change
is not rewritten (the same window twice leaves the files byte-identical).

An upsert that touches several partitions is one transaction, so a crash can never leave half a
batch visible:

1. every new partition is written under ``raw/_staging/<txn>/...`` (invisible to the glob);
2. the journal ``raw/_staging/<txn>/_COMMIT.json`` is written in one atomic write: the commit point;
3. each staged file is moved onto its final name (an atomic rename locally; on GCS a server-side
   copy, atomic per object), then the transaction folder is removed.

A crash before 2 leaves the previous state untouched (the next writer deletes the orphan staging);
a crash during 3 leaves a committed journal that the next writer rolls forward, and ``read`` already
prefers the staged files of a committed journal, so readers see the old or the new state, never a
mix. Readers may run at any time.

Writers (ingest runs, the realtime gateway) take the writer lock ``raw/_LOCK`` around recover + merge +
commit, so two concurrent upserts serialise instead of one losing the other's rows (both read-modify-write
the same partition) or discarding the other's uncommitted staging as an orphan:

- local filesystem: ``fcntl.flock`` on the lock file; the kernel releases it when the holder dies, so a
  killed writer never leaves a stale lock;
- ``gs://``: the lock object is created with ``if_generation_match=0`` (fails if it exists) and deleted
  with the generation it was created with; an object older than ``raw_zone_lock_stale_s`` belongs to a
  dead writer and is taken over (deleted with its generation as precondition, so two takers cannot both
  win). The GCS emulator used in tests does not enforce preconditions: only the real service does.
"""

from __future__ import annotations

import fcntl
import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cityscale import storage
from cityscale.config import Settings
from cityscale.schema import RAW_KEY, RAW_SCHEMA, conform

RAW_PREFIX = "raw"
STAGING = "_staging"
COMMIT = "_COMMIT.json"
LOCK = "_LOCK"
LOCK_POLL_S = 0.2


class RawZoneLocked(TimeoutError):
    """Another writer held the raw zone's writer lock for longer than the timeout."""


@contextmanager
def writer_lock(store_uri: str, timeout_s: float, stale_s: float) -> Iterator[None]:
    """Hold the raw zone's single-writer lock (see the module docstring) for the duration of the block.

    Waits up to ``timeout_s`` for another writer; on gs:// a lock object older than ``stale_s`` is a dead writer's.
    """
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    if storage.is_gcs(fs):
        with _gcs_lock(f"{raw}/{LOCK}", timeout_s, stale_s):
            yield
        return
    fs.makedirs(raw, exist_ok=True)
    with open(Path(raw) / LOCK, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RawZoneLocked(f"{raw}/{LOCK} held by another writer for over {timeout_s:.0f} s") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _gcs_lock(path: str, timeout_s: float, stale_s: float) -> Iterator[None]:
    """A lock object created only if absent (generation precondition 0), deleted by generation."""
    from google.api_core.exceptions import NotFound, PreconditionFailed
    from google.cloud import storage as gcs

    bucket_name, _, name = path.partition("/")
    bucket = gcs.Client().bucket(bucket_name)
    blob = bucket.blob(name)
    owner = json.dumps({"owner": uuid.uuid4().hex, "since": time.time()})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            blob.upload_from_string(owner, if_generation_match=0)
            break
        except PreconditionFailed:
            held = bucket.get_blob(name)
            if held is not None and time.time() - held.updated.timestamp() > stale_s:
                # A dead writer's lock: remove exactly that generation, then race for a fresh one.
                with suppress(NotFound, PreconditionFailed):
                    held.delete(if_generation_match=held.generation)
                continue
            if time.monotonic() >= deadline:
                raise RawZoneLocked(f"gs://{path} held by another writer for over {timeout_s:.0f} s") from None
            time.sleep(LOCK_POLL_S)
    generation = blob.generation
    try:
        yield
    finally:
        with suppress(NotFound, PreconditionFailed):  # taken over as stale meanwhile: no longer ours to delete
            blob.delete(if_generation_match=generation)


def _partition_rel(city: str, year: int) -> str:
    return f"city={city}/year={year}/part.parquet"


def _partition_uri(store_uri: str, city: str, year: int) -> str:
    return storage.join(store_uri, RAW_PREFIX, _partition_rel(city, year))


def _read_table(fs: object, path: str) -> pa.Table:
    with fs.open(path, "rb") as fh:  # type: ignore[attr-defined]
        return pq.read_table(fh, schema=RAW_SCHEMA)


def _read_partition(uri: str) -> pa.Table | None:
    fs, path = storage.filesystem(uri)
    return _read_table(fs, path) if fs.exists(path) else None


def _write_partition(uri: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes_atomic(uri, buf.getvalue())


def _apply(store_uri: str, txn: str, partitions: list[str]) -> None:
    """Move a committed transaction's staged files into place (idempotent: safe to repeat)."""
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    txn_dir = f"{raw}/{STAGING}/{txn}"
    for rel in partitions:
        staged, final = f"{txn_dir}/{rel}", f"{raw}/{rel}"
        if fs.exists(staged):
            storage.move(fs, staged, final)
    fs.rm(txn_dir, recursive=True)


def _transactions(store_uri: str) -> dict[str, list[str] | None]:
    """Transactions in staging: txn -> committed partitions, or None when never committed."""
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    root = f"{raw}/{STAGING}"
    fs.invalidate_cache(raw)  # another process may have written since this (cached) instance listed
    if not fs.exists(root):
        return {}
    out: dict[str, list[str] | None] = {}
    for entry in fs.ls(root, detail=False):
        txn = entry.rstrip("/").rsplit("/", 1)[-1]
        journal = f"{root}/{txn}/{COMMIT}"
        out[txn] = storage.read_json(f"{fs.unstrip_protocol(journal)}")["partitions"] if fs.exists(journal) else None
    return out


def recover(store_uri: str) -> dict[str, int]:
    """Finish what a crashed writer left: roll committed transactions forward, drop uncommitted ones."""
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    done = {"rolled_forward": 0, "discarded": 0}
    for txn, partitions in sorted(_transactions(store_uri).items()):
        if partitions is None:
            fs.rm(f"{raw}/{STAGING}/{txn}", recursive=True)
            done["discarded"] += 1
        else:
            _apply(store_uri, txn, partitions)
            done["rolled_forward"] += 1
    return done


def upsert(store_uri: str, rows: pd.DataFrame, settings: Settings) -> int:
    """Merge rows into the raw zone as one transaction; returns the number of partitions rewritten."""
    conform(rows)  # validate before touching anything
    with writer_lock(store_uri, settings.raw_zone_lock_timeout_s, settings.raw_zone_lock_stale_s):
        return _upsert_locked(store_uri, rows)


def _upsert_locked(store_uri: str, rows: pd.DataFrame) -> int:
    recover(store_uri)
    txn = uuid.uuid4().hex
    staged: list[str] = []
    years = rows["timestamp_local"].dt.year
    for (city, year), part in rows.groupby([rows["city"], years], sort=True):
        rel = _partition_rel(str(city), int(year))
        old = _read_partition(_partition_uri(store_uri, str(city), int(year)))
        old_df = None if old is None else old.to_pandas()
        merged = part if old_df is None else pd.concat([old_df, part], ignore_index=True)
        merged = merged.drop_duplicates(RAW_KEY, keep="last").sort_values(RAW_KEY, ignore_index=True)
        table = conform(merged)
        if old is not None and table.equals(old):
            continue  # nothing new: keep the file as it is
        _write_partition(storage.join(store_uri, RAW_PREFIX, STAGING, txn, rel), table)
        staged.append(rel)
    if staged:
        storage.write_json(storage.join(store_uri, RAW_PREFIX, STAGING, txn, COMMIT), {"partitions": staged})
        _apply(store_uri, txn, staged)
    return len(staged)


def _visible_partitions(store_uri: str, city: str | None) -> dict[str, str]:
    """Partition (city=../year=..) -> path to read: the final file, or a committed staged one."""
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    found = {}
    for path in fs.glob(f"{raw}/city={city or '*'}/year=*/part.parquet"):
        rel = path[len(raw) + 1 :]
        found[rel] = path
    for txn, partitions in sorted(_transactions(store_uri).items()):
        for rel in partitions or []:
            staged = f"{raw}/{STAGING}/{txn}/{rel}"
            if (city is None or rel.startswith(f"city={city}/")) and fs.exists(staged):
                found[rel] = staged
    return dict(sorted(found.items()))


def read(
    store_uri: str,
    city: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Read raw rows, optionally for one city and a [start, end) local-time window."""
    fs, raw = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    frames = []
    for rel, path in _visible_partitions(store_uri, city).items():
        year = int(rel.split("year=")[1].split("/")[0])
        if start is not None and year < pd.Timestamp(start).year:
            continue
        if end is not None and year > pd.Timestamp(end).year:
            continue
        try:
            frames.append(_read_table(fs, path).to_pandas())
        except FileNotFoundError:  # a staged file moved into place meanwhile: read the final one
            frames.append(_read_table(fs, f"{raw}/{rel}").to_pandas())
    if not frames:
        return RAW_SCHEMA.empty_table().to_pandas()
    df = pd.concat(frames, ignore_index=True)
    if start is not None:
        df = df[df["timestamp_local"] >= pd.Timestamp(start)]
    if end is not None:
        df = df[df["timestamp_local"] < pd.Timestamp(end)]
    return df.reset_index(drop=True)


def sensors(store_uri: str) -> pd.DataFrame:
    """Per (city, sensor_id): first and last local hour and rows in the raw zone (for the quality step)."""
    df = read(store_uri)
    if df.empty:
        return pd.DataFrame(columns=["city", "sensor_id", "first", "last", "rows"])
    grouped = df.groupby(["city", "sensor_id"], observed=True)["timestamp_local"]
    return grouped.agg(first="min", last="max", rows="size").reset_index()


def stats(store_uri: str) -> dict[str, object]:
    """Rows, sensors, cities, time range and duplicate keys (must be 0) of the whole raw zone."""
    df = read(store_uri)
    return {
        "rows": len(df),
        "sensors": int(df["sensor_id"].nunique()),
        "cities": sorted(df["city"].unique().tolist()),
        "from": df["timestamp_local"].min() if len(df) else None,
        "to": df["timestamp_local"].max() if len(df) else None,
        "duplicate_keys": int(df.duplicated(RAW_KEY).sum()),
        "sensor_ids_in_several_cities": int((df.groupby("sensor_id")["city"].nunique() > 1).sum()) if len(df) else 0,
    }

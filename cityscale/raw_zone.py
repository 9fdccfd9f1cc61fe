"""The raw zone: every city's hourly counts as Parquet, partitioned by city and year.

Writes are upserts keyed on (city, sensor_id, timestamp_local): re-ingesting the same hours adds
no duplicate and a corrected value replaces the old one. Each partition file is replaced
atomically, so a crash mid-write leaves the previous partition readable.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cityscale import storage
from cityscale.schema import RAW_KEY, RAW_SCHEMA, conform

RAW_PREFIX = "raw"


def _partition_uri(store_uri: str, city: str, year: int) -> str:
    return storage.join(store_uri, RAW_PREFIX, f"city={city}", f"year={year}", "part.parquet")


def _read_partition(uri: str) -> pd.DataFrame | None:
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh, schema=RAW_SCHEMA).to_pandas()


def _write_partition(uri: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes_atomic(uri, buf.getvalue())


def upsert(store_uri: str, rows: pd.DataFrame) -> int:
    """Merge rows into the raw zone; returns the number of partitions written."""
    conform(rows)  # validate before touching anything
    written = 0
    years = rows["timestamp_local"].dt.year
    for (city, year), part in rows.groupby([rows["city"], years], sort=True):
        uri = _partition_uri(store_uri, str(city), int(year))
        old = _read_partition(uri)
        merged = part if old is None else pd.concat([old, part], ignore_index=True)
        merged = merged.drop_duplicates(RAW_KEY, keep="last").sort_values(RAW_KEY, ignore_index=True)
        _write_partition(uri, conform(merged))
        written += 1
    return written


def read(
    store_uri: str,
    city: str | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Read raw rows, optionally for one city and a [start, end) local-time window."""
    fs, root = storage.filesystem(storage.join(store_uri, RAW_PREFIX))
    pattern = f"{root}/city={city or '*'}/year=*/part.parquet"
    frames = []
    for path in sorted(fs.glob(pattern)):
        year = int(path.split("year=")[1].split("/")[0])
        if start is not None and year < pd.Timestamp(start).year:
            continue
        if end is not None and year > pd.Timestamp(end).year:
            continue
        with fs.open(path, "rb") as fh:
            frames.append(pq.read_table(fh, schema=RAW_SCHEMA).to_pandas())
    if not frames:
        return RAW_SCHEMA.empty_table().to_pandas()
    df = pd.concat(frames, ignore_index=True)
    if start is not None:
        df = df[df["timestamp_local"] >= pd.Timestamp(start)]
    if end is not None:
        df = df[df["timestamp_local"] < pd.Timestamp(end)]
    return df.reset_index(drop=True)

"""Snapshot ingestion: load a real file export, check it, and upsert it into the raw zone.

Sources: the bundled Parquet sample (already long), a raw-zone-layout Parquet file or folder, one
Melbourne wide CSV, or a folder of them (``../shared/data/melbourne_pcs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cityscale import raw_zone
from cityscale.quality import QualityReport, clean_and_check
from cityscale.sources import melbourne

LONG_COLUMNS = ["city", "sensor_id", "sensor_name", "timestamp_local", "count"]


@dataclass
class IngestResult:
    rows: pd.DataFrame
    report: QualityReport
    partitions_written: int


def load_snapshot(source: str | Path) -> pd.DataFrame:
    """Long rows (city, sensor_id, sensor_name, timestamp_local, count) from a file export."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"snapshot source {source} does not exist")
    if source.is_dir():
        csvs = sorted(source.glob("grouped_data_*.csv"))
        if csvs:
            return melbourne.read_wide_exports(csvs)
        parquet = sorted(source.rglob("*.parquet"))
        if not parquet:
            raise FileNotFoundError(f"{source} holds neither grouped_data_*.csv nor *.parquet files")
        df = pd.concat([pd.read_parquet(p) for p in parquet], ignore_index=True)
    elif source.suffix == ".csv":
        return melbourne.read_wide_csv(source)
    elif source.suffix == ".parquet":
        df = pd.read_parquet(source)
    else:
        raise ValueError(f"unsupported snapshot {source}: expected .parquet, .csv or a folder")
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source} lacks columns {missing}")
    return df[LONG_COLUMNS]


def ingest_snapshot(
    source: str | Path,
    store_uri: str,
    start: str | None = None,
    end: str | None = None,
) -> IngestResult:
    """Load, clean and check a snapshot, then upsert the [start, end) window into the raw zone.

    Nothing is written when a hard data-quality error is found.
    """
    df = load_snapshot(source)
    if start:
        df = df[df["timestamp_local"] >= pd.Timestamp(start)]
    if end:
        df = df[df["timestamp_local"] < pd.Timestamp(end)]
    if df.empty:
        raise ValueError(f"no rows in {source} for the window [{start}, {end})")
    clean, report = clean_and_check(df.reset_index(drop=True))
    report.raise_for_errors()
    written = raw_zone.upsert(store_uri, clean)
    return IngestResult(rows=clean, report=report, partitions_written=written)

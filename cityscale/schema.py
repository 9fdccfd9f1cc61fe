"""The raw counts contract (long format), shared by every city and every ingestion mode.

One row per (city, sensor_id, timestamp_local) hour. ``timestamp_local`` is the wall-clock hour
the source reports (the forecasting grid); ``timestamp_utc`` is the same instant in UTC.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

RAW_KEY = ["city", "sensor_id", "timestamp_local"]

RAW_SCHEMA = pa.schema(
    [
        pa.field("city", pa.string(), nullable=False),
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("sensor_name", pa.string()),
        pa.field("timestamp_local", pa.timestamp("us"), nullable=False),
        pa.field("timestamp_utc", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("count", pa.int32(), nullable=False),
    ]
)
RAW_COLUMNS = RAW_SCHEMA.names


class SchemaError(ValueError):
    """Raised when a frame does not match the raw counts contract."""


def conform(df: pd.DataFrame) -> pa.Table:
    """Cast a frame to the raw schema, failing loudly on missing columns or bad values."""
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"raw counts frame lacks columns {missing}; has {list(df.columns)}")
    frame = df[RAW_COLUMNS]
    if frame[["city", "sensor_id", "timestamp_local", "timestamp_utc", "count"]].isna().any().any():
        raise SchemaError("raw counts frame has nulls in key or count columns")
    try:
        return pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"raw counts frame does not fit the schema: {exc}") from exc

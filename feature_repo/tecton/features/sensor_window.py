"""History window and same-hour-of-week profile of a sensor as of the start of hour T (spec view `sensor_window`).

Each hourly run computes, for the hour T at the end of its materialization window, the last 672 hourly
counts before T on the local-time grid (oldest first, -1 = missing) and the 4-week same-hour-of-week mean
of the 24 hours from T: the same definitions the Feast backend computes in DuckDB.
"""

from datetime import datetime, timedelta

from data_sources.raw_counts import raw_counts
from entities import sensor
from tecton import Attribute, TectonTimeConstant, batch_feature_view, materialization_context
from tecton.types import Array, Float32

HISTORY_HOURS = 672
HORIZON_HOURS = 24
WEEKS = 4


@batch_feature_view(
    name="sensor_window",
    sources=[
        raw_counts.select_range(
            start_time=TectonTimeConstant.MATERIALIZATION_START_TIME - timedelta(days=WEEKS * 7),
            end_time=TectonTimeConstant.MATERIALIZATION_END_TIME,
        )
    ],
    entities=[sensor],
    mode="pandas",
    timestamp_field="event_timestamp",
    batch_schedule=timedelta(hours=1),
    incremental_backfills=True,
    features=[
        Attribute("history_672h", Array(Float32)),
        Attribute("same_how_mean_4w", Array(Float32)),
        Attribute("age_days", Float32),
    ],
    ttl=timedelta(hours=1),
    online=True,
    offline=True,
    feature_start_time=datetime(2009, 6, 1),
    description="Hourly history window and same-hour-of-week profile of a sensor as of the start of hour T.",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "kind": "window"},
)
def sensor_window(raw_counts, context=materialization_context()):
    import numpy as np
    import pandas as pd

    as_of = pd.Timestamp(context.end_time).tz_convert("UTC")
    rows = []
    for (sensor_id, city), df in raw_counts.groupby(["sensor_id", "city"]):
        local = pd.DatetimeIndex(df["timestamp_local"])
        tz = {"melbourne": "Australia/Melbourne", "auckland": "Pacific/Auckland"}[city]
        origin = as_of.tz_convert(tz).tz_localize(None).floor("h")
        lag = ((origin - local) // pd.Timedelta(hours=1)).to_numpy()
        counts = df["count"].to_numpy(dtype=np.float32)
        history = np.full(HISTORY_HOURS, -1.0, dtype=np.float32)
        inside = (lag >= 1) & (lag <= HISTORY_HOURS)
        history[HISTORY_HOURS - lag[inside]] = counts[inside]
        profile = np.full(HORIZON_HOURS, -1.0, dtype=np.float32)
        for h in range(HORIZON_HOURS):
            same = np.isin(lag, [168 * k - h for k in range(1, WEEKS + 1)])
            if same.any():
                profile[h] = np.float32(counts[same].astype(np.float64).mean())
        first = local.min()
        rows.append(
            {
                "sensor_id": sensor_id,
                "event_timestamp": as_of,
                "history_672h": history.tolist(),
                "same_how_mean_4w": profile.tolist(),
                "age_days": np.float32((origin - first) / pd.Timedelta(days=1)),
            }
        )
    return pd.DataFrame(rows, columns=["sensor_id", "event_timestamp", "history_672h", "same_how_mean_4w", "age_days"])

"""Rolling aggregates of a sensor's hourly counts over 1 h, 24 h, 7 d and 28 d (spec view `sensor_aggregates`).

Tecton's tiled aggregations (1-hour tiles, refreshed every hour) compute what the Feast backend computes
with exact prefix sums in DuckDB; `stddev` in the spec is the sample standard deviation (`stddev_samp`).
"""

from datetime import datetime, timedelta

from data_sources.raw_counts import raw_counts
from entities import sensor
from tecton import Aggregate, batch_feature_view
from tecton.types import Field, Int64

PEDESTRIANS = Field("pedestrians", Int64)


@batch_feature_view(
    name="sensor_aggregates",
    sources=[raw_counts],
    entities=[sensor],
    mode="pandas",
    timestamp_field="timestamp_utc",
    aggregation_interval=timedelta(hours=1),
    batch_schedule=timedelta(hours=1),
    features=[
        Aggregate(
            name="pedestrians_mean_1h", input_column=PEDESTRIANS, function="mean", time_window=timedelta(hours=1)
        ),
        Aggregate(
            name="pedestrians_mean_24h", input_column=PEDESTRIANS, function="mean", time_window=timedelta(hours=24)
        ),
        Aggregate(name="pedestrians_mean_7d", input_column=PEDESTRIANS, function="mean", time_window=timedelta(days=7)),
        Aggregate(
            name="pedestrians_mean_28d", input_column=PEDESTRIANS, function="mean", time_window=timedelta(days=28)
        ),
        Aggregate(
            name="pedestrians_sum_24h", input_column=PEDESTRIANS, function="sum", time_window=timedelta(hours=24)
        ),
        Aggregate(
            name="pedestrians_count_24h", input_column=PEDESTRIANS, function="count", time_window=timedelta(hours=24)
        ),
        Aggregate(
            name="pedestrians_count_7d", input_column=PEDESTRIANS, function="count", time_window=timedelta(days=7)
        ),
        Aggregate(
            name="pedestrians_count_28d", input_column=PEDESTRIANS, function="count", time_window=timedelta(days=28)
        ),
        Aggregate(
            name="pedestrians_stddev_7d",
            input_column=PEDESTRIANS,
            function="stddev_samp",
            time_window=timedelta(days=7),
        ),
        Aggregate(
            name="pedestrians_stddev_28d",
            input_column=PEDESTRIANS,
            function="stddev_samp",
            time_window=timedelta(days=28),
        ),
    ],
    online=True,
    offline=True,
    feature_start_time=datetime(2009, 5, 1),
    description="Rolling aggregates of a sensor's hourly counts over 1 h, 24 h, 7 d and 28 d before T.",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "kind": "aggregate"},
)
def sensor_aggregates(raw_counts):
    return raw_counts.rename(columns={"count": "pedestrians"})[["sensor_id", "timestamp_utc", "pedestrians"]]

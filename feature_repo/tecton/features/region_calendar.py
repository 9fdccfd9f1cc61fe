"""Public-holiday and lockdown flags of the city's region for the 24 hours from T (spec view `region_calendar`)."""

from datetime import datetime, timedelta

from data_sources.exog_calendar import exog_calendar
from entities import city
from tecton import Attribute, TectonTimeConstant, batch_feature_view, materialization_context
from tecton.types import Array, Float32

HORIZON_HOURS = 24


@batch_feature_view(
    name="region_calendar",
    sources=[
        exog_calendar.select_range(
            start_time=TectonTimeConstant.MATERIALIZATION_START_TIME - timedelta(days=1),
            end_time=TectonTimeConstant.MATERIALIZATION_END_TIME + timedelta(days=2),
        )
    ],
    entities=[city],
    mode="pandas",
    timestamp_field="event_timestamp",
    batch_schedule=timedelta(hours=1),
    incremental_backfills=True,
    features=[
        Attribute("holiday_24h", Array(Float32)),
        Attribute("lockdown_24h", Array(Float32)),
    ],
    ttl=timedelta(hours=1),
    online=True,
    offline=True,
    feature_start_time=datetime(2009, 5, 1),
    description="Public-holiday and lockdown flags of the city's region for the forecast horizon from T.",
    owner="cityscale-ml-platform",
    tags={"domain": "calendar", "kind": "calendar"},
)
def region_calendar(exog_calendar, context=materialization_context()):
    import pandas as pd

    as_of = pd.Timestamp(context.end_time).tz_convert("UTC")
    rows = []
    for city_name, df in exog_calendar.groupby("city"):
        tz = {"melbourne": "Australia/Melbourne", "auckland": "Pacific/Auckland"}[city_name]
        origin = as_of.tz_convert(tz).tz_localize(None).floor("h")
        days = pd.DatetimeIndex(pd.date_range(origin, periods=HORIZON_HOURS, freq="h")).normalize()
        flags = df.assign(day=pd.to_datetime(df["day"]).dt.tz_localize(None).dt.normalize()).set_index("day")
        rows.append(
            {
                "city": city_name,
                "event_timestamp": as_of,
                "holiday_24h": flags["holiday"].reindex(days, fill_value=0.0).astype("float32").tolist(),
                "lockdown_24h": flags["lockdown"].reindex(days, fill_value=0.0).astype("float32").tolist(),
            }
        )
    return pd.DataFrame(rows, columns=["city", "event_timestamp", "holiday_24h", "lockdown_24h"])

"""Public holidays (the `holidays` package) and lockdown windows (../shared/data/exog) per region, one row a day."""

import os

from tecton import BatchSource, FileConfig

exog_calendar = BatchSource(
    name="exog_calendar",
    batch_config=FileConfig(
        uri=os.environ.get("CITYSCALE_EXOG_CALENDAR_URI", "gs://cityscale-raw/reference/exog_calendar.parquet"),
        file_format="parquet",
        timestamp_field="day",
    ),
    description="Daily public-holiday and lockdown flags per city (holidays package + exog lockdown windows).",
    owner="cityscale-ml-platform",
    tags={"domain": "calendar"},
)

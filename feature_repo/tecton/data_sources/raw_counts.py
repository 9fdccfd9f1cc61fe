"""The raw zone's hourly counts (long Parquet in GCS), the input of every window feature."""

import os

from tecton import BatchSource, FileConfig

RAW_ZONE = os.environ.get("CITYSCALE_STORE_URI", "gs://cityscale-raw")

raw_counts = BatchSource(
    name="raw_counts",
    batch_config=FileConfig(
        uri=f"{RAW_ZONE}/raw/",
        file_format="parquet",
        timestamp_field="timestamp_utc",
    ),
    description="Hourly counts in the raw zone (long Parquet, partitioned by city and year).",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "licence": "CC-BY-4.0"},
)

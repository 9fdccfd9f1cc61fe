"""Hourly count records as edge sensors push them (spec push source `raw_counts_push`), for Tecton users.

Records reach Tecton through its ingest API (``POST https://<cluster>/ingest`` with
``{"workspace_name", "dry_run", "records": {"raw_counts_push": [{"record": {...}}]}}``); the batch config
is the raw zone, so backfills and offline retrieval read the same counts the push gateway commits there.
Feast users get the same behaviour from the push gateway and Feast push sources (cityscale.realtime).
"""

from tecton import PushConfig, StreamSource
from tecton.types import Field, Int64, String, Timestamp

from data_sources.raw_counts import raw_counts

raw_counts_push = StreamSource(
    name="raw_counts_push",
    stream_config=PushConfig(log_offline=False),
    batch_config=raw_counts.batch_config,
    schema=[
        Field("city", String),
        Field("sensor_id", String),
        Field("timestamp_utc", Timestamp),
        Field("count", Int64),
    ],
    description="Hourly count records as edge sensors push them (Tecton ingest API); batch source: the raw zone.",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "licence": "CC-BY-4.0"},
)

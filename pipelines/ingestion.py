"""The hourly ingestion pipeline: one ``ingest`` task that lands new counts in the raw zone.

Why a separate pipeline: the raw zone should stay fresh every hour (serving reads history from it), while
the training pipeline runs weekly. It reuses the training pipeline's ``ingest`` component unchanged, so
both write the raw zone through the same quality checks and transactional upsert. The recurring run that
triggers it is defined in ``pipelines/schedules.yaml`` and applied by ``make deploy``.
"""

from kfp import dsl

from cityscale.config import get_settings
from components.ingest import ingest
from pipelines.cluster import with_cluster_config

PIPELINE_NAME = "cityscale-ingestion"
SETTINGS = get_settings()


@dsl.pipeline(name=PIPELINE_NAME, description="Land new hourly pedestrian counts in the raw zone and check them.")
def ingestion_pipeline(
    store_uri: str,
    source: str = "melbourne",
    ingest_mode: str = "embedded",
    data_start: str = "",
    data_end: str = "",
) -> None:
    """Land new hourly pedestrian counts in the raw zone and check them.

    Args:
        store_uri: Raw-zone root (gs:// in the cluster, a local path under kfp.local).
        source: Connector name ("melbourne", "auckland") for the embedded and airbyte-server modes, or a
            snapshot export for the snapshot mode.
        ingest_mode: "embedded" (Airbyte manifest in-process, incremental via its stored cursor),
            "airbyte-server" (sync job) or "snapshot" (file export).
        data_start: First local day of the window written to the run's ``raw`` artifact (empty = all).
        data_end: End of that window, exclusive (empty = all).
    """
    ingest_task = ingest(mode=ingest_mode, source=source, store_uri=store_uri, start=data_start, end=data_end)
    # Never cached: the same arguments bring different hours every run.
    with_cluster_config(ingest_task).set_display_name("Ingest counts").set_caching_options(False)
    # Transient faults (API outage past the connector's own retries, the raw-zone writer lock held): retry.
    ingest_task.set_retry(SETTINGS.pipeline_task_retries, f"{SETTINGS.pipeline_retry_backoff_s}s", 2.0)

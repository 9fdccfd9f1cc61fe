"""The batch-forecast pipeline: one task writing forecasts for many sensors and origins to a table."""

from kfp import dsl

from components.batch_forecast import batch_forecast
from pipelines.cluster import with_cluster_config

PIPELINE_NAME = "cityscale-batch-forecast"


@dsl.pipeline(name=PIPELINE_NAME, description="Quantile forecasts for every sensor and daily origin of a file.")
def batch_forecast_pipeline(data: str, registry_uri: str, start: str, end: str, model: str = "production"):
    """Quantile forecasts for every sensor and daily origin of a file.

    Args:
        data: Melbourne wide export or raw long Parquet to forecast from.
        registry_uri: Model registry root.
        start: First origin day.
        end: Last origin day (included).
        model: Registry alias, version number or model URI.
    """
    task = batch_forecast(data=data, model=model, registry_uri=registry_uri, start=start, end=end)
    with_cluster_config(task).set_display_name("Batch forecast").set_caching_options(False)

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def batch_forecast(data: str, model: str, registry_uri: str, start: str, end: str, forecasts: Output[Dataset]) -> int:
    """Forecast every sensor in a file for every daily origin in [start, end], from data before each origin.

    Args:
        data: Melbourne wide export (grouped_data_*.csv layout) or raw long Parquet (local path or URI).
        model: Registry alias (latest/production), version number or model directory URI.
        registry_uri: Model registry root the alias is resolved in.
        start: First origin day (forecasts from 00:00 local).
        end: Last origin day (included).

    Returns:
        The number of forecast rows (sensor, origin, target_time, p10, p50, p90) written.
    """
    from cityscale import steps
    from cityscale.config import Settings

    info = steps.batch_forecast(data, model, registry_uri, start, end, forecasts.path, Settings())
    forecasts.metadata.update(info)
    return info["rows"]

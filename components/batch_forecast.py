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
    from cityscale import registry
    from cityscale.config import Settings
    from cityscale.forecasting.batch import batch_forecast as run
    from cityscale.forecasting.forecaster import Forecaster

    settings = Settings()
    uri, version = registry.resolve(model, registry_uri, settings.model_name)
    frame, skipped = run(data, Forecaster.load(uri, version), start, end, settings.min_history_fraction)
    frame.to_csv(forecasts.path, index=False, float_format="%.2f", date_format="%Y-%m-%dT%H:%M:%S")
    forecasts.metadata.update({"model_version": version, "rows": len(frame), "pairs_skipped": skipped})
    return len(frame)

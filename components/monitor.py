from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def monitor(
    store_uri: str,
    registry_uri: str,
    as_of: str,
    window_days: int,
    retrain_wape: float,
    psi_threshold: float,
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
) -> bool:
    """Score served forecasts against the counts that landed, check drift and outages, decide on retraining.

    Args:
        store_uri: Store root holding the raw zone and the forecast log; the run's tables, ``metrics.prom``
            and ``latest/`` are written under ``<store_uri>/monitoring/``.
        registry_uri: Model registry root (the production model's backtest WAPE is the reference).
        as_of: End (exclusive, local time) of the monitored window; empty = the hour after the newest count.
        window_days: Days of forecasts and counts that the verdict covers.
        retrain_wape: Rolling WAPE above which retraining is asked for.
        psi_threshold: PSI above which a sensor counts as drifted.

    Returns:
        Whether to retrain (the condition of the pipeline's retraining branch).
    """
    from cityscale import steps
    from cityscale.config import Settings

    settings = Settings(
        monitor_window_days=window_days, monitor_retrain_wape=retrain_wape, monitor_psi_threshold=psi_threshold
    )
    result = steps.monitor(store_uri, registry_uri, as_of, report.path, summary.path, settings)
    for key, value in result.metrics().items():
        metrics.log_metric(key, round(value, 6))
    metrics.log_metric("retrain", float(result.retrain))
    return result.retrain

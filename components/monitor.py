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
    import pandas as pd

    from cityscale.config import Settings
    from cityscale.monitoring import report as monitoring_report
    from cityscale.monitoring.run import monitor as run_monitor

    settings = Settings(
        monitor_window_days=window_days, monitor_retrain_wape=retrain_wape, monitor_psi_threshold=psi_threshold
    )
    result = run_monitor(store_uri, settings, registry_uri, pd.Timestamp(as_of) if as_of else None)
    for key, value in result.metrics().items():
        metrics.log_metric(key, round(value, 6))
    metrics.log_metric("retrain", float(result.retrain))
    with open(report.path, "w") as fh:
        fh.write(monitoring_report.to_html(result))
    with open(summary.path, "w") as fh:
        fh.write(monitoring_report.to_markdown(result))
    return result.retrain

"""The monitoring pipeline: score served forecasts, check drift and outages, and retrain when accuracy degrades.

The retraining branch is the training pipeline itself, nested as a component under ``dsl.If`` on the
monitor step's single ``Output`` (kfp.local 2.17.3 does not resolve named outputs in conditions), so a
retrain triggered here is the same run, with the same gate, as the weekly one.
"""

from kfp import dsl

from components.monitor import monitor
from pipelines.cluster import with_cluster_config
from pipelines.training import training_pipeline

PIPELINE_NAME = "cityscale-monitoring"


@dsl.pipeline(
    name=PIPELINE_NAME, description="Daily forecast accuracy, drift and outage checks; retrain on degradation."
)
def monitoring_pipeline(
    store_uri: str,
    registry_uri: str,
    as_of: str = "",
    window_days: int = 7,
    retrain_wape: float = 0.5,
    psi_threshold: float = 0.25,
    retrain_ingest_mode: str = "embedded",
    retrain_source: str = "melbourne",
    retrain_test_start: str = "last:28d",
    deploy_target: str = "local",
):
    """Daily forecast accuracy, drift and outage checks; retrain on degradation.

    Args:
        store_uri: Store root (raw zone + forecast log); results go to <store_uri>/monitoring/.
        registry_uri: Model registry root.
        as_of: End (exclusive, local time) of the monitored window; empty = after the newest count.
        window_days: Days the accuracy, drift and outage verdicts cover.
        retrain_wape: Rolling WAPE above which the training pipeline runs.
        psi_threshold: PSI above which a sensor counts as drifted.
        retrain_ingest_mode: Ingest mode of the triggered training run (as the weekly schedule).
        retrain_source: Source of the triggered training run (connector name or snapshot).
        retrain_test_start: First held-out day of the triggered training run's backtest (a date, or last:<span>
            counted back from the newest count).
        deploy_target: Where a retrained model that passes the gate goes ("local" or "kserve").
    """
    monitor_task = monitor(
        store_uri=store_uri,
        registry_uri=registry_uri,
        as_of=as_of,
        window_days=window_days,
        retrain_wape=retrain_wape,
        psi_threshold=psi_threshold,
    )
    with_cluster_config(monitor_task).set_display_name("Monitor accuracy, drift, outages").set_caching_options(False)

    with dsl.If(monitor_task.outputs["Output"] == True, name="accuracy-degraded"):  # noqa: E712
        retrain = training_pipeline(
            store_uri=store_uri,
            registry_uri=registry_uri,
            source=retrain_source,
            ingest_mode=retrain_ingest_mode,
            test_start=retrain_test_start,
            deploy_target=deploy_target,
        )
        retrain.set_display_name("Retrain (training pipeline)")

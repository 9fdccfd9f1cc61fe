"""What every pipeline task gets from the cluster: the ``cityscale-config`` ConfigMap as its environment.

The platform chart renders that ConfigMap from the Terraform outputs
(``helmfile.d/charts/cityscale-platform/templates/configmap.yaml``); its keys are ``CITYSCALE_*`` names of
``cityscale.config.Settings`` fields, so a task's ``Settings()`` sees the cluster's image, buckets,
namespaces, service accounts and feature server, and hands them on to the TrainJob and the InferenceService
it creates. kfp.local ignores Kubernetes platform config: locally the task inherits the runner's environment.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from cityscale.config import CLUSTER_CONFIG_MAP as CONFIG_MAP

# Every key of the ConfigMap (tests/infra/test_infra_cluster_config.py checks the chart renders exactly these).
CONFIG_KEYS = (
    "CITYSCALE_IMAGE",
    "CITYSCALE_SERVING_IMAGE",
    "CITYSCALE_STORE_URI",
    "CITYSCALE_REGISTRY_URI",
    "CITYSCALE_MODEL_NAME",
    "CITYSCALE_GPU_NODE_TYPE",
    "CITYSCALE_TRAINJOB_NAMESPACE",
    "CITYSCALE_TRAINJOB_SERVICE_ACCOUNT",
    "CITYSCALE_SERVING_NAMESPACE",
    "CITYSCALE_SERVING_SERVICE_ACCOUNT",
    "CITYSCALE_FEATURE_BACKEND",
    "CITYSCALE_FEATURE_SERVER_URL",
    "CITYSCALE_TECTON_URL",
    "CITYSCALE_TECTON_WORKSPACE",
    "CITYSCALE_MONITOR_PUSHGATEWAY_URL",
)


def with_cluster_config(task: PipelineTask) -> PipelineTask:
    """Give ``task`` every key of the cluster ConfigMap as an environment variable of the same name."""
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, {key: key for key in CONFIG_KEYS})
    return task

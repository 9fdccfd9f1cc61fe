"""The training pipeline: ingest -> features -> train -> evaluate -> (gate) register -> deploy."""

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input, Model

from cityscale.config import get_settings
from components.deploy import deploy
from components.evaluate import evaluate
from components.features import build_features
from components.ingest import ingest
from components.register import register
from components.train import train
from components.train_on_trainjob import train_on_trainjob
from pipelines.cluster import with_cluster_config

PIPELINE_NAME = "cityscale-training"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
SETTINGS = get_settings()


def on_gpu_nodes(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """CPU/memory limits, a GPU, the GPU pool's node selector and toleration (of the pod, or passed to a TrainJob)."""
    task.set_cpu_limit(SETTINGS.train_cpu_limit).set_memory_limit(SETTINGS.train_memory_limit)
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(SETTINGS.train_gpus)
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL, label_value=SETTINGS.gpu_node_type)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    return task


@dsl.pipeline(
    name="cityscale-gate-and-deploy", description="Backtest a candidate; register and deploy it if it passes."
)
def gate_and_deploy(
    raw: Input[Dataset], model: Input[Model], test_start: str, test_end: str, registry_uri: str, deploy_target: str
):
    """Backtest a candidate against production and the baselines; register and deploy it only if it passes.

    Args:
        raw: The ingested counts (the held-out months are cut from them).
        model: The candidate model.
        test_start: First held-out day (a date, or last:<span>).
        test_end: End of the held-out period, exclusive (empty = end of data).
        registry_uri: Model registry root.
        deploy_target: "local" or "kserve" (see the training pipeline).
    """
    eval_task = evaluate(raw=raw, model=model, test_start=test_start, test_end=test_end, registry_uri=registry_uri)
    with_cluster_config(eval_task).set_display_name("Backtest vs baselines")
    with dsl.If(eval_task.outputs["Output"] == True, name="model-beats-baselines"):  # noqa: E712
        register_task = register(model=model, evaluation=eval_task.outputs["evaluation"], registry_uri=registry_uri)
        with_cluster_config(register_task).set_display_name("Register model")
        deploy_task = deploy(version=register_task.output, registry_uri=registry_uri, target=deploy_target)
        with_cluster_config(deploy_task).set_display_name("Deploy model")


@dsl.pipeline(name=PIPELINE_NAME, description="Train, backtest and deploy the CityScale foot-traffic forecaster.")
def training_pipeline(
    store_uri: str,
    registry_uri: str,
    source: str = "",
    ingest_mode: str = "snapshot",
    data_start: str = "",
    data_end: str = "",
    test_start: str = "2022-07-01",
    test_end: str = "",
    max_epochs: int = 8,
    deploy_target: str = "local",
    train_mode: str = "local",
    train_num_nodes: int = 1,
    train_gpus_per_node: int = 1,
):
    """Train, backtest and deploy the CityScale foot-traffic forecaster.

    Args:
        store_uri: Raw-zone root (gs:// in the cluster, a local path under kfp.local).
        registry_uri: Model registry root.
        source: Snapshot to ingest (empty = the bundled Melbourne sample), or a connector name
            ("melbourne", "auckland") for the embedded and airbyte-server modes.
        ingest_mode: "snapshot", "embedded" (Airbyte manifest in-process) or "airbyte-server" (sync job).
        data_start: First local day of the data window (empty = all data).
        data_end: End of the data window, exclusive (empty = all data).
        test_start: First held-out day for the backtest; training targets end before it. A date, or
            last:<span> counted back from the newest count (last:28d: the newest four weeks), as schedules use.
        test_end: End of the held-out period, exclusive (empty = end of data).
        max_epochs: Training epochs.
        train_mode: "local" trains inside the train task, on a GPU node in the cluster (and in-process under
            kfp.local, `make run`); "trainjob" launches a Kubeflow Trainer TrainJob (runtime torch-distributed,
            DDP over NCCL, bf16) and emits the model it wrote. Any other value fails the train task.
        train_num_nodes: TrainJob nodes (trainjob mode).
        train_gpus_per_node: GPUs per TrainJob node (trainjob mode; 0 = CPU nodes).
        deploy_target: Where a model that passes the gate goes: "local" (the registry alias the local server
            serves) or "kserve" (create or patch the InferenceService, wait ready, roll back on failure).
    """
    ingest_task = ingest(mode=ingest_mode, source=source, store_uri=store_uri, start=data_start, end=data_end)
    with_cluster_config(ingest_task).set_display_name("Ingest counts").set_caching_options(False)
    ingest_task.set_retry(SETTINGS.pipeline_task_retries, f"{SETTINGS.pipeline_retry_backoff_s}s", 2.0)

    features_task = build_features(raw=ingest_task.outputs["raw"], test_start=test_start)
    with_cluster_config(features_task).set_display_name("Build training set (feature platform)").set_caching_options(
        False
    )
    features_task.set_retry(SETTINGS.pipeline_task_retries, f"{SETTINGS.pipeline_retry_backoff_s}s", 2.0)

    # train_mode=local trains in this task's pod, which holds the GPU; trainjob launches a TrainJob that gets the
    # same placement through the task config (the launcher pod itself stays small). Each branch gates and deploys
    # its own model through the same sub-pipeline (kfp.local cannot merge branch artifacts with dsl.OneOf).
    with dsl.If(train_mode != "trainjob", name="train-in-task"):  # first: local runs keep the plain task names
        train_task = train(examples=features_task.outputs["examples"], max_epochs=max_epochs, mode=train_mode)
        with_cluster_config(train_task).set_display_name("Train quantile model")
        on_gpu_nodes(train_task)
        train_task.set_cpu_request(SETTINGS.train_cpu_request).set_memory_request(SETTINGS.train_memory_request)
        gate_and_deploy(
            raw=ingest_task.outputs["raw"],
            model=train_task.outputs["model"],
            test_start=test_start,
            test_end=test_end,
            registry_uri=registry_uri,
            deploy_target=deploy_target,
        ).set_display_name("Gate and deploy")
    with dsl.Else(name="train-on-trainjob"):
        trainjob_task = train_on_trainjob(
            examples=features_task.outputs["examples"],
            max_epochs=max_epochs,
            num_nodes=train_num_nodes,
            gpus_per_node=train_gpus_per_node,
        )
        with_cluster_config(trainjob_task).set_display_name("Train as a TrainJob")
        on_gpu_nodes(trainjob_task)
        gate_and_deploy(
            raw=ingest_task.outputs["raw"],
            model=trainjob_task.outputs["model"],
            test_start=test_start,
            test_end=test_end,
            registry_uri=registry_uri,
            deploy_target=deploy_target,
        ).set_display_name("Gate and deploy")

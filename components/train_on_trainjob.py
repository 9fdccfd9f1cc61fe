from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import IMAGE


# The task's GPU request, node selector and tolerations are passed through to the TrainJob and not applied to
# this pod, which only launches and watches the job; env vars apply to both.
@dsl.component(
    base_image=IMAGE,
    install_kfp_package=False,
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    ],
)
def train_on_trainjob(
    examples: Input[Dataset],
    max_epochs: int,
    model: Output[Model],
    task_config: dsl.TaskConfig,
    num_nodes: int = 1,
    gpus_per_node: int = 1,
) -> float:
    """Train as a Kubeflow Trainer TrainJob (torch-distributed, NCCL, bf16) and emit the model it wrote.

    Args:
        examples: Training examples from the features step.
        max_epochs: Number of training epochs.
        task_config: The task's resources, node selector, tolerations and env (set by KFP; empty locally).
        num_nodes: TrainJob nodes.
        gpus_per_node: GPUs per TrainJob node (0 = CPU nodes).

    Returns:
        The final validation pinball loss.
    """
    from cityscale import steps
    from cityscale.config import Settings

    contract = steps.train_on_trainjob(
        examples.uri,
        model.path,
        Settings(max_epochs=max_epochs),
        output_uri=model.uri.rstrip("/") + "-trainjob",  # per run and task: a retried TrainJob resumes here
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        task_config=task_config,
    )
    model.metadata.update({"framework": "pytorch", "val_loss": contract.val_loss, "horizon": contract.horizon})
    return contract.val_loss

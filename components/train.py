from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(examples: Input[Dataset], max_epochs: int, model: Output[Model], mode: str = "local") -> float:
    """Train the global quantile model with PyTorch Lightning in this pod and write the model artifact.

    The pipeline gives this task its CPU and memory requests, the GPU, the GPU node selector and toleration
    (``train_mode=local``); ``train_on_trainjob`` is the task for ``train_mode=trainjob``.

    Args:
        examples: Training examples from the features step.
        max_epochs: Number of training epochs.
        mode: The pipeline's ``train_mode``; this task runs for every value but "trainjob" and refuses all but "local".

    Returns:
        The final validation pinball loss.
    """
    from cityscale import steps
    from cityscale.config import Settings

    contract = steps.train(examples.path, model.path, Settings(max_epochs=max_epochs), mode=mode)
    model.metadata.update({"framework": "pytorch", "val_loss": contract.val_loss, "horizon": contract.horizon})
    return contract.val_loss

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(examples: Input[Dataset], max_epochs: int, model: Output[Model]) -> float:
    """Train the global quantile model with PyTorch Lightning and write the model artifact.

    Args:
        examples: Training examples from the features step.
        max_epochs: Number of training epochs.

    Returns:
        The final validation pinball loss.
    """
    from cityscale import steps
    from cityscale.config import Settings

    contract = steps.train(examples.path, model.path, Settings(max_epochs=max_epochs))
    model.metadata.update({"framework": "pytorch", "val_loss": contract.val_loss, "horizon": contract.horizon})
    return contract.val_loss

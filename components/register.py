from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register(model: Input[Model], evaluation: Input[Artifact], registry_uri: str) -> str:
    """Copy the model into the next registry version with its backtest metrics and model card.

    Args:
        model: Model artifact that passed evaluation.
        evaluation: The evaluate step's verdict and metrics (JSON).
        registry_uri: Model registry root.

    Returns:
        The registered version (e.g. "0003"), now also the "latest" alias.
    """
    import json

    from cityscale import steps
    from cityscale.config import Settings

    with open(evaluation.path) as fh:
        verdict = json.load(fh)
    return steps.register(model.path, verdict, registry_uri, Settings())

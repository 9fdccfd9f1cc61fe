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
    if not verdict["passed"]:
        raise ValueError(f"refusing to register a model that failed evaluation: {verdict['reason']}")
    return steps.register(model.path, verdict["metrics"], registry_uri, Settings().model_name)

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_features(raw: Input[Dataset], test_start: str, examples: Output[Dataset]) -> int:
    """Build the point-in-time-correct training set through the feature platform (Feast by default).

    Args:
        raw: Raw counts of the run's data window (long Parquet).
        test_start: First local day held out for evaluation (a date, or last:<span> before the data's end,
            e.g. last:28d); no training target reaches it.

    Returns:
        The number of training examples.
    """
    import json

    from cityscale import steps
    from cityscale.config import Settings

    schema = steps.build_features(raw.path, test_start, examples.path, Settings())
    n = schema["n_examples"]
    examples.metadata["n_examples"] = n
    examples.metadata["feature_backend"] = schema["backend"]
    examples.metadata["spec_version"] = schema["spec_version"]
    examples.metadata["schema"] = json.dumps(schema["arrays"], sort_keys=True)
    return n

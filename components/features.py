from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_features(raw: Input[Dataset], test_start: str, examples: Output[Dataset]) -> int:
    """Cut point-in-time training examples (history window, calendar, target) before the test period.

    Args:
        raw: Raw counts of the run's data window (long Parquet).
        test_start: First local day held out for evaluation; no training target reaches it.

    Returns:
        The number of training examples.
    """
    from cityscale import steps
    from cityscale.config import Settings

    n = steps.build_features(raw.path, test_start, examples.path, Settings())
    examples.metadata["n_examples"] = n
    return n

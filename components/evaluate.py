from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    raw: Input[Dataset],
    model: Input[Model],
    test_start: str,
    test_end: str,
    registry_uri: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    evaluation: Output[Artifact],
) -> bool:
    """Rolling-origin backtest of the candidate against seasonal baselines and the production model.

    Args:
        raw: Raw counts of the run's data window.
        model: Candidate model artifact.
        test_start: First held-out local day (daily origins at 00:00 from here): a date, or last:<span> counted
            back from the data's end (e.g. last:28d).
        test_end: End of the held-out period (exclusive); empty = end of data.
        registry_uri: Model registry root, to compare with the current production model.

    Returns:
        Whether the candidate beats the best baseline and the production model (the deploy gate).
    """
    from cityscale import steps
    from cityscale.config import Settings

    result = steps.evaluate(raw.path, model.path, test_start, test_end, registry_uri, Settings())
    steps.write_evaluation(result, report.path, html_report.path, evaluation.path)
    for key, value in result.metrics.items():
        metrics.log_metric(key, round(float(value), 6))
    return result.passed

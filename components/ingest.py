from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    store_uri: str,
    start: str,
    end: str,
    raw: Output[Dataset],
    quality_report: Output[Markdown],
) -> int:
    """Load a snapshot export into the raw zone, check its quality, and emit the run's data window.

    Args:
        source: File export to ingest (Parquet sample, a wide CSV, or a folder of them); empty = bundled sample.
        store_uri: Raw-zone root (local path, file:// or gs://).
        start: First local hour of the data window (inclusive, YYYY-MM-DD); empty = all.
        end: End of the data window (exclusive); empty = all.

    Returns:
        The number of raw rows in the data window.
    """
    from cityscale import steps

    stats = steps.ingest(source, store_uri, start, end, raw.path, quality_report.path)
    raw.metadata.update(stats)
    return int(stats["rows"])

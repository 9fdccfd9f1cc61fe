"""The ``cityscale`` command line: the main local job and the library's entry points."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

app = typer.Typer(help="CityScale: hourly pedestrian foot-traffic forecasts with uncertainty.", no_args_is_help=True)
raw_app = typer.Typer(help="Inspect the raw zone.", no_args_is_help=True)
app.add_typer(raw_app, name="raw")
console = Console()


@app.command()
def run(
    source: str = typer.Option("", help="Snapshot to ingest (default: the bundled Melbourne sample)."),
    test_start: str = typer.Option("2022-07-01", help="First held-out day of the backtest."),
    sensor: str = typer.Option("", help="Sensor to forecast at the end (default: the one with the longest history)."),
) -> None:
    """Run the training pipeline under kfp.local, serve the model and ask it for a 24-hour forecast."""
    from cityscale import raw_zone
    from pipelines.local_run import run_training_locally
    from serving.client import infer_rest
    from serving.local_server import local_model_server

    settings = get_settings()
    console.rule("[bold]1/3 Training pipeline (kfp.local)")
    with console.status("ingest -> features -> train -> evaluate -> register -> deploy ..."):
        result = run_training_locally(settings, source=source, test_start=test_start)
    console.print(f"run directory: {result.run_dir}")
    _print_metrics(result.metrics)
    console.print(f"gate: {'[green]passed' if result.passed else '[red]failed'}[/] — {result.reason}")
    if result.deployed_version is None:
        console.print("[yellow]the model did not pass the gate; serving the previous production model, if any")

    raw = raw_zone.read(settings.resolved_store_uri)
    sensor = sensor or str(raw["sensor_id"].value_counts().idxmax())
    start = (raw["timestamp_local"].max() + pd.Timedelta(hours=1)).floor("h")
    console.rule("[bold]2/3 KServe model server (V2 REST + gRPC on loopback)")
    with local_model_server(env={"CITYSCALE_WORKDIR": str(settings.workdir)}) as server:
        console.print(f"ready at {server.http_url} (gRPC {server.grpc_target})")
        console.rule(f"[bold]3/3 Forecast for {sensor} from {start:%Y-%m-%d %H:%M}")
        response = infer_rest(server.http_url, settings.model_name, [sensor], f"{start:%Y-%m-%dT%H:%M:%S}")
    _print_forecast(response, sensor)


def _print_metrics(metrics: dict[str, float]) -> None:
    table = Table(title="Backtest (held-out period, daily origins, 24 h horizon)")
    for col in ("method", "WAPE", "MASE"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("model", f"{metrics['wape']:.3f}", f"{metrics['mase']:.3f}")
    for base in ("snaive24", "snaive168", "mean4w"):
        if f"{base}_wape" in metrics:
            table.add_row(base, f"{metrics[f'{base}_wape']:.3f}", f"{metrics[f'{base}_mase']:.3f}")
    console.print(table)
    console.print(f"P10-P90 coverage {metrics['coverage']:.1%} over {metrics['n_pairs']:.0f} (sensor, day) pairs")


def _print_forecast(response: dict, sensor: str) -> None:
    outputs = {o["name"]: o["data"] for o in response["outputs"]}
    table = Table(title=f"{sensor}: next 24 hours (model version {response.get('model_version')})")
    for col in ("hour (local)", "P10", "P50", "P90"):
        table.add_column(col, justify="right")
    for i, when in enumerate(outputs["target_time"]):
        table.add_row(when.replace("T", " ")[:16], *(f"{outputs[q][i]:,.0f}" for q in ("p10", "p50", "p90")))
    console.print(table)


@app.command()
def ingest(
    source: Path = typer.Option(..., help="Snapshot: bundled Parquet, a wide CSV, or a folder of them."),
    store: str = typer.Option("", help="Raw-zone root (default: settings)."),
    start: str = typer.Option("", help="First local day to ingest."),
    end: str = typer.Option("", help="End (exclusive) of the window to ingest."),
) -> None:
    """Ingest a snapshot export into the raw zone (idempotent upsert) and print its quality report."""
    from cityscale.ingest import ingest_snapshot

    result = ingest_snapshot(source, store or get_settings().resolved_store_uri, start or None, end or None)
    console.print(result.report.to_markdown())


@raw_app.command("stats")
def raw_stats(store: str = typer.Option("", help="Raw-zone root (default: settings).")) -> None:
    """Rows, sensors, time range and duplicate keys in the raw zone."""
    from cityscale import raw_zone
    from cityscale.schema import RAW_KEY

    df = raw_zone.read(store or get_settings().resolved_store_uri)
    table = Table(title="raw zone")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("rows", f"{len(df):,}")
    table.add_row("sensors", str(df["sensor_id"].nunique()))
    table.add_row("cities", ", ".join(sorted(df["city"].unique())))
    if len(df):
        table.add_row("from", f"{df['timestamp_local'].min():%Y-%m-%d %H:%M}")
        table.add_row("to", f"{df['timestamp_local'].max():%Y-%m-%d %H:%M}")
    table.add_row("duplicate keys", str(int(df.duplicated(RAW_KEY).sum())))
    console.print(table)


@app.command()
def backtest(
    model: str = typer.Option("production", help="Registry alias, version number or model directory."),
    store: str = typer.Option("", help="Raw-zone root (default: settings)."),
    start: str = typer.Option(..., help="First origin day."),
    end: str = typer.Option("", help="End (exclusive) of the origin days (default: end of data)."),
) -> None:
    """Rolling-origin backtest of a model against the seasonal baselines on the raw zone."""
    from cityscale import raw_zone, registry
    from cityscale.backtest import daily_origins, run_backtest
    from cityscale.forecaster import Forecaster
    from cityscale.panel import Panel

    settings = get_settings()
    uri, version = registry.resolve(model, settings.resolved_registry_uri, settings.model_name)
    forecaster = Forecaster.load(uri, version)
    panel = Panel.from_raw(raw_zone.read(store or settings.resolved_store_uri))
    stop = end or str(panel.index[-1] - pd.Timedelta(hours=forecaster.horizon - 1))
    result = run_backtest(panel, daily_origins(panel, start, stop), {"model": forecaster}, forecaster.horizon)
    console.print(result.summary.to_markdown(floatfmt=".4f"))


@app.command()
def serve(model: str = typer.Option("production", help="Registry alias, version number or model URI.")) -> None:
    """Serve a registered model over KServe V2 REST and gRPC (HTTP_PORT / GRPC_PORT) until stopped."""
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-m", "serving", "--model", model])


@app.command("compile")
def compile_pipelines() -> None:
    """Compile the pipelines to pipelines/compiled/*.yaml."""
    from pipelines.compile import compile_all

    for path in compile_all():
        console.print(f"wrote {path}")


if __name__ == "__main__":
    app()

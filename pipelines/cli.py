"""``cityscale run`` and ``cityscale compile``: the pipelines' commands, plugged into the ``cityscale`` CLI.

Registered through the ``cityscale.commands`` entry point (``pyproject.toml``): the library's CLI does not
import ``pipelines`` or ``serving``; this module, one layer up, uses all three.
"""

from __future__ import annotations

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

console = Console()


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


def compile_pipelines() -> None:
    """Compile the pipelines to pipelines/compiled/*.yaml."""
    from pipelines.compile import compile_all

    for path in compile_all():
        console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Attach ``run`` and ``compile`` to the ``cityscale`` CLI."""
    app.command("run")(run)
    app.command("compile")(compile_pipelines)

"""``cityscale gateway`` (the push gateway) and ``cityscale replay`` (the edge simulator)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

console = Console()


def gateway(
    host: str = typer.Option("0.0.0.0", help="Interface to listen on."),
    port: int = typer.Option(8090, help="HTTP port."),
) -> None:
    """Serve the push gateway: POST /v1/push journals counts, updates the online store, commits to the raw zone."""
    from cityscale.realtime.app import serve

    serve(get_settings(), host, port)


def replay(
    data: str = typer.Option(..., "--data", help="Melbourne wide CSV (../shared/data/melbourne_pcs), folder, Parquet."),
    speed: float = typer.Option(10.0, "--speed", help="Source hours pushed per second (0: as fast as accepted)."),
    target: str = typer.Option(..., "--target", help="Gateway URL, e.g. http://127.0.0.1:8090."),
    start: str = typer.Option("", help="First local hour to replay (default: the file's first)."),
    end: str = typer.Option("", help="Replay hours before this one (default: all)."),
    sensors: int = typer.Option(0, help="Replay only the first N sensors (0: all)."),
    seed: int = typer.Option(0, help="Seed of the jitter, late, duplicate and drop-out faults."),
    late: float = typer.Option(0.05, help="Share of records sent 1-3 hours late."),
    duplicates: float = typer.Option(0.05, help="Share of records sent twice."),
    dropout_hours: int = typer.Option(6, help="One sensor is silent this long, then sends its backlog (0: none)."),
    token: str = typer.Option(
        "", envvar="CITYSCALE_REALTIME_TOKEN", help="Bearer token of a gateway that requires one (the cluster's)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Replay real counts into the gateway as edge sensors would push them, with faults; report the outcome."""
    from cityscale.realtime.replay import ReplayOptions, load_counts
    from cityscale.realtime.replay import replay as run_replay

    if speed < 0:
        raise typer.BadParameter("--speed must be >= 0")
    try:
        df = load_counts(data, start or None, end or None, sensors)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    options = ReplayOptions(
        speed=speed,
        seed=seed,
        late_fraction=late,
        duplicate_fraction=duplicates,
        dropout_hours=dropout_hours,
        token=token,
    )
    report = run_replay(df, target, options)
    if json_out:
        console.print_json(json.dumps(report.as_dict()))
    else:
        table = Table(title=f"replay of {data} -> {target} ({report.seconds:.1f} s)")
        table.add_column("what")
        table.add_column("value", justify="right")
        for key, value in report.as_dict().items():
            if key != "errors":
                table.add_row(key, str(value))
        console.print(table)
        for error in report.errors[:5]:
            console.print(f"[red]{error}")
    if report.rejected:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach the real-time commands to the main CLI."""
    app.command("gateway")(gateway)
    app.command("replay")(replay)

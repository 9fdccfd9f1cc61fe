"""``cityscale features ...`` and ``cityscale feature-server``: build and serve the feature store."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

from cityscale.config import get_settings

features_app = typer.Typer(help="Feature platform (Feast by default; Tecton for licensees).", no_args_is_help=True)
console = Console()


@features_app.command("build")
def build(
    store: str = typer.Option("", help="Raw-zone root, file:// or gs:// (default: settings)."),
    features_dir: str = typer.Option("", help="Feature-store directory (default: <workdir>/features)."),
) -> None:
    """Compute the spec's features at each city's freshness hour, apply the Feast repo and materialize them."""
    from cityscale.features.compute import FeatureComputer
    from cityscale.features.feast_backend import FeastBackend

    settings = get_settings()
    if settings.feature_backend != "feast":
        raise typer.BadParameter("`features build` builds the Feast store; Tecton users run `tecton apply`")
    start = time.perf_counter()
    computer = FeatureComputer(store or settings.resolved_store_uri)
    backend = FeastBackend(settings, features_dir or None)
    info = backend.materialize_latest(computer)
    table = Table(title=f"feature store {backend.root} ({time.perf_counter() - start:.1f} s)")
    table.add_column("city")
    table.add_column("serves forecast_start", justify="right")
    for city, as_of in info.online_as_of.items():
        table.add_row(city, as_of)
    console.print(table)
    console.print(f"{info.n_sensors} sensors materialized into the online store; serve with `cityscale feature-server`")


def feature_server(
    store: str = typer.Option("", help="Raw-zone root the store is built from (default: settings)."),
    port: int = typer.Option(6566, help="Port of the Feast feature server."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 in a container)."),
    features_dir: str = typer.Option("", help="Feature-store directory (default: <workdir>/features)."),
    workers: int = typer.Option(1, help="gunicorn workers."),
    build_first: bool = typer.Option(True, "--build/--no-build", help="Build and materialize from --store first."),
) -> None:
    """Serve online features (Feast feature server: POST /get-online-features) for the store built from --store."""
    from cityscale.features.server import serve_forever

    settings = get_settings()
    if build_first:
        build(store=store, features_dir=features_dir)
    serve_forever(settings, features_dir or settings.resolved_features_dir, host, port, workers)


def register(app: typer.Typer) -> None:
    """Attach the feature commands to the main CLI."""
    app.add_typer(features_app, name="features")
    app.command("feature-server")(feature_server)

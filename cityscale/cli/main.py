"""The ``cityscale`` command line: one typer app, assembled from a module per command group.

The library's own groups are imported here. Commands that drive the callers of the library (``run`` and
``compile`` in ``pipelines/``, ``serve`` in ``serving/``) plug in through the ``cityscale.commands``
entry-point group declared in ``pyproject.toml``, so ``cityscale`` never imports its callers.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from cityscale.cli import data, features, models, monitor, realtime, training

COMMAND_GROUP = "cityscale.commands"


def build_app() -> typer.Typer:
    """The whole CLI: the library's command groups plus every installed ``cityscale.commands`` plug-in."""
    app = typer.Typer(
        help="CityScale: hourly pedestrian foot-traffic forecasts with uncertainty.", no_args_is_help=True
    )
    for group in (data, models, training, features, realtime, monitor):
        group.register(app)
    for entry in entry_points(group=COMMAND_GROUP):
        entry.load()(app)
    return app


app = build_app()


if __name__ == "__main__":
    app()

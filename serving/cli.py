"""``cityscale serve``: the model server's command, plugged into the ``cityscale`` CLI (entry point)."""

from __future__ import annotations

import typer


def serve(model: str = typer.Option("production", help="Registry alias, version number or model URI.")) -> None:
    """Serve a registered model over KServe V2 REST and gRPC (HTTP_PORT / GRPC_PORT) until stopped."""
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-m", "serving", "--model", model])


def register(app: typer.Typer) -> None:
    """Attach ``serve`` to the ``cityscale`` CLI."""
    app.command("serve")(serve)

"""``cityscale serve`` and ``deploy-serving``: the model server's commands, plugged into the ``cityscale`` CLI.

Registered through the ``cityscale.commands`` entry point. Nothing here imports kserve at start-up: kserve
parses ``sys.argv`` when imported, so it must only be imported once typer has parsed our flags.
"""

from __future__ import annotations

import typer


def serve(model: str = typer.Option("production", help="Registry alias, version number or model URI.")) -> None:
    """Serve a registered model over KServe V2 REST and gRPC (HTTP_PORT / GRPC_PORT) until stopped."""
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-m", "serving", "--model", model])


def deploy_serving(
    version: str = typer.Option("production", help="Registry version (or alias) to serve."),
    image: str = typer.Option(
        "", help="Container image (default: CITYSCALE_SERVING_IMAGE; a GPU predictor: CITYSCALE_IMAGE)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the manifests to --out, talk to no cluster."),
    out: str = typer.Option("build/manifests", help="Where --dry-run writes the YAML."),
    gpus: int = typer.Option(None, help="GPUs per predictor (default: settings)."),
    transformer: bool = typer.Option(False, "--transformer", help="Deploy the feature-fetching transformer too."),
) -> None:
    """Create or patch the KServe InferenceService for VERSION, wait Ready, roll back on failure, promote it."""
    from serving.rollout import rollout

    rollout(version=version, image=image, dry_run=dry_run, out=out, gpus=gpus, transformer=transformer)


def register(app: typer.Typer) -> None:
    """Attach ``serve`` and ``deploy-serving`` to the ``cityscale`` CLI."""
    app.command("serve")(serve)
    app.command("deploy-serving")(deploy_serving)

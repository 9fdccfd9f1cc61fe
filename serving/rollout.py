"""Deploy a registry version as the CityScale InferenceService (the pipeline's ``kserve`` deploy target).

``cityscale deploy-serving --version 0003 [--dry-run] [--out build/manifests] [--gpus 1] [--transformer]``
(``make deploy-serving``; ``python -m serving.rollout`` runs the same command): with ``--dry-run`` it only
writes the manifests (CPU and GPU variants of the configured mode) as YAML; otherwise it creates or patches
the InferenceService through the kubeconfig's cluster (or the in-cluster service account), waits for Ready,
rolls back on failure and, once Ready, points the registry's ``production`` alias at the version (so
registry and cluster agree).

kserve parses ``sys.argv`` when imported: typer parses our flags first (nothing the ``cityscale`` CLI imports
at start-up imports kserve) and :func:`rollout` cuts ``sys.argv`` before any kserve import, so they cannot
collide with kserve's own.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from cityscale import registry
from cityscale.config import Settings


def manifests(settings: Settings, version: str, image: str | None = None, **overrides: Any) -> dict[str, dict]:
    """``{file name: manifest}`` for the configured InferenceService and its GPU variant."""
    from serving.inference_service import ServingOptions, build_inference_service, to_manifest

    options = ServingOptions.from_settings(settings, version, image, **overrides)
    gpu = dataclasses.replace(options, gpus=max(options.gpus, 1))
    cpu = dataclasses.replace(options, gpus=0)
    return {
        "inference-service.yaml": to_manifest(build_inference_service(options)),
        "inference-service-cpu.yaml": to_manifest(build_inference_service(cpu)),
        "inference-service-gpu.yaml": to_manifest(build_inference_service(gpu)),
    }


def write_manifests(out_dir: str | Path, docs: dict[str, dict]) -> list[Path]:
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, doc in docs.items():
        path = out / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
    return paths


def deploy_to_kserve(
    version: str,
    registry_uri: str,
    settings: Settings,
    kserve_client: Any | None = None,
    image: str | None = None,
    **overrides: Any,
) -> str:
    """Roll ``version`` out as the InferenceService; promote it to ``production`` once Ready.

    Returns the version's storage URI (what the ``local`` target returns too). On failure the deployer has
    already restored the previous spec; the alias is not moved and the error propagates (the step fails).
    """
    from serving.inference_service import InferenceServiceDeployer, ServingOptions, build_inference_service

    if kserve_client is None:
        from kserve import KServeClient

        kserve_client = KServeClient()
    # The pods read the same registry the pipeline registered into (a gs:// bucket in the cluster).
    serving_settings = settings.model_copy(update={"registry_uri": registry_uri})
    options = ServingOptions.from_settings(serving_settings, version, image, **overrides)
    deployer = InferenceServiceDeployer(kserve_client, settings.serving_ready_timeout_s, settings.serving_ready_poll_s)
    deployer.deploy(build_inference_service(options))
    registry.set_alias(registry_uri, settings.model_name, "production", version)
    return registry.version_uri(registry_uri, settings.model_name, version)


def rollout(
    version: str = "production",
    image: str = "",
    dry_run: bool = False,
    out: str | Path = "build/manifests",
    gpus: int | None = None,
    transformer: bool = False,
) -> None:
    """``cityscale deploy-serving`` (``make deploy-serving``); the flags must already be parsed (see the docstring)."""
    sys.argv = sys.argv[:1]  # nothing left for kserve's import-time parser to misread
    settings = Settings()
    overrides: dict[str, Any] = {}
    if gpus is not None:
        overrides["gpus"] = gpus
    if transformer:
        overrides["transformer"] = True
    if dry_run:
        for path in write_manifests(out, manifests(settings, version, image or None, **overrides)):
            print(f"wrote {path}")
        return
    if not version.isdigit():
        version = registry.resolve(version, settings.resolved_registry_uri, settings.model_name)[1]
    uri = deploy_to_kserve(
        f"{int(version):04d}", settings.resolved_registry_uri, settings, image=image or None, **overrides
    )
    print(f"deployed {settings.model_name} {version} ({uri}) to namespace {settings.serving_namespace}")


if __name__ == "__main__":  # the `cityscale deploy-serving` command itself (serving/cli.py)
    import typer

    from serving.cli import deploy_serving

    typer.run(deploy_serving)

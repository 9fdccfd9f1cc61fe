"""Run the training pipeline on this machine with ``kfp.local`` (the embedded default).

Each task runs as a subprocess of the current interpreter (``use_venv=False``), so the installed
``cityscale`` package is what every component imports, exactly as in the project image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kfp import local

from cityscale import registry
from cityscale.config import Settings
from pipelines.training import PIPELINE_NAME, training_pipeline


@dataclass
class LocalRunResult:
    run_dir: Path
    passed: bool
    reason: str
    metrics: dict[str, float]
    deployed_version: str | None


def run_training_locally(
    settings: Settings,
    source: str = "",
    data_start: str = "",
    data_end: str = "",
    test_start: str = "2022-07-01",
    test_end: str = "",
) -> LocalRunResult:
    """Run the whole training pipeline under kfp.local and report what the gate decided."""
    root = Path(settings.resolved_pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    training_pipeline(
        store_uri=settings.resolved_store_uri,
        registry_uri=settings.resolved_registry_uri,
        source=source or str(settings.sample_data),
        data_start=data_start,
        data_end=data_end,
        test_start=test_start,
        test_end=test_end,
        max_epochs=settings.max_epochs,
        deploy_target="local",
    )
    (run_dir,) = set(root.glob(f"{PIPELINE_NAME}-*")) - before
    verdict = json.loads((run_dir / "evaluate" / "evaluation").read_text())
    production = registry.get_alias(settings.resolved_registry_uri, settings.model_name, "production")
    deployed = production["version"] if verdict["passed"] and production else None
    return LocalRunResult(run_dir, verdict["passed"], verdict["reason"], verdict["metrics"], deployed)

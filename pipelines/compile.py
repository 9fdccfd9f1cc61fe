"""Compile every pipeline to ``pipelines/compiled/<name>.yaml`` (deterministic output).

Two kinds of output, told apart by where they go:

- ``pipelines/compiled/`` (``make compile``): the committed YAML, always with the image ``cityscale:dev`` so
  that it is deterministic and its committed-YAML test stays stable. It is never uploaded.
- any other folder (``make compile CITYSCALE_IMAGE=<registry>/cityscale:<sha>`` -> ``build/pipelines/``, and
  ``make deploy``): the YAML a cluster runs, with an immutable image reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kfp import compiler

from cityscale.config import Settings
from components import IMAGE
from pipelines.batch_forecast import batch_forecast_pipeline
from pipelines.ingestion import ingestion_pipeline
from pipelines.monitoring import monitoring_pipeline
from pipelines.training import training_pipeline

COMPILED_DIR = Path(__file__).parent / "compiled"
# The image of the committed YAML: deterministic, and deliberately not pullable from any registry.
COMMITTED_IMAGE = "cityscale:dev"
# Key = compiled file name (<key>.yaml) and the `pipeline` that pipelines/schedules.yaml refers to.
PIPELINES = {
    "training": training_pipeline,
    "ingestion": ingestion_pipeline,
    "batch_forecast": batch_forecast_pipeline,
    "monitoring": monitoring_pipeline,
}


class CompileError(ValueError):
    """A compilation that must not happen; the message says why and what to do instead."""


def check_output(out_dir: Path, image: str, settings: Settings) -> None:
    """Refuse what the cluster cannot run or what would spoil the committed YAML (CompileError)."""
    if settings.feature_backend == "tecton":
        from cityscale.features.retrieval import TECTON_NOT_IN_PIPELINE_IMAGE

        raise CompileError(f"refusing to compile with CITYSCALE_FEATURE_BACKEND=tecton: {TECTON_NOT_IN_PIPELINE_IMAGE}")
    if out_dir.resolve() == COMPILED_DIR.resolve() and image != COMMITTED_IMAGE:
        raise CompileError(
            f"{COMPILED_DIR} keeps the committed YAML with image {COMMITTED_IMAGE}, not {image}: unset CITYSCALE_IMAGE "
            "for it, or compile a deployable image into another folder (make compile CITYSCALE_IMAGE=... writes "
            "build/pipelines/; make deploy compiles $REGISTRY/cityscale:$GIT_SHA itself)"
        )


def compile_all(out_dir: Path = COMPILED_DIR) -> list[Path]:
    """Compile every pipeline into ``out_dir`` with the image the components were imported with."""
    check_output(out_dir, IMAGE, Settings())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(path))
        written.append(path)
    return written


if __name__ == "__main__":
    try:
        for p in compile_all():
            print(p)
    except CompileError as exc:
        sys.exit(f"compile: {exc}")

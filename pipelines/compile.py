"""Compile every pipeline to ``pipelines/compiled/<name>.yaml`` (deterministic output)."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.batch_forecast import batch_forecast_pipeline
from pipelines.ingestion import ingestion_pipeline
from pipelines.monitoring import monitoring_pipeline
from pipelines.training import training_pipeline

COMPILED_DIR = Path(__file__).parent / "compiled"
# Key = compiled file name (<key>.yaml) and the `pipeline` that pipelines/schedules.yaml refers to.
PIPELINES = {
    "training": training_pipeline,
    "ingestion": ingestion_pipeline,
    "batch_forecast": batch_forecast_pipeline,
    "monitoring": monitoring_pipeline,
}


def compile_all(out_dir: Path = COMPILED_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in PIPELINES.items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(path))
        written.append(path)
    return written


if __name__ == "__main__":
    for p in compile_all():
        print(p)

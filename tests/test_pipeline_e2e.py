"""The training pipeline end to end under kfp.local on a small real slice."""

from __future__ import annotations

import json

import pytest

from cityscale import registry
from cityscale.config import Settings
from pipelines.local_run import run_training_locally

pytestmark = pytest.mark.e2e


def test_pipeline_runs_end_to_end_and_gate_decides_registration(tmp_path) -> None:
    settings = Settings(workdir=tmp_path, max_epochs=3)
    result = run_training_locally(settings, data_start="2022-03-01", test_start="2022-10-01")

    run = result.run_dir
    for produced in (
        "ingest/raw",
        "ingest/quality_report",
        "build-features/examples",
        "train/model/model.pt",
        "train/model/contract.json",
        "evaluate/report",
        "evaluate/evaluation",
    ):
        assert (run / produced).exists(), produced
    assert "Data quality report" in (run / "ingest/quality_report").read_text()
    report = (run / "evaluate/report").read_text()
    for method in ("model", "snaive24", "snaive168", "mean4w"):
        assert f"| {method}" in report
    verdict = json.loads((run / "evaluate/evaluation").read_text())
    assert verdict["passed"] == result.passed
    assert {"wape", "mase", "mae", "coverage", "pinball", "mean4w_wape"} <= set(verdict["metrics"])

    versions = registry.versions(settings.resolved_registry_uri, settings.model_name)
    production = registry.get_alias(settings.resolved_registry_uri, settings.model_name, "production")
    if result.passed:
        assert versions == ["0001"] and production["version"] == "0001"
        assert (run / "register").exists() and (run / "deploy").exists()
    else:
        assert versions == [] and production is None
        assert not (run / "register").exists()

"""Pipeline faults under kfp.local: a failed attempt is retried per the task's policy; a worse model never ships.

Each run costs 40-90 s on 2 cores, so these run in the full profile only (``make test-reliability``); the CI
profile checks the compiled retry policies (cheap). What kfp.local cannot show: caching across reruns of the
training pipeline, since its ingest and features tasks are deliberately never cached (new hours every run) and
tasks with ``Output[Metrics]`` never get a local cache hit (kfp.local's behaviour), so every downstream task reruns too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kfp import local
from reliability_profile import PROFILE

from cityscale import raw_zone, registry
from cityscale.config import Settings
from pipelines.ingestion import ingestion_pipeline
from pipelines.local_run import run_training_locally

REPO = Path(__file__).resolve().parents[2]
full_only = pytest.mark.skipif(PROFILE != "full", reason="kfp.local runs: CITYSCALE_RELIABILITY_PROFILE=full")
HOLD = (
    "import sys, time; from cityscale import raw_zone\n"
    "with raw_zone.writer_lock(sys.argv[1], timeout_s=600.0, stale_s=3600.0):\n"
    "    print('held', flush=True); time.sleep(float(sys.argv[2]))"
)


def _retry_policies(path: Path) -> dict[str, dict]:
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    return {name: task.get("retryPolicy", {}) for name, task in tasks.items()}


def test_ingest_and_feature_tasks_carry_a_retry_policy() -> None:
    settings = Settings()
    training = _retry_policies(REPO / "pipelines/compiled/training.yaml")
    ingestion = _retry_policies(REPO / "pipelines/compiled/ingestion.yaml")
    for policy in (training["ingest"], training["build-features"], ingestion["ingest"]):
        assert policy["maxRetryCount"] == settings.pipeline_task_retries >= 1
        assert policy["backoffDuration"] == f"{settings.pipeline_retry_backoff_s}s"


@full_only
@pytest.mark.e2e
def test_an_ingest_attempt_that_fails_is_retried_and_the_run_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw zone's writer lock is held past the ingest's lock timeout: attempt 1 fails, the retry lands the data."""
    settings = Settings(workdir=tmp_path)
    store = settings.resolved_store_uri
    hold_s = 15.0  # longer than the first attempt takes to fail, shorter than the backoff before the retry
    monkeypatch.setenv("CITYSCALE_RAW_ZONE_LOCK_TIMEOUT_S", "1")  # the task subprocesses inherit it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, store, str(hold_s)], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        began = time.monotonic()
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=settings.resolved_pipeline_root)
        ingestion_pipeline(
            store_uri=store, source=str(settings.sample_data), ingest_mode="snapshot", data_start="2022-10-01"
        )
        took = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    assert took >= settings.pipeline_retry_backoff_s, f"succeeded in {took:.0f} s: the first attempt did not fail"
    assert raw_zone.stats(store)["rows"] > 0 and raw_zone.stats(store)["duplicate_keys"] == 0


@full_only
@pytest.mark.e2e
def test_a_deliberately_worse_model_is_never_registered_or_deployed(
    trained_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production serves a trained model; the candidate keeps its random initial weights (learning rate 0)."""
    registry_dir = tmp_path / "registry"
    shutil.copytree(Settings(workdir=trained_workdir).resolved_registry_uri, registry_dir)
    settings = Settings(workdir=tmp_path, registry_uri=str(registry_dir), max_epochs=1)
    name = settings.model_name
    before = (registry.versions(str(registry_dir), name), registry.get_alias(str(registry_dir), name, "production"))
    monkeypatch.setenv("CITYSCALE_LEARNING_RATE", "0")
    result = run_training_locally(settings, data_start="2022-06-01", test_start="2022-10-01")
    assert not result.passed, result.reason
    assert result.deployed_version is None
    after = (registry.versions(str(registry_dir), name), registry.get_alias(str(registry_dir), name, "production"))
    assert after == before
    assert not (result.run_dir / "register").exists() and not (result.run_dir / "deploy").exists()

"""The training entry point in every CPU mode, as real subprocesses on a small real slice.

``python -m cityscale.training.train`` one process vs two-process DDP (gloo), and a run killed with SIGKILL
mid-training that, rerun with the same arguments, resumes from its last checkpoint and ends at the
same validation loss as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.ingestion.run import ingest_snapshot
from cityscale.model.contract import WEIGHTS_FILE
from cityscale.model.examples import cut_examples, origin_grid
from cityscale.panel import Panel
from cityscale.training.train import RESULT_PREFIX

EPOCHS = 5
TOLERANCE = 0.02  # relative difference of final validation losses
ENV = {
    "CITYSCALE_HIDDEN_SIZE": "128",
    "CITYSCALE_BATCH_SIZE": "256",
    "OMP_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


@pytest.fixture(scope="module")
def examples_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight sensors of the bundled sample, Jan-Jun 2022, origins every 2 h."""
    work = tmp_path_factory.mktemp("train-dist")
    settings = Settings(workdir=work)
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start="2022-01-01", settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(panel.index[0], pd.Timestamp("2022-07-01"), 2)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    sensors = sorted(set(examples.sensor_ids.tolist()))[:8]
    examples = examples.select(pd.Series(examples.sensor_ids).isin(sensors).to_numpy())
    path = work / "examples.npz"
    examples.save(path)
    return path


def _cmd(examples: Path, out: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "cityscale.training.train", "--examples", str(examples), "--out", str(out)]
    return [*base, "--max-epochs", str(EPOCHS), "--accelerator", "cpu", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert len(lines) == 1, stdout  # only rank 0 reports
    return json.loads(lines[0][len(RESULT_PREFIX) :])


def _train(examples: Path, out: Path, *extra: str) -> tuple[dict, str]:
    proc = subprocess.run(_cmd(examples, out, *extra), env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _result(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def single_run(examples_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("single") / "model"
    result, log = _train(examples_path, out)
    assert "world_size=1 (num_nodes=1 x devices=1)" in log
    assert result["world_size"] == 1 and result["start_epoch"] == 0 and result["final_epoch"] == EPOCHS
    assert (out / WEIGHTS_FILE).is_file()
    return result


def test_ddp_two_cpu_processes_match_one(examples_path: Path, single_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result, log = _train(examples_path, out, "--devices", "2", "--strategy", "ddp")
    assert result["world_size"] == 2
    for rank in (0, 1):
        assert f"rank {rank}/2: world_size=2 (num_nodes=1 x devices=2), process group size 2" in log
    assert json.loads((out / "contract.json").read_text())["val_loss"] == pytest.approx(result["val_loss"])
    assert result["val_loss"] == pytest.approx(single_run["val_loss"], rel=TOLERANCE)


def test_killed_run_resumes_from_last_checkpoint(examples_path: Path, single_run: dict, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    cmd = _cmd(examples_path, out, "--ckpt-dir", str(ckpt), "--ckpt-every-epochs", "1")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not list(ckpt.glob("epoch=*.ckpt")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    assert not (out / WEIGHTS_FILE).exists()

    result, log = _train(examples_path, out, "--ckpt-dir", str(ckpt), "--ckpt-every-epochs", "1")
    assert result["resumed_from"] is not None, log[-3000:]
    assert 1 <= result["start_epoch"] < EPOCHS  # the epoch counter continues, not from 0
    assert result["final_epoch"] == EPOCHS
    assert result["epochs_run"] == EPOCHS - result["start_epoch"]
    assert result["val_loss"] == pytest.approx(single_run["val_loss"], rel=TOLERANCE)
    assert (out / WEIGHTS_FILE).is_file() and (ckpt / "last.ckpt").is_file()

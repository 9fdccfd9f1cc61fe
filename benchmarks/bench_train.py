"""Training throughput: one process vs two-process DDP on CPU (gloo), same data, model and seed.

Both runs go through the one entry point (``python -m cityscale.training.train``) as subprocesses; the
global batch is the same, so the two runs are equivalent and their final validation losses must
agree within 2 %. Prints a table and writes build/bench/train.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result  # noqa: E402

from cityscale import raw_zone  # noqa: E402
from cityscale.config import Settings  # noqa: E402
from cityscale.ingestion.run import ingest_snapshot  # noqa: E402
from cityscale.model.examples import cut_examples, origin_grid  # noqa: E402
from cityscale.panel import Panel  # noqa: E402
from cityscale.training.train import RESULT_PREFIX  # noqa: E402

EPOCHS = 4
TOLERANCE = 0.02


def _run(examples: Path, out: Path, *extra: str) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "cityscale.training.train", "--examples", str(examples), "--out", str(out)]
    cmd += ["--max-epochs", str(EPOCHS), "--accelerator", "cpu", *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :]), wall


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cityscale-bench-train-"))
    settings = Settings(workdir=work)
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start="2022-01-01", settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(panel.index[0], pd.Timestamp("2022-09-01"), 2)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    path = work / "examples.npz"
    examples.save(path)

    rows: dict[str, dict] = {}
    results = {}
    for label, extra in (("1 process", ()), ("DDP 2 processes (gloo)", ("--devices", "2", "--strategy", "ddp"))):
        result, wall = _run(path, work / label.split()[0], *extra)
        results[label] = result
        rows[f"train {EPOCHS} epochs, CPU, {label}"] = {
            "world_size": result["world_size"],
            "train_samples": result["n_train_samples"],
            "fit_seconds": result["fit_seconds"],
            "samples_per_s": result["samples_per_s"],
            "wall_seconds_incl_startup": wall,
            "val_loss": result["val_loss"],
        }
    single, ddp = results.values()
    rel = abs(ddp["val_loss"] - single["val_loss"]) / single["val_loss"]
    rows["equivalence (DDP vs 1 process)"] = {
        "val_loss_rel_diff": rel,
        "tolerance": TOLERANCE,
        "passed": rel <= TOLERANCE,
        "speedup": ddp["samples_per_s"] / single["samples_per_s"],
    }
    write_result("train", rows)
    if rel > TOLERANCE:
        raise SystemExit(f"DDP final val loss differs by {rel:.2%} (> {TOLERANCE:.0%})")


if __name__ == "__main__":
    main()

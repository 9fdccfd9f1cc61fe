"""Compiling is deterministic across processes, not only within one (pipelines/kfp_determinism.py says why).

The protobuf runtime seeds its map hashing per process, so a single in-process compile (tests/test_compile.py)
can match the committed YAML by luck; several fresh processes cannot, unless the naming no longer depends on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kfp.compiler import pipeline_spec_builder

from pipelines.kfp_determinism import merge_component_spec_in_name_order

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "compiled"
PROCESSES = 6  # without the fix, all six matched the committed monitoring.yaml in about 2 % of tries


def compile_in_a_fresh_process(out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCALE_")}
    code = f"from pathlib import Path; from pipelines.compile import compile_all; compile_all(Path({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_every_process_compiles_the_committed_yaml(tmp_path) -> None:
    outs = [tmp_path / f"run{i}" for i in range(PROCESSES)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(compile_in_a_fresh_process, outs))
    for committed in sorted(COMPILED.glob("*.yaml")):
        for out in outs:
            assert (out / committed.name).read_text() == committed.read_text(), f"{out.name}/{committed.name}"


def test_the_patch_is_in_place() -> None:
    assert pipeline_spec_builder._merge_component_spec is merge_component_spec_in_name_order

"""A short soak of the real model server (benchmarks/bench_soak.py, the same code as ``make bench-soak``).

CI profile: 12 s at concurrency 8 (half REST, half gRPC); full profile: 120 s at 16. Asserts zero errors,
bounded memory growth after warm-up and that neither protocol starves: with forecasts on the server's event loop
gRPC got 7 % of REST's throughput under mixed load, with them in the predict threads 90-99 %
(docs/benchmarks.md); the floor here (25 %) leaves room for the shared CI machine. Latency is bounded loosely
(p99 < 2 s: no stalls), since test runs share 2 cores with other jobs; ``make bench-soak`` holds the real p99
target (100 ms), the 40 % balance, the p99-versus-alone factor and the drift check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from reliability_profile import PROFILE, SIZES

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.panel import Panel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_soak  # noqa: E402

pytestmark = pytest.mark.server


def test_soak_has_no_errors_no_memory_growth_and_bounded_p99(model_server, trained_workdir) -> None:
    sensors = list(Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri)).sensor_ids)
    rows = bench_soak.run_soak(model_server, sensors, SIZES.soak_seconds, SIZES.soak_concurrency, p99_limit_ms=2000)
    print(f"\nsoak profile={PROFILE}: {rows}")
    check = rows["check"]
    assert rows["totals"]["errors"] == 0, check["error_kinds"]
    assert rows["totals"]["requests"] > 10 * SIZES.soak_seconds, "the soak barely sent anything"
    assert check["memory_ok"], rows["server_rss"]
    assert check["rest_p99_ok"] and check["grpc_p99_ok"], rows
    assert check["balance"] >= 0.25, f"one protocol starves the other under mixed load: {rows}"
    assert model_server.process.poll() is None

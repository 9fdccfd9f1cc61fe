"""Soak on loopback: the real model server under sustained mixed REST + gRPC load, its memory watched over time.

One ``python -m serving`` child process (one worker, as in a pod). ``SOAK_CONCURRENCY`` (default 16) closed-loop
clients, half V2 REST JSON (httpx), half V2 gRPC (grpc.aio), send forecasts for 1 to 12 random sensors from one of
240 hourly starts (so the calendar cache and the batch paths are exercised, not one cached answer) for
``SOAK_SECONDS`` (default 300). The server's RSS (psutil) is sampled every second.

Guarantees checked (printed, written to build/bench/soak.json, exit 1 when missed):
  errors            0 (every answer a 200 with the four outputs of the contract)
  memory            RSS growth after the warm-up (the first ``WARMUP_FRACTION`` of the run) < 50 MB
  latency           p99 per protocol < ``SOAK_P99_LIMIT_MS`` (100 ms: an idle 2-core machine at concurrency 16),
                    and the last tenth's p99 at most 1.5x the first tenth's after warm-up (no degradation)
The serving targets of bench_serving.py (ratios to a bare kserve model) stay that benchmark's job.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BENCH_DIR, latency_summary, write_result  # noqa: E402
from bench_serving import _body, _ensure_model, _grpc_request  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "16"))
WARMUP_FRACTION = 0.2
RSS_GROWTH_LIMIT_MB = 50.0
P99_LIMIT_MS = float(os.environ.get("SOAK_P99_LIMIT_MS", "100"))
P99_DRIFT_LIMIT = 1.5
WINDOWS = 10
OUTPUTS = {"p10", "p50", "p90", "target_time"}


def _starts() -> list[str]:
    """240 hourly starts from 2022-10-01 (each has a week of history in the bundled sample's raw zone)."""
    import pandas as pd

    return [f"{t:%Y-%m-%dT%H:%M:%S}" for t in pd.date_range("2022-10-01", periods=240, freq="h")]


async def _soak(server: Any, sensors: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """Run the load; returns per-request (protocol, start time, latency, ok) records and RSS samples."""
    import grpc
    import httpx
    import psutil
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    proc = psutil.Process(server.process.pid)
    starts = _starts()
    records: list[tuple[str, float, float, bool]] = []
    rss: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    t_begin = time.perf_counter()
    deadline = t_begin + seconds
    url = f"{server.http_url}/v2/models/cityscale/infer"

    def request_args(rng: random.Random) -> tuple[list[str], str]:
        return rng.sample(sensors, rng.randint(1, len(sensors))), rng.choice(starts)

    async def sample_rss() -> None:
        while time.perf_counter() < deadline:
            rss.append((time.perf_counter() - t_begin, proc.memory_info().rss / 2**20))
            await asyncio.sleep(1.0)

    async def rest_worker(client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while (t0 := time.perf_counter()) < deadline:
            chosen, start = request_args(rng)
            body = _body(chosen)
            body["inputs"][1]["data"] = [start]
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200 and {o["name"] for o in response.json()["outputs"]} >= OUTPUTS
                if not ok:
                    errors[f"rest {response.status_code}"] = errors.get(f"rest {response.status_code}", 0) + 1
            except Exception as exc:  # a transport error is a soak failure too: count it, keep going
                ok = False
                errors[f"rest {type(exc).__name__}"] = errors.get(f"rest {type(exc).__name__}", 0) + 1
            records.append(("rest", t0 - t_begin, time.perf_counter() - t0, ok))

    async def grpc_worker(stub: Any, seed: int) -> None:
        rng = random.Random(seed)
        while (t0 := time.perf_counter()) < deadline:
            chosen, start = request_args(rng)
            request = _grpc_request(pb, chosen)
            request.inputs[1].contents.bytes_contents[0] = start.encode()
            try:
                reply = await stub.ModelInfer(request, timeout=30)
                ok = {o.name for o in reply.outputs} >= OUTPUTS and list(reply.outputs[0].shape)[0] == len(chosen)
                if not ok:
                    errors["grpc bad reply"] = errors.get("grpc bad reply", 0) + 1
            except grpc.RpcError as exc:
                ok = False
                errors[f"grpc {exc.code().name}"] = errors.get(f"grpc {exc.code().name}", 0) + 1
            records.append(("grpc", t0 - t_begin, time.perf_counter() - t0, ok))

    limits = httpx.Limits(max_connections=concurrency)
    async with (
        httpx.AsyncClient(limits=limits, timeout=30) as client,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        n_rest = max(1, concurrency // 2)
        workers = [rest_worker(client, i) for i in range(n_rest)]
        workers += [grpc_worker(stub, 1000 + i) for i in range(max(1, concurrency - n_rest))]
        await asyncio.gather(sample_rss(), *workers)
    return {"records": records, "rss": rss, "errors": errors}


def summarise(
    raw: dict[str, Any], seconds: float, concurrency: int, p99_limit_ms: float = P99_LIMIT_MS
) -> dict[str, dict[str, Any]]:
    """Rows for the table: per protocol latency/throughput after warm-up, memory, drift, and the checks."""
    warm = seconds * WARMUP_FRACTION
    rows: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    measured = seconds - warm
    for proto in ("rest", "grpc"):
        after = [r for r in raw["records"] if r[0] == proto and r[1] >= warm]
        latencies = [r[2] for r in after if r[3]]
        row: dict[str, Any] = {**latency_summary(latencies), "rps": len(after) / measured}
        width = measured / WINDOWS
        windows = [[r[2] for r in after if r[3] and warm + i * width <= r[1] < warm + (i + 1) * width] for i in (0, 9)]
        first, last = (latency_summary(w)["p99_ms"] if w else float("nan") for w in windows)
        row.update({"p99_first_window_ms": first, "p99_last_window_ms": last})
        rows[f"{proto}_c{concurrency // 2}"] = row
        checks[f"{proto}_p99_ok"] = row["p99_ms"] < p99_limit_ms
        checks[f"{proto}_drift_ok"] = last <= P99_DRIFT_LIMIT * first
    rss = raw["rss"]
    base = [mb for t, mb in rss if t < warm][-3:] or [rss[0][1]]
    after_warm = [mb for t, mb in rss if t >= warm] or [rss[-1][1]]
    growth = max(after_warm) - max(base)
    rows["server_rss"] = {
        "start_mb": rss[0][1],
        "after_warmup_mb": max(base),
        "peak_mb": max(mb for _, mb in rss),
        "end_mb": rss[-1][1],
        "growth_after_warmup_mb": growth,
        "samples": len(rss),
    }
    total = len(raw["records"])
    failed = sum(1 for r in raw["records"] if not r[3])
    rows["totals"] = {"requests": total, "errors": failed, "seconds": seconds, "concurrency": concurrency}
    checks.update({"errors_ok": failed == 0, "memory_ok": growth < RSS_GROWTH_LIMIT_MB})
    rows["check"] = {**checks, "error_kinds": str(raw["errors"]) if raw["errors"] else ""}
    return rows


def run_soak(
    server: Any, sensors: list[str], seconds: float, concurrency: int, p99_limit_ms: float = P99_LIMIT_MS
) -> dict[str, dict[str, Any]]:
    """The soak against an already running server (also used by tests/reliability with a short duration)."""
    raw = asyncio.run(_soak(server, sensors, seconds, concurrency))
    return summarise(raw, seconds, concurrency, p99_limit_ms)


def main() -> None:
    from cityscale import raw_zone
    from cityscale.config import Settings
    from cityscale.panel import Panel
    from serving.local_server import local_model_server

    workdir = _ensure_model()
    sensors = list(Panel.from_raw(raw_zone.read(Settings(workdir=workdir).resolved_store_uri)).sensor_ids)
    env = {"CITYSCALE_WORKDIR": str(workdir), "CITYSCALE_FEATURE_SERVER_URL": "", "FEAST_FEATURE_SERVER_URL": ""}
    print(f"soak: {SECONDS:.0f} s, concurrency {CONCURRENCY} (half REST, half gRPC), {len(sensors)} sensors")
    with local_model_server(env=env, log_dir=BENCH_DIR / "serving_work") as server:
        rows = run_soak(server, sensors, SECONDS, CONCURRENCY)
    write_result("soak", rows)
    failed = [k for k, v in rows["check"].items() if k.endswith("_ok") and not v]
    print("soak guarantees met" if not failed else f"soak guarantees missed: {failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

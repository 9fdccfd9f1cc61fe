"""Soak on loopback: the real model server under sustained mixed REST + gRPC load, its memory watched over time.

One ``python -m serving`` child process (one worker, as in a pod). ``SOAK_CONCURRENCY`` (default 16) closed-loop
clients, half V2 REST JSON (httpx), half V2 gRPC (grpc.aio), send forecasts for 1 to 12 random sensors from one of
240 hourly starts (so the calendar cache and the batch paths are exercised, not one cached answer) for
``SOAK_SECONDS`` (default 300), each protocol's clients in their own process (one event loop each). The server's
RSS (psutil) is sampled every second. In the default configuration the predictor's forecast cache answers a
(sensor, start) pair it has seen (2,880 pairs here), so most rows are hits after the first minute; the share is
reported (``forecast_cache_hit_pct``), and ``CITYSCALE_SERVING_FORECAST_CACHE_SIZE=0`` runs the model every time.

Before the mixed soak, each protocol runs alone for ``SOAK_SOLO_SECONDS`` (default 30; 0 skips it) at half the
concurrency, against the same server: the reference its mixed-load latency is held to.

Guarantees checked (printed, written to build/bench/soak.json, exit 1 when missed):
  errors            0 (every answer a 200 with the four outputs of the contract)
  memory            RSS growth after the warm-up (the first ``WARMUP_FRACTION`` of the run) < 50 MB
  latency           p99 per protocol < ``SOAK_P99_LIMIT_MS`` (100 ms: an idle 2-core machine at concurrency 16),
                    and the last tenth's p99 at most 1.5x the first tenth's after warm-up (no degradation)
  fairness          neither protocol below ``BALANCE_MIN`` (40 %) of the other's req/s under mixed load, and each
                    protocol's mixed p99 at most ``SOLO_P99_FACTOR`` (3x) its p99 alone (when the solo runs ran)
The serving targets of bench_serving.py (ratios to a bare kserve model) stay that benchmark's job. Server settings
come from the environment (``CITYSCALE_SERVING_*``), so ``CITYSCALE_SERVING_PREDICT_THREADS=-1 make bench-soak``
measures forecasts on the event loop, the configuration before the predict threads.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import forecast_cache_hit_share, latency_summary, wait_for_inlined_trees, write_result  # noqa: E402
from bench_serving import _body, _ensure_model, _grpc_request  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
SOLO_SECONDS = float(os.environ.get("SOAK_SOLO_SECONDS", "30"))
BALANCE_MIN = 0.4
SOLO_P99_FACTOR = 3.0
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


async def _load(proto: str, http_url: str, grpc_target: str, sensors: list[str], t_end: float, workers: int):
    """One protocol's closed-loop workers until wall-clock ``t_end``: (protocol, t, latency, ok) records, errors."""
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    starts = _starts()
    records: list[tuple[str, float, float, bool]] = []
    errors: dict[str, int] = {}
    url = f"{http_url}/v2/models/cityscale/infer"

    def failed(kind: str) -> bool:
        errors[kind] = errors.get(kind, 0) + 1
        return False

    async def rest_worker(client: httpx.AsyncClient, rng: random.Random) -> None:
        while (t0 := time.time()) < t_end:
            chosen = rng.sample(sensors, rng.randint(1, len(sensors)))
            body = _body(chosen)
            body["inputs"][1]["data"] = [rng.choice(starts)]
            t1 = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                ok = response.status_code == 200 and {o["name"] for o in response.json()["outputs"]} >= OUTPUTS
                ok = ok or failed(f"rest {response.status_code}")
            except Exception as exc:  # a transport error is a soak failure too: count it, keep going
                ok = failed(f"rest {type(exc).__name__}")
            records.append((proto, t0, time.perf_counter() - t1, ok))

    async def grpc_worker(stub: Any, rng: random.Random) -> None:
        while (t0 := time.time()) < t_end:
            chosen = rng.sample(sensors, rng.randint(1, len(sensors)))
            request = _grpc_request(pb, chosen)
            request.inputs[1].contents.bytes_contents[0] = rng.choice(starts).encode()
            t1 = time.perf_counter()
            try:
                reply = await stub.ModelInfer(request, timeout=30)
                ok = {o.name for o in reply.outputs} >= OUTPUTS and list(reply.outputs[0].shape)[0] == len(chosen)
                ok = ok or failed("grpc bad reply")
            except grpc.RpcError as exc:
                ok = failed(f"grpc {exc.code().name}")
            records.append((proto, t0, time.perf_counter() - t1, ok))

    if proto == "rest":
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=workers), timeout=30) as client:
            await asyncio.gather(*(rest_worker(client, random.Random(i)) for i in range(workers)))
    else:
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(*(grpc_worker(stub, random.Random(1000 + i)) for i in range(workers)))
    return records, errors


def _client_process(args: tuple) -> tuple[list, dict]:
    return asyncio.run(_load(*args))


def _soak(
    server: Any, sensors: list[str], seconds: float, concurrency: int, protocols: tuple[str, ...] = ("rest", "grpc")
) -> dict[str, Any]:
    """Each protocol's clients in their own process (one event loop each: neither starves the other), RSS sampled.

    ``concurrency // 2`` clients per protocol, so a solo run (one protocol) is half of the mixed load.
    """
    import psutil

    proc = psutil.Process(server.process.pid)
    t_begin = time.time()
    t_end = t_begin + seconds
    half = max(1, concurrency // 2)
    jobs = [(p, server.http_url, server.grpc_target, sensors, t_end, half) for p in protocols]
    rss: list[tuple[float, float]] = []
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_client_process, job) for job in jobs]
        while time.time() < t_end:
            rss.append((time.time() - t_begin, proc.memory_info().rss / 2**20))
            time.sleep(1.0)
        results = [f.result() for f in futures]
    records = [(p, t - t_begin, lat, ok) for recs, _ in results for p, t, lat, ok in recs]
    errors = {k: v for _, errs in results for k, v in errs.items()}
    return {"records": records, "rss": rss, "errors": errors}


def _protocol_row(raw: dict[str, Any], proto: str, seconds: float) -> dict[str, Any]:
    """One protocol's latency, throughput and first/last-tenth p99, after the warm-up."""
    warm = seconds * WARMUP_FRACTION
    measured = seconds - warm
    after = [r for r in raw["records"] if r[0] == proto and r[1] >= warm]
    latencies = [r[2] for r in after if r[3]]
    row: dict[str, Any] = {**latency_summary(latencies), "rps": len(after) / measured}
    width = measured / WINDOWS
    windows = [[r[2] for r in after if r[3] and warm + i * width <= r[1] < warm + (i + 1) * width] for i in (0, 9)]
    first, last = (latency_summary(w)["p99_ms"] if w else float("nan") for w in windows)
    row.update({"p99_first_window_ms": first, "p99_last_window_ms": last})
    return row


def run_solo(server: Any, sensors: list[str], seconds: float, concurrency: int) -> dict[str, dict[str, Any]]:
    """Each protocol alone, one after the other, at ``concurrency // 2``: {protocol: latency/throughput row}."""
    return {p: _protocol_row(_soak(server, sensors, seconds, concurrency, (p,)), p, seconds) for p in ("rest", "grpc")}


def summarise(
    raw: dict[str, Any],
    seconds: float,
    concurrency: int,
    p99_limit_ms: float = P99_LIMIT_MS,
    solo: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rows for the table: per protocol latency/throughput after warm-up, memory, drift, fairness, and the checks."""
    warm = seconds * WARMUP_FRACTION
    rows: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    for proto in ("rest", "grpc"):
        row = _protocol_row(raw, proto, seconds)
        rows[f"{proto}_c{concurrency // 2}"] = row
        checks[f"{proto}_p99_ok"] = row["p99_ms"] < p99_limit_ms
        checks[f"{proto}_drift_ok"] = row["p99_last_window_ms"] <= P99_DRIFT_LIMIT * row["p99_first_window_ms"]
        if solo and proto in solo:
            rows[f"{proto}_alone_c{concurrency // 2}"] = solo[proto]
            factor = row["p99_ms"] / solo[proto]["p99_ms"]
            rows[f"{proto}_c{concurrency // 2}"]["p99_vs_alone"] = factor
            checks[f"{proto}_p99_vs_alone_ok"] = factor <= SOLO_P99_FACTOR
    rest_rps, grpc_rps = (rows[f"{p}_c{concurrency // 2}"]["rps"] for p in ("rest", "grpc"))
    balance = min(rest_rps, grpc_rps) / max(rest_rps, grpc_rps, 1e-9)
    checks["balance"] = balance
    checks["balance_ok"] = balance >= BALANCE_MIN
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
    server: Any,
    sensors: list[str],
    seconds: float,
    concurrency: int,
    p99_limit_ms: float = P99_LIMIT_MS,
    solo: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The soak against an already running server (also used by tests/reliability with a short duration)."""
    raw = _soak(server, sensors, seconds, concurrency)
    return summarise(raw, seconds, concurrency, p99_limit_ms, solo)


def main() -> None:
    from cityscale import raw_zone
    from cityscale.config import Settings
    from cityscale.panel import Panel
    from serving.local_server import local_model_server

    workdir = _ensure_model()
    sensors = list(Panel.from_raw(raw_zone.read(Settings(workdir=workdir).resolved_store_uri)).sensor_ids)
    env = {"CITYSCALE_WORKDIR": str(workdir), "CITYSCALE_FEATURE_SERVER_URL": "", "FEAST_FEATURE_SERVER_URL": ""}
    print(f"soak: {SECONDS:.0f} s, concurrency {CONCURRENCY} (half REST, half gRPC), {len(sensors)} sensors")
    with local_model_server(env=env, log_dir=workdir) as server:
        print(f"inlined trees serving after {wait_for_inlined_trees(server.http_url):.0f} s")
        solo = None
        if SOLO_SECONDS > 0:
            print(f"each protocol alone first: {SOLO_SECONDS:.0f} s at concurrency {CONCURRENCY // 2}")
            solo = run_solo(server, sensors, SOLO_SECONDS, CONCURRENCY)
        rows = run_soak(server, sensors, SECONDS, CONCURRENCY, solo=solo)
        hit_share = forecast_cache_hit_share(server.http_url)  # repeated (sensor, start, window) rows: cache hits
        rows["totals"]["forecast_cache_hit_pct"] = None if hit_share is None else round(100 * hit_share, 1)
    latency = {k: v for k, v in rows.items() if k.startswith(("rest", "grpc"))}
    path = write_result("soak", latency)  # the table: latency per protocol; the JSON also gets the rest
    payload = json.loads(path.read_text())
    payload["results"].update(rows)
    path.write_text(json.dumps(payload, indent=2))
    for case in ("server_rss", "totals", "check"):
        values = (f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[case].items())
        print(f"{case}: " + ", ".join(values))
    failed = [k for k, v in rows["check"].items() if k.endswith("_ok") and not v]
    print("soak guarantees met" if not failed else f"soak guarantees missed: {failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

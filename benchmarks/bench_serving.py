"""Serving benchmark on loopback: the full CityScale predictor vs a bare kserve model, same run, same client.

Servers (real ``kserve.ModelServer`` child processes, one worker, as in a pod):
  bare       ``serving.constant_model``: same V2 output shapes, a constant answer (kserve's own floor)
  cityscale  ``python -m serving``: validation, raw-zone history, calendar, model forward, response; default
             configuration, so a repeated request is answered by the forecast cache (serving/caches.py)
  uncached   the same with ``CITYSCALE_SERVING_FORECAST_CACHE_SIZE=0``: every request runs the model (reported)
Load: bounded closed loops (asyncio; httpx for REST JSON, grpc.aio for gRPC V2) at concurrency 1 and 8,
``BENCH_SECONDS`` (default 12) each, one sensor per request. Then a request for all sensors at once
(the 12 of the bundled sample) and a full 512-sensor batch, sequential, for their p50.

Targets (2 cores): full-path throughput >= 0.5x bare; full-path p99 < 3x bare's; all-sensors p50 < 20 ms;
512-sensor p50 <= 2x bare's.
The client shares the machine's cores with the server, so absolute numbers are conservative; ratios are
what the targets compare. Writes build/bench/serving.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BENCH_DIR, latency_summary, wait_for_inlined_trees, write_result  # noqa: E402

from cityscale.model.contract import CONTRACT_VERSION  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))
WARMUP_S = 1.5
WORK = BENCH_DIR / f"serving_work_v{CONTRACT_VERSION}"  # a model of an older contract is not reused
START = "2022-10-01T00:00:00"
SENSOR = "FliS_T"


def _ensure_model(workdir: Path = WORK) -> Path:
    """A workdir whose registry serves a production model (trained briefly: speed, not accuracy, is measured)."""
    import pandas as pd

    from cityscale import raw_zone, registry
    from cityscale.config import Settings
    from cityscale.ingestion.run import ingest_snapshot
    from cityscale.model.examples import cut_examples, origin_grid
    from cityscale.panel import Panel
    from cityscale.training.train import train_model

    workdir = workdir.absolute()
    # Every booster round kept (no early stop on this small training set): the trees cost what a full model's do.
    settings = Settings(workdir=workdir, max_epochs=1, gbm_early_stopping_rounds=Settings().gbm_rounds)
    if registry.get_alias(settings.resolved_registry_uri, settings.model_name, "production"):
        return workdir
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start="2022-01-01", settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(panel.index[0], pd.Timestamp("2022-09-01"), 24)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    train_model(examples, workdir / "model", settings)
    version = registry.register(workdir / "model", settings.resolved_registry_uri, settings.model_name, {}, "bench")
    registry.set_alias(settings.resolved_registry_uri, settings.model_name, "production", version)
    return workdir


def _body(sensors: list[str]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [len(sensors)], "data": sensors},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [1], "data": [START]},
        ]
    }


def _grpc_request(pb, sensors: list[str]):
    tensors = []
    for name, values in (("sensor_id", sensors), ("forecast_start", [START])):
        tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(values)])
        tensor.contents.bytes_contents.extend(v.encode() for v in values)
        tensors.append(tensor)
    return pb.ModelInferRequest(model_name="cityscale", inputs=tensors)


async def _closed_loop(call, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` workers each sending back-to-back requests for ``seconds`` (after a warm-up)."""
    latencies: list[float] = []
    errors = 0
    stop_warm = time.perf_counter() + WARMUP_S
    deadline = stop_warm + seconds

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                await call()
            except Exception:
                errors += 1
                continue
            t1 = time.perf_counter()
            if t0 >= stop_warm:
                latencies.append(t1 - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    summary = latency_summary(latencies)
    summary["rps"] = len(latencies) / seconds
    summary["errors"] = errors
    return summary


async def _load(servers: dict[str, Any], sensors: list[str]) -> dict[str, dict[str, float]]:
    """Every case on each server back to back (bare, then cityscale ...), so all see the same machine state."""
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    rows: dict[str, dict[str, float]] = {}
    body = _body([SENSOR])
    request = _grpc_request(pb, [SENSOR])
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16), timeout=30) as client:
        for concurrency in (1, 8):
            for name, server in servers.items():
                url = f"{server.http_url}/v2/models/cityscale/infer"

                async def rest(url: str = url) -> None:
                    response = await client.post(url, json=body)
                    response.raise_for_status()

                rows[f"{name}/rest_c{concurrency}"] = await _closed_loop(rest, concurrency, SECONDS)
        for case, batch in (("all_sensors", sensors), ("batch_512", (sensors * 64)[:512])):
            big = _body(batch)
            for name, server in servers.items():
                url = f"{server.http_url}/v2/models/cityscale/infer"
                samples = []
                for i in range(60):
                    t0 = time.perf_counter()
                    response = await client.post(url, json=big)
                    response.raise_for_status()
                    if i >= 10:
                        samples.append(time.perf_counter() - t0)
                rows[f"{name}/rest_{case}"] = {**latency_summary(samples), "sensors": len(batch)}

    for concurrency in (1, 8):
        for name, server in servers.items():
            async with grpc.aio.insecure_channel(server.grpc_target) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)

                async def infer(stub: Any = stub) -> None:
                    await stub.ModelInfer(request, timeout=30)

                rows[f"{name}/grpc_c{concurrency}"] = await _closed_loop(infer, concurrency, SECONDS)
    return rows


def main() -> None:
    from cityscale import raw_zone
    from cityscale.config import Settings
    from cityscale.panel import Panel
    from serving.local_server import local_model_server

    workdir = _ensure_model()
    sensors = list(Panel.from_raw(raw_zone.read(Settings(workdir=workdir).resolved_store_uri)).sensor_ids)
    env = {"CITYSCALE_WORKDIR": str(workdir), "CITYSCALE_FEATURE_SERVER_URL": "", "FEAST_FEATURE_SERVER_URL": ""}
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(local_model_server(env=env, module="serving.constant_model", args=[], log_dir=WORK))
        full = stack.enter_context(local_model_server(env=env, log_dir=WORK))
        print(f"inlined trees serving after {wait_for_inlined_trees(full.http_url):.0f} s")
        # The same server with no forecast cache: every request runs the model (started now, so that it finds the
        # inlined trees in the cache instead of compiling them beside the first one).
        uncached_env = {**env, "CITYSCALE_SERVING_FORECAST_CACHE_SIZE": "0"}
        uncached = stack.enter_context(local_model_server(env=uncached_env, log_dir=WORK))
        wait_for_inlined_trees(uncached.http_url)
        servers = {"bare": bare, "cityscale": full, "uncached": uncached}
        results: dict[str, dict[str, Any]] = asyncio.run(_load(servers, sensors))

    checks: dict[str, Any] = {}
    for proto in ("rest", "grpc"):
        for c in (1, 8):
            bare, full = results[f"bare/{proto}_c{c}"], results[f"cityscale/{proto}_c{c}"]
            checks[f"{proto}_c{c}"] = {
                "throughput_ratio": full["rps"] / bare["rps"],
                "p99_ratio": full["p99_ms"] / bare["p99_ms"],
                "throughput_ok": full["rps"] >= 0.5 * bare["rps"],
                "p99_ok": full["p99_ms"] < 3 * bare["p99_ms"],
            }
            uncached = results[f"uncached/{proto}_c{c}"]  # reported, not a target: the cache is the default
            checks[f"uncached_{proto}_c{c}"] = {
                "throughput_ratio": uncached["rps"] / bare["rps"],
                "p99_ratio": uncached["p99_ms"] / bare["p99_ms"],
            }
    all_p50 = results["cityscale/rest_all_sensors"]["p50_ms"]
    checks["all_sensors"] = {"p50_ms": all_p50, "p50_ok": all_p50 < 20.0}
    batch_ratio = results["cityscale/rest_batch_512"]["p50_ms"] / results["bare/rest_batch_512"]["p50_ms"]
    checks["batch_512"] = {"p50_ratio": batch_ratio, "p50_ratio_ok": batch_ratio <= 2.0}
    results.update({f"check/{k}": v for k, v in checks.items()})
    write_result("serving", results)
    failed = [k for k, v in checks.items() if not all(x for key, x in v.items() if key.endswith("_ok"))]
    print("targets met" if not failed else f"targets missed: {failed}")


if __name__ == "__main__":
    main()

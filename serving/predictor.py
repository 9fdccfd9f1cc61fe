"""The CityScale KServe predictor: V2 (REST and gRPC) and V1 forecasts for a batch of sensors.

V2 inputs:  ``sensor_id`` BYTES [N], ``forecast_start`` BYTES [1] or [N] (local ISO hour),
            optional ``history`` FP32 [N, L], 168 <= L <= input_window, newest hour last (-1 marks a missing hour).
V2 outputs: ``p10``, ``p50``, ``p90`` FP32 [N, horizon], ``target_time`` BYTES [N, horizon],
            ``latest_observation`` BYTES [N] (local ISO hour of the latest count the forecast used).

History comes from ``cityscale.features.online.history_source_from_settings``: the Feast feature server
when one is configured (``CITYSCALE_FEATURE_SERVER_URL`` / ``FEAST_FEATURE_SERVER_URL``), Tecton when opted
in, else the raw zone read into memory (the embedded default of ``make run``). Clients then send only
``sensor_id`` + ``forecast_start``.

Where forecasts run: kserve serves REST and gRPC from one event loop, and a forecast computed on that loop
holds it for milliseconds. Under mixed load the loop then runs every ready REST request per turn while a gRPC
call, which needs several turns, waited behind all of them (soak: gRPC 13 req/s against REST's 179, p99 0.76 s).
So forecasts run in a forecast thread (``serving_predict_threads``): the loop only decodes, encodes and moves
bytes, and the tree walks and the network forward (C code that releases the GIL) use the pod's second core.
Requests that arrive while the thread is busy are answered together by its next forecast call
(``serving.batching.MicroBatcher``, ``ForecastService.forecast_many``): a one-sensor forecast is mostly fixed
cost, so under load the cost per request falls instead of the queue growing. One thread, not one per CPU: the
forecast is largely Python under the GIL, so a second thread mostly splits the batches and contends with the
loop (soak c16 p99 REST/gRPC 66/76 ms with one, 79/106 ms with two). The boosters run as native code
compiled from their trees at load (``BoostedQuantiles.compile``). Measured alternatives: docs/benchmarks.md,
"Serving: mixed REST + gRPC traffic".
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import to_http_parameters

from cityscale import registry
from cityscale.cities import CITIES
from cityscale.config import Settings
from cityscale.features.online import FeatureServiceError, history_source_from_settings
from cityscale.forecasting.forecaster import Forecaster
from cityscale.forecasting.service import (
    ForecastBatch,
    ForecastRequest,
    ForecastRequestError,
    ForecastService,
    HistorySource,
    RawZoneHistory,
)
from cityscale.model.boosted import BoostedQuantiles
from cityscale.monitoring.forecast_log import ForecastLog
from serving import metrics
from serving.batching import MicroBatcher
from serving.caches import CalendarCache, ForecastCache

logger = logging.getLogger(__name__)

QUANTILE_OUTPUTS = {0.1: "p10", 0.5: "p50", 0.9: "p90"}
PLATFORM = "pytorch"  # V2 metadata platform: a torch state dict + contract.json, loaded by forecasting.forecaster


def available_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (a pod's ``limits.cpu``).

    ``os.cpu_count()`` reports the node's cores; a pod limited to 2 CPUs on a 16-core node must size its pools
    for 2. The quota is rounded up (a 1.5-CPU limit gets 2 threads). cgroup v2 (``cpu.max``) or v1.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    root = Path(cgroup_root)
    quota = period = None
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            quota, period = int(text[0]), int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota = None
    if quota is not None and period and quota > 0:
        cpus = min(cpus, max(1, -(-quota // period)))
    return max(1, cpus)


def predict_threads(setting: int) -> int:
    """Threads of the forecast pool for ``serving_predict_threads`` (0: one per available CPU; -1: none)."""
    if setting < 0:
        return 0
    return setting or available_cpus()


def set_gil_switch_interval(milliseconds: float) -> None:
    """How long a thread may hold the GIL while another waits (Python's default: 5 ms); <= 0 keeps the default.

    With forecasts in pool threads, the event loop thread competes with them for the GIL: after each wait for
    I/O it queues behind a forecast for up to the interval, and a gRPC call needs several loop turns. At 0.5 ms
    the soak's p99 under mixed load went from ~104 to ~95 ms on an idle 2-core machine (docs/benchmarks.md).
    """
    if milliseconds > 0:
        sys.setswitchinterval(milliseconds / 1000)


def freeze_network(net: torch.nn.Module, in_dim: int) -> torch.nn.Module:
    """The network traced and frozen for inference, if it gives the same outputs; else the eager module.

    A one-sensor request spends more time in torch's per-module Python dispatch than in arithmetic
    (~85 us eager vs ~50 us frozen for the 3-layer MLP): a measurable share of the gRPC path.
    """
    net = net.eval()
    probe = torch.randn(4, in_dim, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            frozen = torch.jit.freeze(torch.jit.trace(net, probe[:1]))
            same = torch.allclose(frozen(probe), net(probe), rtol=1e-5, atol=1e-6)
    except Exception as exc:  # an architecture tracing cannot handle: serve it eagerly
        logger.warning("serving the network eagerly, tracing failed: %s", exc)
        return net
    return frozen if same else net


WARM_UP_SENSOR = "cityscale-warm-up"  # an id no store holds: its lookups change nothing


def warm_up_history(source: HistorySource) -> None:
    """Look up a sensor no store holds once before reporting ready, on both read paths forecasts use.

    A fresh Feast feature server spends ~350 ms on its first online read (measured in session 12), and a
    forecast's history fetch waits for it: without this the first clients' forecasts pay it. Best effort: a
    feature server that is not up yet only logs, and the first requests pay the set-up as before.
    """
    try:
        source.cities_of([WARM_UP_SENSOR])
        source.history([WARM_UP_SENSOR], [pd.Timestamp("2024-01-01")], 1)
    except ForecastRequestError:  # "no history window for this sensor": the read path ran
        pass
    except FeatureServiceError as exc:
        logger.warning("history source warm-up failed (the first requests pay its set-up): %s", exc)


class CityScalePredictor(Model):
    """The forecast model behind ``/v2/models/<model_name>``: loads a registry version, serves it.

    ``ready`` becomes true only at the end of :meth:`load` (model and history source both loaded), so
    KServe's readiness probe keeps traffic away until then.
    """

    platform = PLATFORM

    def __init__(self, settings: Settings, model_uri: str = "production"):
        super().__init__(settings.model_name)
        self.settings = settings
        self.model_uri = model_uri
        self.service: ForecastService | None = None
        self.model_version = "unloaded"
        self.history_source: HistorySource | None = None
        # Where a forecast runs (see the module docstring): batched in ``self.pool`` (CPU-bound work, in-memory
        # history), batched in asyncio's default executor (a remote feature server, whose calls wait on the network
        # up to its timeout and need more threads than CPUs: set at load), or, with no pool, on the event loop.
        self.threads = predict_threads(settings.serving_predict_threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="forecast") if self.threads else None
        self.batcher: MicroBatcher[InferRequest | dict, InferResponse | dict] | None = None
        self.forecast_log = ForecastLog.from_settings(settings)  # None when disabled

    def load(self) -> bool:
        """Resolve the model (alias, version or URI), load it and the history source; then report ready.

        Called again on a reload (``POST /v2/repository/models/<name>/load``): everything is built aside and
        swapped in at the end, so requests keep being served by the previous version meanwhile.
        """
        uri, version = registry.resolve(self.model_uri, self.settings.resolved_registry_uri, self.settings.model_name)
        # One request is a tiny MLP forward (~0.1 ms): with torch's default of one thread per core, its
        # OpenMP workers spin against the event loop and the client on a 2-core pod and a 1-sensor forecast
        # took ~24 ms instead of ~0.5 ms. Scale with replicas (or --workers), not intra-op threads.
        torch.set_num_threads(max(1, self.settings.serving_torch_threads))
        forecaster = Forecaster.load(uri, version)
        if self.settings.serving_freeze_model and forecaster.net is not None:
            forecaster.net = freeze_network(forecaster.net, forecaster.contract.in_dim)
        if self.settings.serving_compiled_trees and forecaster.boosters is not None:
            forecaster.boosters.compile(self.settings.resolved_compiled_trees_dir)
        forecaster.calendar = CalendarCache(forecaster.calendar, self.settings.serving_calendar_cache_size)
        # One forecast (any city, any start) before reporting ready: the first call pays one-off set-up (compiled
        # trees, torch kernels) that would otherwise land on the first clients' requests.
        forecaster.predict(
            np.ones((1, forecaster.input_window), np.float32), [pd.Timestamp("2024-01-01")], [next(iter(CITIES))]
        )
        if self.settings.serving_forecast_cache_size > 0:
            forecaster.predict = ForecastCache(
                forecaster.predict, self.settings.serving_forecast_cache_size, metrics.count_cache_rows(self.name)
            )
        source = self.history_source.inner if self.history_source else history_source_from_settings(self.settings)
        remote = not isinstance(source, RawZoneHistory)
        if remote and self.history_source is None:  # a reload keeps the source, already warm
            warm_up_history(source)
        history = metrics.TimedHistorySource(source, self.name)
        service = ForecastService(
            forecaster, history, self.settings.max_batch_sensors, self.settings.min_history_fraction
        )
        if self.pool is not None and self.batcher is None:
            self.batcher = MicroBatcher(
                self._answer_all,
                None if remote else self.pool,
                min(32, self.threads + 4) if remote else self.threads,  # asyncio's default executor size
                self.settings.serving_batch_max_requests,
                on_batch=metrics.COALESCED_REQUESTS.labels(self.name).observe,
            )
        self.history_source, self.service, self.model_version = history, service, version
        metrics.set_model_version(self.name, version)
        boosters = forecaster.boosters
        metrics.COMPILED_TREES.labels(self.name).set(int(boosters is not None and boosters.compiled))
        if boosters is not None and boosters.compiled and self.settings.serving_inline_trees:
            threading.Thread(target=self._inline_trees, args=(boosters,), name="inline-trees", daemon=True).start()
        self.ready = True
        logger.info("loaded %s version %s from %s (history: %s)", self.name, version, uri, type(source).__name__)
        return self.ready

    def _inline_trees(self, boosters: BoostedQuantiles) -> None:
        """Swap the inlined forest in when it is built (``BoostedQuantiles.compile_inlined_aside``)."""
        if boosters.compile_inlined_aside(self.settings.resolved_compiled_trees_dir):
            if self.service is not None and self.service.forecaster.boosters is boosters:  # not reloaded meanwhile
                metrics.COMPILED_TREES.labels(self.name).set(2)
            logger.info("the boosters' inlined trees serve now")

    @property
    def versions(self) -> list[str]:
        """The registry versions this process serves (one: the loaded one), for the V2 metadata."""
        return [self.model_version] if self.ready else []

    # --- metadata -------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        window = self.service.forecaster.input_window if self.service else -1
        return [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [-1]},
            # Optional, and as short as 168 hours (the V2 metadata schema has no field to say so; the README does).
            {"name": "history", "datatype": "FP32", "shape": [-1, window]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        horizon = self.service.forecaster.horizon if self.service else -1
        outputs = [{"name": name, "datatype": "FP32", "shape": [-1, horizon]} for name in QUANTILE_OUTPUTS.values()]
        return [
            *outputs,
            {"name": "target_time", "datatype": "BYTES", "shape": [-1, horizon]},
            {"name": "latest_observation", "datatype": "BYTES", "shape": [-1]},
        ]

    # --- inference ------------------------------------------------------------------------
    async def predict(
        self,
        payload: InferRequest | dict,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict:
        protocol = ("grpc-v2" if payload.from_grpc else "rest-v2") if isinstance(payload, InferRequest) else "rest-v1"
        with metrics.observe_request(self.name, self.model_version, protocol) as state:
            try:
                if self.batcher is not None:
                    return await self.batcher.submit(payload)
                return self.answer(payload)
            except ForecastRequestError as exc:
                state["status"] = "invalid"
                raise InvalidInput(str(exc)) from exc

    def answer(self, payload: InferRequest | dict) -> InferResponse | dict:
        """One request answered in the calling thread (no batching); ``ForecastRequestError`` if it is invalid."""
        answer = self._answer_all([payload])[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _answer_all(self, payloads: list[InferRequest | dict]) -> list[InferResponse | dict | ForecastRequestError]:
        """Answers to several requests (V1 and V2 mixed) from one forecast call; a bad request fails alone."""
        service, version = self.service, self.model_version  # one model for the whole call, even during a reload
        answers: list[InferResponse | dict | ForecastRequestError | None] = [None] * len(payloads)
        requests: dict[int, ForecastRequest] = {}
        for i, payload in enumerate(payloads):
            try:
                requests[i] = _decode_v2(payload) if isinstance(payload, InferRequest) else _decode_v1(payload)
            except ForecastRequestError as exc:
                answers[i] = exc
        batches = service.forecast_many(list(requests.values()))
        for i, batch in zip(requests, batches, strict=True):
            if isinstance(batch, ForecastRequestError):
                answers[i] = batch
                continue
            metrics.BATCH_SENSORS.labels(self.name).observe(len(batch.sensor_ids))
            if self.forecast_log is not None:
                self.forecast_log.record(batch, version)  # queued; never blocks or fails the request
            payload = payloads[i]
            if isinstance(payload, InferRequest):
                answers[i] = _encode_v2(payload, self.name, version, batch)
            else:
                answers[i] = {"predictions": _v1_predictions(batch), "model_version": version}
        return answers  # type: ignore[return-value]  # every slot is filled above


def _decode_v2(request: InferRequest) -> ForecastRequest:
    tensors = {}
    for tensor in request.inputs:
        if tensor.name in tensors:
            raise ForecastRequestError(f"input {tensor.name!r} is given twice")
        tensors[tensor.name] = tensor
    unknown = set(tensors) - {"sensor_id", "forecast_start", "history"}
    if unknown:
        raise ForecastRequestError(f"unknown inputs {sorted(unknown)}; expected sensor_id, forecast_start, history")
    history = None
    if "history" in tensors:
        tensor = tensors["history"]
        if tensor.datatype not in ("FP32", "FP64"):
            raise ForecastRequestError(f"history must be FP32, got {tensor.datatype}")
        history = _as_numpy(tensor).astype(np.float32).reshape(tensor.shape)
    return ForecastRequest(_strings(tensors, "sensor_id"), _strings(tensors, "forecast_start"), history)


def _encode_v2(request: InferRequest, model_name: str, version: str, batch: ForecastBatch) -> EncodedInferResponse:
    outputs = [(name, "FP32", batch.quantile(q).astype(np.float32)) for q, name in QUANTILE_OUTPUTS.items()]
    outputs.append(("target_time", "BYTES", batch.target_times))
    outputs.append(("latest_observation", "BYTES", batch.latest_observation))
    return encode_response(request, model_name, version, outputs)


def _decode_v1(payload: dict) -> ForecastRequest:
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
        raise ForecastRequestError('V1 body must be {"instances": [{"sensor_id": ..., "forecast_start": ...}]}')
    try:
        return ForecastRequest([str(i["sensor_id"]) for i in instances], [str(i["forecast_start"]) for i in instances])
    except KeyError as exc:
        raise ForecastRequestError(f"every instance needs {exc.args[0]!r}") from None


class EncodedInferResponse(InferResponse):
    """An ``InferResponse`` whose outputs :func:`encode_response` already encoded for the request's protocol.

    kserve's ``to_rest`` turns every output back into numpy and encodes it again value by value (``item()`` per
    element: 0.3 ms for a 12-sensor JSON answer); here the outputs are final, so the same dictionary (or binary
    body) is assembled directly. gRPC's ``to_grpc`` already takes the raw bytes as they are.
    """

    def to_rest(self) -> tuple[bytes | dict, int | None]:
        if self._requested_outputs:  # never set by the predictor; kserve's path keeps that feature exact
            return super().to_rest()
        outputs, raw = [], []
        for out in self.outputs:
            entry: dict[str, Any] = {"name": out.name, "shape": out.shape, "datatype": out.datatype}
            if out.parameters:
                entry["parameters"] = to_http_parameters(out.parameters)
            if self._use_binary_outputs:
                raw.append(out._raw_data)
            else:
                entry["data"] = out.data
            outputs.append(entry)
        response = {"id": self.id, "model_name": self.model_name, "model_version": self.model_version}
        response["outputs"] = outputs
        if self.parameters:
            response["parameters"] = to_http_parameters(self.parameters)
        if raw:
            header = orjson.dumps(response)
            return b"".join([header, *raw]), len(header)
        return response, None


def serialize_bytes(values: np.ndarray) -> bytes:
    """The V2 binary form of a BYTES tensor: per element a 4-byte little-endian length, then its UTF-8 bytes.

    Byte for byte what kserve's ``serialize_byte_tensor`` writes, without its per-element ``np.nditer``.
    """
    parts = []
    for value in values.reshape(-1).tolist():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def encode_response(
    request: InferRequest, model_name: str, version: str, tensors: list[tuple[str, str, np.ndarray]]
) -> EncodedInferResponse:
    """The V2 response holding ``(name, datatype, array)`` outputs, encoded once for the request's protocol.

    Binary (gRPC, or REST with ``binary_data_output``): raw bytes with ``binary_data_size``, as kserve's
    ``set_data_from_numpy`` sets them. JSON: ``ndarray.tolist()``, the same Python values as kserve's ``item()``
    per element at a tenth of the cost. tests/test_serving_fast_path.py holds both to kserve's bytes.
    """
    binary = bool(request.from_grpc or request.use_binary_outputs)
    outputs, raw = [], []
    for name, datatype, array in tensors:
        if binary:
            data = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            outputs.append(InferOutput(name, list(array.shape), datatype, parameters={"binary_data_size": len(data)}))
            raw.append(data)
        else:
            outputs.append(InferOutput(name, list(array.shape), datatype, data=array.reshape(-1).tolist()))
    return EncodedInferResponse(
        response_id=request.id or "",
        model_name=model_name,
        model_version=version,
        infer_outputs=outputs,
        raw_outputs=raw or None,
        from_grpc=request.from_grpc,
        use_binary_outputs=binary,
    )


def _as_numpy(tensor) -> np.ndarray:
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError, struct.error, InvalidInput) as exc:
        raise ForecastRequestError(f"input {tensor.name!r} does not match its datatype/shape: {exc}") from exc


def _strings(tensors: dict, name: str) -> list[str]:
    if name not in tensors:
        raise ForecastRequestError(f"missing required input {name!r}")
    tensor = tensors[name]
    if tensor.datatype != "BYTES":
        raise ForecastRequestError(f"{name} must be BYTES, got {tensor.datatype}")
    values = _as_numpy(tensor).reshape(-1)
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError as exc:
        raise ForecastRequestError(f"{name} must be UTF-8 text: {exc}") from exc


def _v1_predictions(batch: ForecastBatch) -> list[dict[str, Any]]:
    return [
        {
            "sensor_id": sensor,
            "target_time": batch.target_times[i].tolist(),
            "latest_observation": batch.latest_observation[i],
            **{name: batch.quantile(q)[i].round(2).tolist() for q, name in QUANTILE_OUTPUTS.items()},
        }
        for i, sensor in enumerate(batch.sensor_ids)
    ]

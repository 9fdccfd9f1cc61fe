"""The CityScale transformer: fetch online history from the feature platform, forecast through the predictor.

``python -m serving.transformer --predictor_host HOST:PORT --predictor_protocol grpc-v2`` (kserve's own
flags, parsed by kserve at import; ports from ``HTTP_PORT``/``GRPC_PORT``). It is the optional KServe
*transformer + predictor* shape of the InferenceService: clients send ``sensor_id`` + ``forecast_start`` to
the transformer, which

1. validates them and resolves each sensor's city and local start (400 / INVALID_ARGUMENT when it cannot),
2. reads the ``input_window`` hours before each start from the feature platform
   (``history_source_from_settings``: Feast feature server, Tecton, or the raw zone when neither is set),
3. calls the predictor over gRPC V2 with an explicit ``history`` tensor (-1 = missing hour), so the
   predictor does no feature I/O at all, and
4. returns the predictor's response (its ``model_version`` included) in the client's protocol.

Its model name equals the predictor's (a KServe requirement: the transformer forwards to
``/v2/models/<its own name>``). The in-predictor feature fetch stays the default (ARCHITECTURE: transformer
quirks); this shape lets features and model scale separately.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from cityscale.config import Settings
from cityscale.features.online import history_source_from_settings
from cityscale.forecasting.service import MISSING, ForecastRequestError, HistorySource, RawZoneHistory, parse_start
from serving import metrics

logger = logging.getLogger(__name__)

# Whether the client asked over gRPC / for binary outputs: set in preprocess, read in postprocess (the same
# request's task runs both, so a ContextVar keeps concurrent requests apart).
_BINARY_OUTPUTS: contextvars.ContextVar[bool] = contextvars.ContextVar("binary_outputs", default=False)
_FROM_GRPC: contextvars.ContextVar[bool] = contextvars.ContextVar("from_grpc", default=False)


class CityScaleTransformer(Model):
    """Feature-fetching front of the predictor (see the module docstring)."""

    def __init__(self, settings: Settings, input_window: int | None = None):
        super().__init__(settings.model_name)
        self.settings = settings
        self.input_window = input_window or settings.input_window
        self.history_source: HistorySource | None = None
        self.offload_to_thread = False

    def load(self) -> bool:
        source = history_source_from_settings(self.settings)
        self.offload_to_thread = not isinstance(source, RawZoneHistory)
        self.history_source = metrics.TimedHistorySource(source, self.name)
        self.ready = True
        logger.info("transformer %s ready (history: %s)", self.name, type(source).__name__)
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [-1]},
        ]

    # --- preprocess: features ----------------------------------------------------------------
    async def preprocess(self, payload: InferRequest | dict, headers: dict[str, str] | None = None) -> InferRequest:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the CityScale transformer serves the V2 protocol only (/v2/models/<name>/infer)")
        _FROM_GRPC.set(payload.from_grpc)
        _BINARY_OUTPUTS.set(payload.from_grpc or payload.use_binary_outputs)
        try:
            if self.offload_to_thread:
                return await asyncio.to_thread(self._with_history, payload)
            return self._with_history(payload)
        except ForecastRequestError as exc:
            raise InvalidInput(str(exc)) from exc

    def _with_history(self, request: InferRequest) -> InferRequest:
        from serving.predictor import _strings  # the predictor's tensor decoding, same messages

        tensors = {t.name: t for t in request.inputs}
        unknown = set(tensors) - {"sensor_id", "forecast_start"}
        if unknown:
            raise ForecastRequestError(f"unknown inputs {sorted(unknown)}; expected sensor_id, forecast_start")
        sensor_ids = _strings(tensors, "sensor_id")
        starts = _strings(tensors, "forecast_start")
        n = len(sensor_ids)
        if n == 0:
            raise ForecastRequestError("sensor_id is empty: send at least one sensor")
        if n > self.settings.max_batch_sensors:
            raise ForecastRequestError(f"batch of {n} sensors exceeds the limit of {self.settings.max_batch_sensors}")
        if len(starts) == 1:
            starts = starts * n
        if len(starts) != n:
            raise ForecastRequestError(f"forecast_start has {len(starts)} values for {n} sensors (send 1 or {n})")
        cities = self.history_source.cities_of(list(sensor_ids))
        for sensor, city in zip(sensor_ids, cities, strict=True):
            if city is None:
                raise ForecastRequestError(f"unknown sensor {sensor!r}: the feature platform holds no data for it")
        stamps = [parse_start(s, c) for s, c in zip(starts, cities, strict=True)]
        history = self.history_source.history(sensor_ids, stamps, self.input_window)
        history = np.where(np.isfinite(history), history, MISSING).astype(np.float32)

        local_starts = np.array([f"{s:%Y-%m-%dT%H:%M:%S}" for s in stamps], dtype=object)
        inputs = [
            InferInput("sensor_id", [n], "BYTES"),
            InferInput("forecast_start", [n], "BYTES"),
            InferInput("history", [n, self.input_window], "FP32"),
        ]
        inputs[0].set_data_from_numpy(np.array(sensor_ids, dtype=object), binary_data=True)
        inputs[1].set_data_from_numpy(local_starts, binary_data=True)
        inputs[2].set_data_from_numpy(history, binary_data=True)
        metrics.BATCH_SENSORS.labels(self.name).observe(n)
        return InferRequest(model_name=self.name, infer_inputs=inputs, request_id=request.id)

    # --- predict: the predictor over gRPC ----------------------------------------------------
    async def predict(
        self,
        payload: InferRequest | dict,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict:
        protocol = "grpc-v2" if _FROM_GRPC.get() else "rest-v2"
        with metrics.observe_request(self.name, "transformer", protocol) as state:
            try:
                return await super().predict(payload, headers, response_headers)
            except grpc.aio.AioRpcError as exc:  # grpc-v2: the predictor's 400 is INVALID_ARGUMENT
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    state["status"] = "invalid"
                    raise InvalidInput(exc.details() or "invalid request") from exc
                raise
            except httpx.HTTPStatusError as exc:  # v2 REST (Knative mode): pass the predictor's 400 on as a 400
                if exc.response.status_code == 400:
                    state["status"] = "invalid"
                    raise InvalidInput(_error_text(exc.response)) from exc
                raise

    # --- postprocess: the client's encoding --------------------------------------------------
    async def postprocess(
        self,
        result: InferResponse | dict,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict:
        """Re-encode the predictor's binary gRPC outputs as JSON data for REST clients (binary for gRPC)."""
        if not isinstance(result, InferResponse):
            return result
        binary = _BINARY_OUTPUTS.get()
        outputs = []
        for out in result.outputs:
            fresh = InferOutput(name=out.name, shape=list(out.shape), datatype=out.datatype)
            fresh.set_data_from_numpy(out.as_numpy(), binary_data=binary)
            outputs.append(fresh)
        return InferResponse(
            response_id=result.id,
            model_name=self.name,
            model_version=result.model_version,
            infer_outputs=outputs,
            from_grpc=_FROM_GRPC.get(),
            use_binary_outputs=binary,
        )


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input_window", type=int, default=0, help="hours of history the predictor's model reads")
    args, _ = parser.parse_known_args()

    from cityscale.config import get_settings
    from serving import server

    settings = get_settings()
    transformer = CityScaleTransformer(settings, args.input_window or None)
    transformer.load()
    server.start([transformer], settings.http_port, settings.grpc_port, log_grpc_calls=settings.serving_log_grpc_calls)


if __name__ == "__main__":
    main()

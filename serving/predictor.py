"""The CityScale KServe predictor: V2 (REST and gRPC) and V1 forecasts for a batch of sensors.

V2 inputs:  ``sensor_id`` BYTES [N], ``forecast_start`` BYTES [1] or [N] (local ISO hour),
            optional ``history`` FP32 [N, input_window] (-1 marks a missing hour).
V2 outputs: ``p10``, ``p50``, ``p90`` FP32 [N, horizon], ``target_time`` BYTES [N, horizon].
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from cityscale import registry
from cityscale.config import Settings
from cityscale.forecaster import Forecaster
from cityscale.online import ForecastBatch, ForecastRequestError, ForecastService, RawZoneHistory

logger = logging.getLogger(__name__)

QUANTILE_OUTPUTS = {0.1: "p10", 0.5: "p50", 0.9: "p90"}


class CityScalePredictor(Model):
    def __init__(self, settings: Settings, model_uri: str = "production"):
        super().__init__(settings.model_name)
        self.settings = settings
        self.model_uri = model_uri
        self.service: ForecastService | None = None
        self.model_version = "unloaded"

    def load(self) -> bool:
        """Resolve the model (alias, version or URI), load it and the history; then report ready."""
        uri, version = registry.resolve(self.model_uri, self.settings.resolved_registry_uri, self.settings.model_name)
        forecaster = Forecaster.load(uri, version)
        history = RawZoneHistory(self.settings.resolved_store_uri)
        self.service = ForecastService(
            forecaster, history, self.settings.max_batch_sensors, self.settings.min_history_fraction
        )
        self.model_version = version
        self.ready = True
        logger.info("loaded %s version %s from %s", self.name, version, uri)
        return self.ready

    # --- metadata -------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        window = self.service.forecaster.input_window if self.service else -1
        return [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [-1]},
            # Optional (the V2 metadata schema has no field to say so; the README and docstring do).
            {"name": "history", "datatype": "FP32", "shape": [-1, window]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        horizon = self.service.forecaster.horizon if self.service else -1
        outputs = [{"name": name, "datatype": "FP32", "shape": [-1, horizon]} for name in QUANTILE_OUTPUTS.values()]
        return [*outputs, {"name": "target_time", "datatype": "BYTES", "shape": [-1, horizon]}]

    # --- inference ------------------------------------------------------------------------
    async def predict(
        self,
        payload: InferRequest | dict,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict:
        try:
            if isinstance(payload, InferRequest):
                return self._predict_v2(payload)
            return self._predict_v1(payload)
        except ForecastRequestError as exc:
            raise InvalidInput(str(exc)) from exc

    def _predict_v2(self, request: InferRequest) -> InferResponse:
        tensors = {}
        for tensor in request.inputs:
            if tensor.name in tensors:
                raise ForecastRequestError(f"input {tensor.name!r} is given twice")
            tensors[tensor.name] = tensor
        unknown = set(tensors) - {"sensor_id", "forecast_start", "history"}
        if unknown:
            raise ForecastRequestError(f"unknown inputs {sorted(unknown)}; expected sensor_id, forecast_start, history")
        sensor_ids = _strings(tensors, "sensor_id")
        starts = _strings(tensors, "forecast_start")
        history = None
        if "history" in tensors:
            tensor = tensors["history"]
            if tensor.datatype not in ("FP32", "FP64"):
                raise ForecastRequestError(f"history must be FP32, got {tensor.datatype}")
            history = _as_numpy(tensor).astype(np.float32).reshape(tensor.shape)
        batch = self.service.forecast(sensor_ids, starts, history)
        binary = request.from_grpc or request.use_binary_outputs
        outputs = []
        for q, name in QUANTILE_OUTPUTS.items():
            out = InferOutput(name=name, shape=list(batch.values.shape[:2]), datatype="FP32")
            out.set_data_from_numpy(batch.quantile(q).astype(np.float32), binary_data=binary)
            outputs.append(out)
        times = InferOutput(name="target_time", shape=list(batch.target_times.shape), datatype="BYTES")
        times.set_data_from_numpy(batch.target_times, binary_data=binary)
        outputs.append(times)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=self.model_version,
            infer_outputs=[*outputs],
            from_grpc=request.from_grpc,
            use_binary_outputs=binary,
        )

    def _predict_v1(self, payload: dict) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
            raise ForecastRequestError('V1 body must be {"instances": [{"sensor_id": ..., "forecast_start": ...}]}')
        try:
            sensor_ids = [str(i["sensor_id"]) for i in instances]
            starts = [str(i["forecast_start"]) for i in instances]
        except KeyError as exc:
            raise ForecastRequestError(f"every instance needs {exc.args[0]!r}") from None
        batch = self.service.forecast(sensor_ids, starts)
        return {"predictions": _v1_predictions(batch), "model_version": self.model_version}


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
            **{name: batch.quantile(q)[i].round(2).tolist() for q, name in QUANTILE_OUTPUTS.items()},
        }
        for i, sensor in enumerate(batch.sensor_ids)
    ]

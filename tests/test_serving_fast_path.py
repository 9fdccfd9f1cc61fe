"""The cheaper request path gives the answers of the path it replaced.

Three things were made cheaper (docs/benchmarks.md, "Serving: mixed REST + gRPC traffic"): the response
encoding (``serving.predictor.encode_response``), the JSON serialisation of V2 REST answers
(``serving.server.JSONV2Endpoints``) and the forecast's own bookkeeping (``ForecastService.forecast``: starts
parsed once per request, target hours memoised). Each is compared here with what it replaced: kserve's
``set_data_from_numpy`` / ``to_rest`` / ``to_grpc``, FastAPI's ``jsonable_encoder``, and the forecast computed
the previous way (every start parsed, the calendar computed fresh, the network not frozen, hours formatted).
Also: where forecasts run (``serving_predict_threads``) and how the pool is sized.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.encoders import jsonable_encoder
from kserve import InferInput, InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceResponse

from cityscale import registry
from cityscale.config import Settings
from cityscale.forecasting.forecaster import Forecaster
from cityscale.forecasting.service import RawZoneHistory, latest_observation, parse_start
from serving.predictor import CityScalePredictor, available_cpus, predict_threads, serialize_bytes

HORIZON = 24


@pytest.fixture(scope="module")
def predictor(trained_workdir: Path) -> CityScalePredictor:
    settings = Settings(workdir=trained_workdir, forecast_log_enabled=False)
    predictor = CityScalePredictor(settings)
    predictor.load()
    return predictor


@pytest.fixture(scope="module")
def requests_(predictor) -> list[tuple[list[str], list[str]]]:
    """Random requests like the soak's: 1..12 sensors, one start (or one per sensor), from 240 hourly starts."""
    sensors = list(predictor.history_source.panel.sensor_ids)
    starts = [f"{t:%Y-%m-%dT%H:%M:%S}" for t in pd.date_range("2022-10-01", periods=240, freq="h")]
    rng = random.Random(3)
    out = []
    for i in range(40):
        chosen = rng.sample(sensors, rng.randint(1, len(sensors)))
        out.append((chosen, [rng.choice(starts) for _ in chosen] if i % 4 == 0 else [rng.choice(starts)]))
    out.append((["FliS_T"], ["2022-10-05T00:00:00+11:00"]))  # an offset, converted to local time
    return out


def _reference_forecast(forecaster: Forecaster, source: RawZoneHistory, sensor_ids, starts):
    """The forecast as the code before the cheaper path computed it: every start parsed, nothing memoised."""
    if len(starts) == 1:
        starts = starts * len(sensor_ids)
    cities = [source.city_of(s) for s in sensor_ids]
    stamps = [parse_start(s, c) for s, c in zip(starts, cities, strict=True)]
    values = source.history(sensor_ids, stamps, forecaster.input_window)
    quantiles = forecaster.predict(values, stamps, cities)
    offsets = pd.to_timedelta(np.arange(forecaster.horizon), unit="h")
    hours = {s: np.array([f"{s + o:%Y-%m-%dT%H:%M:%S}" for o in offsets], dtype=object) for s in set(stamps)}
    return quantiles, np.stack([hours[s] for s in stamps]), latest_observation(values, stamps)


def test_forecasts_equal_the_previous_computation(predictor, requests_, trained_workdir) -> None:
    settings = predictor.settings
    uri, version = registry.resolve("production", settings.resolved_registry_uri, settings.model_name)
    plain = Forecaster.load(uri, version)  # eager network, calendar computed per call
    source = predictor.history_source.inner
    for sensor_ids, starts in requests_:
        batch = predictor.service.forecast(sensor_ids, list(starts))
        values, times, latest = _reference_forecast(plain, source, sensor_ids, list(starts))
        np.testing.assert_allclose(batch.values, values, rtol=1e-5, atol=1e-3)
        assert batch.target_times.tolist() == times.tolist()
        assert batch.latest_observation.tolist() == latest.tolist()


def _request(sensor_ids: list[str], start: str, grpc: bool = False, binary: bool = False) -> InferRequest:
    inputs = [InferInput("sensor_id", [len(sensor_ids)], "BYTES"), InferInput("forecast_start", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array(sensor_ids, dtype=object), binary_data=False)
    inputs[1].set_data_from_numpy(np.array([start], dtype=object), binary_data=False)
    parameters = {"binary_data_output": True} if binary else None
    return InferRequest("cityscale", inputs, request_id="r1", from_grpc=grpc, parameters=parameters)


def _kserve_response(request: InferRequest, batch, version: str) -> InferResponse:
    """The response as the predictor built it before, through kserve's ``set_data_from_numpy``."""
    binary = request.from_grpc or request.use_binary_outputs
    outputs = []
    arrays = [(n, "FP32", batch.quantile(q).astype(np.float32)) for q, n in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90"))]
    arrays += [("target_time", "BYTES", batch.target_times), ("latest_observation", "BYTES", batch.latest_observation)]
    for name, datatype, array in arrays:
        out = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
        out.set_data_from_numpy(array, binary_data=binary)
        outputs.append(out)
    return InferResponse(
        response_id=request.id or "",
        model_name="cityscale",
        model_version=version,
        infer_outputs=outputs,
        from_grpc=request.from_grpc,
        use_binary_outputs=binary,
    )


@pytest.mark.parametrize("grpc, binary", [(False, False), (False, True), (True, False)])
def test_encoded_responses_equal_kserves(predictor, requests_, grpc, binary) -> None:
    for sensor_ids, starts in requests_[:10]:
        request = _request(sensor_ids, starts[0], grpc=grpc, binary=binary)
        new = predictor._predict_v2(request)
        old = _kserve_response(request, predictor.service.forecast(sensor_ids, [starts[0]]), predictor.model_version)
        if grpc:
            assert new.to_grpc().SerializeToString(deterministic=True) == old.to_grpc().SerializeToString(
                deterministic=True
            )
        else:
            assert new.to_rest() == old.to_rest()


def test_serialize_bytes_equals_kserve() -> None:
    from kserve.protocol.infer_type import serialize_byte_tensor

    values = np.array([["2022-10-01T00:00:00", "é", ""], [b"raw", "x" * 300, "z"]], dtype=object)
    assert serialize_bytes(values) == serialize_byte_tensor(values).item()


def test_json_answer_equals_fastapis_encoding(predictor, requests_) -> None:
    """``JSONV2Endpoints`` writes ``model_dump_json``; FastAPI wrote ``json.dumps(jsonable_encoder(...))``."""
    for sensor_ids, starts in requests_[:10]:
        response, _ = predictor._predict_v2(_request(sensor_ids, starts[0])).to_rest()
        model = InferenceResponse.model_validate(response)
        fastapi = json.dumps(jsonable_encoder(model), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        assert model.model_dump_json() == fastapi


def test_available_cpus_reads_the_cgroup_quota(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "none") >= 1  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert available_cpus(tmp_path) == min(2, available_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: rounded up
    assert available_cpus(tmp_path) == min(2, available_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == available_cpus(tmp_path / "none")
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert available_cpus(v1) == 1


def test_predict_threads_setting() -> None:
    assert predict_threads(-1) == 0
    assert predict_threads(3) == 3
    assert predict_threads(0) == available_cpus()


def test_forecasts_run_in_the_pool_by_default(predictor, trained_workdir) -> None:
    """Default: a pool of one thread per CPU, and ``predict`` runs the forecast there, not on the event loop."""
    assert predictor.pool is not None and predictor.pool._max_workers == available_cpus()
    assert not predictor.offload_to_thread  # in-memory history: CPU-bound, the sized pool
    seen = []
    original = predictor._predict_v2

    def spy(request):
        seen.append(threading.current_thread().name)
        return original(request)

    predictor._predict_v2 = spy
    try:
        response = asyncio.run(predictor.predict(_request(["FliS_T"], "2022-10-01T00:00:00")))
    finally:
        del predictor._predict_v2
    assert seen and seen[0].startswith("forecast")
    assert response.outputs[0].shape == [1, HORIZON]

    inline = CityScalePredictor(
        Settings(workdir=trained_workdir, serving_predict_threads=-1, forecast_log_enabled=False)
    )
    assert inline.pool is None

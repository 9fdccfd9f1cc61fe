"""The cheaper request path gives the answers of the path it replaced.

Three things were made cheaper (docs/benchmarks.md, "Serving: mixed REST + gRPC traffic"): the response
encoding (``serving.predictor.encode_response``), the JSON serialisation of V2 REST answers
(``serving.server.JSONV2Endpoints``) and the forecast's own bookkeeping (``ForecastService.forecast``: starts
parsed once per request, target hours memoised). Each is compared here with what it replaced: kserve's
``set_data_from_numpy`` / ``to_rest`` / ``to_grpc``, FastAPI's ``jsonable_encoder``, and the forecast computed
the previous way (every start parsed, the calendar computed fresh, the network not frozen, hours formatted).
Also: where forecasts run (``serving_predict_threads``), how the pool is sized, and requests coalesced into one
forecast call (``serving.batching``, ``ForecastService.forecast_many``) answered as they are alone.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.encoders import jsonable_encoder
from kserve import InferInput, InferOutput, InferRequest, InferResponse
from kserve.errors import InvalidInput
from kserve.protocol.rest.v2_datamodels import InferenceResponse

from cityscale import registry
from cityscale.config import Settings
from cityscale.features.online import FeatureServiceError
from cityscale.forecasting.forecaster import Forecaster
from cityscale.forecasting.service import (
    ForecastRequest,
    ForecastRequestError,
    ForecastService,
    RawZoneHistory,
    latest_observation,
    parse_start,
)
from serving.batching import MicroBatcher
from serving.predictor import (
    WARM_UP_SENSOR,
    CityScalePredictor,
    available_cpus,
    predict_threads,
    serialize_bytes,
    warm_up_history,
)

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
    cities = source.cities_of(sensor_ids)
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
        new = predictor.answer(request)
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
        response, _ = predictor.answer(_request(sensor_ids, starts[0])).to_rest()
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
    """Default: one forecast thread, and ``predict`` runs the forecast there, not on the event loop."""
    assert predictor.pool is not None and predictor.pool._max_workers == 1
    assert predictor.batcher is not None and predictor.batcher.executor is predictor.pool  # in-memory: the pool
    seen = []
    original = predictor.batcher.answer_all

    def spy(payloads):
        seen.append(threading.current_thread().name)
        return original(payloads)

    predictor.batcher.answer_all = spy
    try:
        response = asyncio.run(predictor.predict(_request(["FliS_T"], "2022-10-01T00:00:00")))
    finally:
        predictor.batcher.answer_all = original
    assert seen and seen[0].startswith("forecast")
    assert response.outputs[0].shape == [1, HORIZON]

    inline = CityScalePredictor(
        Settings(workdir=trained_workdir, serving_predict_threads=-1, forecast_log_enabled=False)
    )
    assert inline.pool is None


# --- coalesced requests (serving/batching.py, ForecastService.forecast_many) -------------------------------------


def test_coalesced_requests_get_the_answers_they_get_alone(predictor, requests_) -> None:
    service = predictor.service
    together = service.forecast_many([ForecastRequest(ids, list(starts)) for ids, starts in requests_])
    for (ids, starts), batch in zip(requests_, together, strict=True):
        alone = service.forecast(ids, list(starts))
        assert batch.sensor_ids == alone.sensor_ids
        np.testing.assert_allclose(batch.values, alone.values, rtol=1e-5, atol=1e-4)
        assert batch.target_times.tolist() == alone.target_times.tolist()
        assert batch.latest_observation.tolist() == alone.latest_observation.tolist()


def test_a_bad_request_fails_alone_in_a_coalesced_call(predictor) -> None:
    window = predictor.service.forecaster.input_window
    requests = [
        ForecastRequest(["FliS_T"], ["2022-10-01T00:00:00"]),
        ForecastRequest(["nowhere"], ["2022-10-01T00:00:00"]),  # unknown sensor
        ForecastRequest(["FliS_T"], ["2022-10-01T00:30:00"]),  # not on the hour
        ForecastRequest(["FliS_T"], ["2022-10-01T00:00:00"], np.full((1, window), -1.0, np.float32)),  # no history
        ForecastRequest(["FliS_T", "FliS_T"], ["2022-10-02T00:00:00"]),
    ]
    results = predictor.service.forecast_many(requests)
    assert [type(r).__name__ for r in results] == [
        "ForecastBatch",
        "ForecastRequestError",
        "ForecastRequestError",
        "ForecastRequestError",
        "ForecastBatch",
    ]
    assert "unknown sensor 'nowhere'" in str(results[1]) and "on the hour" in str(results[2])
    assert "not enough history" in str(results[3])
    alone = predictor.service.forecast(["FliS_T"], ["2022-10-01T00:00:00"])
    np.testing.assert_allclose(results[0].values, alone.values, rtol=1e-5, atol=1e-4)


class FakeRefusingHistory:
    """Fake: the predictor's in-memory history, refusing one sensor's window as ``FeastHistorySource`` does."""

    def __init__(self, inner: RawZoneHistory, refused: str):
        self.inner, self.refused, self.calls = inner, refused, 0

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        return self.inner.cities_of(sensor_ids)

    def history(self, sensor_ids, starts, length):
        self.calls += 1
        if self.refused in sensor_ids:
            raise ForecastRequestError(f"the online store has no history window for sensor {self.refused!r}")
        return self.inner.history(sensor_ids, starts, length)


def test_a_refused_history_window_fails_only_its_request(predictor) -> None:
    source = FakeRefusingHistory(predictor.history_source.inner, "FliS_T")
    service = ForecastService(predictor.service.forecaster, source, 512, predictor.settings.min_history_fraction)
    others = [s for s in source.inner.panel.sensor_ids if s != "FliS_T"][:2]
    results = service.forecast_many(
        [ForecastRequest([others[0]], ["2022-10-01T00:00:00"]), ForecastRequest(["FliS_T"], ["2022-10-01T00:00:00"])]
        + [ForecastRequest([others[1]], ["2022-10-03T00:00:00"])]
    )
    assert isinstance(results[1], ForecastRequestError) and "FliS_T" in str(results[1])
    assert [r.sensor_ids for r in (results[0], results[2])] == [[others[0]], [others[1]]]
    assert source.calls == 1 + 3  # the shared call, then one per request


def test_concurrent_predicts_are_coalesced_and_answered_as_alone(predictor) -> None:
    """Requests arriving while the pool is busy share calls; each answer equals the one it gets alone."""
    sensors = list(predictor.history_source.panel.sensor_ids)
    payloads = [_request([sensors[i % len(sensors)]], "2022-10-01T00:00:00", grpc=i % 2 == 1) for i in range(40)]
    payloads.insert(7, _request(["nowhere"], "2022-10-01T00:00:00"))
    sizes = []
    original = predictor.batcher.answer_all

    def counting(batch):
        sizes.append(len(batch))
        return original(batch)

    async def all_at_once():
        return await asyncio.gather(*(predictor.predict(p) for p in payloads), return_exceptions=True)

    predictor.batcher.answer_all = counting
    try:
        answers = asyncio.run(all_at_once())
    finally:
        predictor.batcher.answer_all = original
    assert sum(sizes) == len(payloads) and max(sizes) > 1 and len(sizes) < len(payloads)
    assert isinstance(answers[7], InvalidInput) and "nowhere" in str(answers[7])
    for payload, answer in zip(payloads, answers, strict=True):
        if payload is not payloads[7]:
            got, alone = _quantiles(answer), _quantiles(predictor.answer(payload))
            assert got.keys() == alone.keys() == {"p10", "p50", "p90"}
            for name, values in got.items():
                np.testing.assert_allclose(values, alone[name], rtol=1e-5, atol=1e-4)


def _quantiles(response: InferResponse) -> dict[str, np.ndarray]:
    """The FP32 outputs of an encoded answer: JSON data, or raw bytes (gRPC)."""
    return {
        t.name: np.frombuffer(t._raw_data, np.float32) if t._raw_data is not None else np.asarray(t.data)
        for t in response.outputs
        if t.datatype == "FP32"
    }


def test_micro_batcher_hands_waiting_items_to_one_call_and_isolates_failures() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def answer_all(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        gate.wait(5)
        if items == [99]:
            raise RuntimeError("the whole call failed")
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def scenario():
        batcher = MicroBatcher(answer_all, ThreadPoolExecutor(1), workers=1, max_batch=3)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # the only worker is busy with [1]: the next ones wait together
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, -3, 4, 5)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        failed = await asyncio.gather(batcher.submit(99), return_exceptions=True)
        return results, failed

    results, failed = asyncio.run(scenario())
    assert calls == [[1], [2, -3, 4], [5], [99]]  # max_batch=3 caps a call
    assert results[0] == 10 and results[1] == 20 and results[3] == 40 and results[4] == 50
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad -3"
    assert isinstance(failed[0], RuntimeError)


class FakeRecordingHistory:
    """Fake: a remote history source that records lookups and answers as Feast does for an unknown sensor."""

    def __init__(self, error: Exception | None = None):
        self.lookups: list[tuple[str, list[str]]] = []
        self.error = error

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        self.lookups.append(("cities_of", sensor_ids))
        if self.error:
            raise self.error
        return [None] * len(sensor_ids)

    def history(self, sensor_ids, starts, length):
        self.lookups.append(("history", sensor_ids))
        raise ForecastRequestError(f"the online store has no history window for sensor {sensor_ids[0]!r}")


def test_the_warm_up_reads_both_paths_and_never_fails_the_load(caplog) -> None:
    source = FakeRecordingHistory()
    warm_up_history(source)
    assert source.lookups == [("cities_of", [WARM_UP_SENSOR]), ("history", [WARM_UP_SENSOR])]
    down = FakeRecordingHistory(FeatureServiceError("feature server http://127.0.0.1:9 unreachable"))
    warm_up_history(down)  # logged, not raised: the predictor still becomes ready
    assert down.lookups == [("cities_of", [WARM_UP_SENSOR])]
    assert "warm-up failed" in caplog.text

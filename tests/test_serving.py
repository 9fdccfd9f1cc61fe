"""The model server as a real process: V2 REST, V2 gRPC and V1 against the forecast contract.

One ``python -m serving`` child process (``serving.local_server``) serves the whole module. It
loads the production model of the ``trained_workdir`` registry and the raw zone as its history.

gRPC uses kserve's generated protobufs (``grpc_predict_v2_pb2``) with plain ``grpc``: importing
``tritonclient.grpc`` next to ``kserve`` in one process clashes, and the server
answers gRPC with binary outputs only (``raw_output_contents``), which are decoded here by hand.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import requests

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.panel import Panel
from serving.local_server import RunningServer, local_model_server

pytestmark = pytest.mark.server

MODEL = "cityscale"
VERSION = "0001"  # the first (and production) version in the trained_workdir registry
WINDOW, HORIZON = 672, 24  # the model's window (four weeks); a client may send as little as RECENT
RECENT = 168
START = "2022-10-01T00:00:00"  # inside the Jan-Oct 2022 raw zone, a week of history behind it
# 2022-10-02T02:00 (the DST gap) is missing for every sensor: a window ending 2022-10-05 holds a hole.
START_WITH_GAP = "2022-10-05T00:00:00"
KNOWN = ["FliS_T", "Bou283_T", "Swa295_T", "488Mac_T"]
QUANTILES = ("p10", "p50", "p90")
JSON_HEADERS = {"content-type": "application/json"}
TIMEOUT = 30


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_workdir) -> Iterator[RunningServer]:
    with local_model_server(env={"CITYSCALE_WORKDIR": str(trained_workdir)}) as running:
        yield running


@pytest.fixture(scope="module")
def pb():
    from kserve.protocol.grpc import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


@pytest.fixture(scope="module")
def stub(server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_target)
    grpc.channel_ready_future(channel).result(timeout=20)
    yield grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def panel(trained_workdir) -> Panel:
    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


@pytest.fixture(scope="module")
def sensors(panel) -> list[str]:
    """Every sensor of the raw zone (the 12 of the bundled sample)."""
    assert len(panel.sensor_ids) == 12
    assert set(KNOWN) <= set(panel.sensor_ids)
    return list(panel.sensor_ids)


# --- request building -------------------------------------------------------------------------
def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def v2_inputs(
    sensor_ids: list[str], starts: str | list[str], history: np.ndarray | list | None = None
) -> list[dict[str, Any]]:
    starts = [starts] if isinstance(starts, str) else list(starts)
    inputs = [
        tensor("sensor_id", "BYTES", [len(sensor_ids)], list(sensor_ids)),
        tensor("forecast_start", "BYTES", [len(starts)], starts),
    ]
    if history is not None:
        values = np.asarray(history, dtype=np.float64)
        inputs.append(tensor("history", "FP32", list(values.shape), values.reshape(-1).tolist()))
    return inputs


def explicit_history(panel: Panel, sensor_ids: list[str], start: str) -> np.ndarray:
    """The raw zone's last ``WINDOW`` hours before ``start``, missing hours marked -1 (the contract)."""
    rows = np.array([panel.row(s) for s in sensor_ids])
    begin = np.full(len(rows), panel.position(pd.Timestamp(start)) - WINDOW)
    values = panel.window(rows, begin, WINDOW)
    return np.where(np.isfinite(values), values, -1.0).astype(np.float32)


# --- REST -------------------------------------------------------------------------------------
def post(server: RunningServer, path: str, body: Any) -> requests.Response:
    """POST a JSON body (NaN/Infinity literals allowed) or raw text with content-type JSON."""
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return requests.post(f"{server.http_url}{path}", data=data, headers=JSON_HEADERS, timeout=TIMEOUT)


def rest_infer(server: RunningServer, inputs: list[dict[str, Any]]) -> requests.Response:
    return post(server, f"/v2/models/{MODEL}/infer", {"inputs": inputs})


def rest_outputs(response: requests.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == VERSION
    outputs = {}
    for out in body["outputs"]:
        dtype = np.float32 if out["datatype"] == "FP32" else object
        outputs[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
        assert out["datatype"] == ("BYTES" if out["name"] in ("target_time", "latest_observation") else "FP32")
    assert sorted(outputs) == sorted([*QUANTILES, "target_time", "latest_observation"])
    return outputs


def error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)


# --- gRPC -------------------------------------------------------------------------------------
CONTENTS_FIELD = {
    "BYTES": "bytes_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
}


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        return [x for item in data for x in _flatten(item)]
    return [data]


def grpc_request(pb, inputs: list[dict[str, Any]], raw_bytes: bool = False):
    """A ModelInferRequest: values in typed ``contents`` or, with ``raw_bytes``, in ``raw_input_contents``."""
    tensors, raw = [], []
    for t in inputs:
        data = _flatten(t["data"])
        if t["datatype"] == "BYTES":
            data = [v.encode() if isinstance(v, str) else v for v in data]
        grpc_tensor = pb.ModelInferRequest.InferInputTensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if raw_bytes:
            if t["datatype"] == "BYTES":
                raw.append(serialize_bytes(data))
            else:
                raw.append(np.asarray(data, dtype="<f4" if t["datatype"] == "FP32" else None).tobytes())
        else:
            getattr(grpc_tensor.contents, CONTENTS_FIELD[t["datatype"]]).extend(data)
        tensors.append(grpc_tensor)
    return pb.ModelInferRequest(model_name=MODEL, inputs=tensors, raw_input_contents=raw)


def serialize_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def deserialize_bytes(buffer: bytes) -> list[bytes]:
    """BYTES tensor wire format: each element is a 4-byte little-endian length, then the bytes."""
    values, offset = [], 0
    while offset < len(buffer):
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        values.append(bytes(buffer[offset : offset + length]))
        offset += length
    assert offset == len(buffer), "truncated BYTES tensor"
    return values


def grpc_outputs(response) -> dict[str, np.ndarray]:
    assert response.model_name == MODEL
    assert response.model_version == VERSION
    assert len(response.raw_output_contents) == len(response.outputs), "gRPC outputs must be binary"
    outputs = {}
    for meta, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = list(meta.shape)
        if meta.datatype == "FP32":
            outputs[meta.name] = np.frombuffer(raw, dtype="<f4").reshape(shape)
        elif meta.datatype == "BYTES":
            strings = [v.decode() for v in deserialize_bytes(raw)]
            outputs[meta.name] = np.asarray(strings, dtype=object).reshape(shape)
        else:
            raise AssertionError(f"unexpected datatype {meta.datatype} for {meta.name}")
    assert sorted(outputs) == sorted([*QUANTILES, "target_time", "latest_observation"])
    return outputs


# --- checks -----------------------------------------------------------------------------------
def assert_valid_forecast(out: dict[str, np.ndarray], starts: list[str]) -> None:
    n = len(starts)
    for name in QUANTILES:
        assert out[name].shape == (n, HORIZON), name
        assert np.isfinite(out[name]).all(), name
        assert (out[name] >= 0).all(), name
    assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all(), "quantiles cross"
    assert (out["p90"] > out["p10"]).any(), "degenerate (zero-width) intervals everywhere"
    assert out["p50"].sum() > 0, "an all-zero forecast"
    expected = [
        [f"{pd.Timestamp(s) + pd.Timedelta(hours=h):%Y-%m-%dT%H:%M:%S}" for h in range(HORIZON)] for s in starts
    ]
    assert out["target_time"].shape == (n, HORIZON)
    assert out["target_time"].tolist() == expected


def assert_same_forecast(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 1e-2) -> None:
    """Equal up to float noise (batches of different sizes may round differently)."""
    for name in QUANTILES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=atol, err_msg=name)
    assert a["target_time"].tolist() == b["target_time"].tolist()


def log_tail(server: RunningServer, chars: int = 4000) -> str:
    return server.log()[-chars:]


# === 1. health and metadata ===================================================================
def test_health_live_and_ready(server) -> None:
    live = requests.get(f"{server.http_url}/v2/health/live", timeout=TIMEOUT)
    assert live.status_code == 200 and live.json()["live"] is True
    ready = requests.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    model_ready = requests.get(f"{server.http_url}/v2/models/{MODEL}/ready", timeout=TIMEOUT)
    assert model_ready.status_code == 200 and model_ready.json() == {"name": MODEL, "ready": True}
    assert requests.get(f"{server.http_url}/v2/models/nope/ready", timeout=TIMEOUT).status_code == 404


EXPECTED_INPUTS = [
    {"name": "sensor_id", "datatype": "BYTES", "shape": [-1]},
    {"name": "forecast_start", "datatype": "BYTES", "shape": [-1]},
    {"name": "history", "datatype": "FP32", "shape": [-1, WINDOW]},
]
EXPECTED_OUTPUTS = [
    {"name": "p10", "datatype": "FP32", "shape": [-1, HORIZON]},
    {"name": "p50", "datatype": "FP32", "shape": [-1, HORIZON]},
    {"name": "p90", "datatype": "FP32", "shape": [-1, HORIZON]},
    {"name": "target_time", "datatype": "BYTES", "shape": [-1, HORIZON]},
    {"name": "latest_observation", "datatype": "BYTES", "shape": [-1]},
]


def _contract_view(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": t["name"], "datatype": t["datatype"], "shape": list(t["shape"])} for t in tensors]


def test_model_metadata_rest(server) -> None:
    response = requests.get(f"{server.http_url}/v2/models/{MODEL}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    meta = response.json()
    assert meta["name"] == MODEL
    assert _contract_view(meta["inputs"]) == EXPECTED_INPUTS
    assert _contract_view(meta["outputs"]) == EXPECTED_OUTPUTS


def test_health_and_model_metadata_grpc(server, stub, pb) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=TIMEOUT).ready
    try:
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=TIMEOUT)
    except grpc.RpcError as exc:
        pytest.fail(f"gRPC ModelMetadata failed: {exc.code()} {exc.details()}\n{log_tail(server)}")
    assert meta.name == MODEL
    as_dicts = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs]
    assert as_dicts == EXPECTED_INPUTS
    as_dicts = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs]
    assert as_dicts == EXPECTED_OUTPUTS


# === 2. REST V2 inference =====================================================================
def test_rest_one_sensor(server) -> None:
    out = rest_outputs(rest_infer(server, v2_inputs(["FliS_T"], START)))
    assert_valid_forecast(out, [START])
    assert out["p50"].dtype == np.float32


def test_rest_all_sensors_one_start(server, sensors) -> None:
    out = rest_outputs(rest_infer(server, v2_inputs(sensors, START)))
    assert_valid_forecast(out, [START] * len(sensors))
    # Each sensor is forecast from its own history: the rows are not copies of one another.
    assert len({tuple(np.round(row, 1)) for row in out["p50"]}) == len(sensors)
    # Row i of the batch is sensor i's forecast.
    single = rest_outputs(rest_infer(server, v2_inputs([sensors[3]], START)))
    assert_same_forecast({k: v[3:4] for k, v in out.items()}, single)


def test_rest_one_start_per_sensor(server) -> None:
    starts = ["2022-10-01T00:00:00", "2022-10-10T06:00:00", "2022-09-15T23:00:00"]
    out = rest_outputs(rest_infer(server, v2_inputs(KNOWN[:3], starts)))
    assert_valid_forecast(out, starts)
    for i, (sensor, start) in enumerate(zip(KNOWN[:3], starts, strict=True)):
        single = rest_outputs(rest_infer(server, v2_inputs([sensor], start)))
        assert_same_forecast({k: v[i : i + 1] for k, v in out.items()}, single)


@pytest.mark.parametrize("with_offset", ["2022-09-30T14:00:00Z", "2022-10-01T00:00:00+10:00"])
def test_rest_start_with_offset_is_converted_to_local_time(server, with_offset) -> None:
    """Melbourne is on AEST (+10:00) on 2022-10-01: both spellings are the local hour START."""
    local = rest_outputs(rest_infer(server, v2_inputs(["FliS_T"], START)))
    converted = rest_outputs(rest_infer(server, v2_inputs(["FliS_T"], with_offset)))
    assert_valid_forecast(converted, [START])
    assert_same_forecast(converted, local)


# === 3. explicit history ======================================================================
def test_known_sensor_explicit_history_equals_stored_history(server, panel) -> None:
    pair = ["FliS_T", "Col700_T"]
    history = explicit_history(panel, pair, START_WITH_GAP)
    assert history.shape == (2, WINDOW)
    assert (history == -1).any(), "the window should hold a missing hour to exercise the -1 marker"
    stored = rest_outputs(rest_infer(server, v2_inputs(pair, START_WITH_GAP)))
    sent = rest_outputs(rest_infer(server, v2_inputs(pair, START_WITH_GAP, history)))
    assert_valid_forecast(sent, [START_WITH_GAP] * 2)
    assert_same_forecast(sent, stored, atol=1e-3)


def test_unknown_sensor_with_explicit_history(server, panel) -> None:
    history = explicit_history(panel, ["FliS_T"], START)
    unknown = "NewSensor_T"
    assert unknown not in panel.sensor_ids
    out = rest_outputs(rest_infer(server, v2_inputs([unknown], START, history)))
    assert_valid_forecast(out, [START])
    # The explicit history is what the model reads: a busier week gives a busier forecast.
    busier = rest_outputs(rest_infer(server, v2_inputs([unknown], START, np.where(history >= 0, history * 3, -1))))
    assert busier["p50"].sum() > out["p50"].sum() * 1.2


def test_a_new_sensor_with_only_its_latest_week_gets_a_forecast(server, panel) -> None:
    """Cold start: a client sends the one week a new sensor has; the older three weeks count as missing."""
    week = explicit_history(panel, ["FliS_T"], START)[:, -RECENT:]
    out = rest_outputs(rest_infer(server, v2_inputs(["NewSensor_T"], START, week)))
    assert_valid_forecast(out, [START])
    padded = np.concatenate([np.full((1, WINDOW - RECENT), -1.0, dtype=np.float32), week], axis=1)
    assert_same_forecast(out, rest_outputs(rest_infer(server, v2_inputs(["NewSensor_T"], START, padded))), atol=1e-4)


def test_history_as_nested_list_is_accepted(server, panel) -> None:
    history = explicit_history(panel, ["FliS_T"], START)
    inputs = v2_inputs(["FliS_T"], START)
    inputs.append(tensor("history", "FP32", [1, WINDOW], history.astype(np.float64).tolist()))
    flat = rest_outputs(rest_infer(server, v2_inputs(["FliS_T"], START, history)))
    assert_same_forecast(rest_outputs(rest_infer(server, inputs)), flat, atol=1e-4)


# === 4. gRPC V2 ===============================================================================
@pytest.mark.parametrize("raw_bytes", [False, True], ids=["contents", "raw_input_contents"])
def test_grpc_equals_rest(server, stub, pb, sensors, raw_bytes) -> None:
    inputs = v2_inputs(sensors, START)
    response = stub.ModelInfer(grpc_request(pb, inputs, raw_bytes=raw_bytes), timeout=TIMEOUT)
    over_grpc = grpc_outputs(response)
    assert_valid_forecast(over_grpc, [START] * len(sensors))
    assert_same_forecast(over_grpc, rest_outputs(rest_infer(server, inputs)), atol=1e-3)
    assert "grpc method:" not in server.log(), "kserve's log line per gRPC call is off by default"


def test_grpc_with_explicit_history(server, stub, pb, panel) -> None:
    pair = ["FliS_T", "NewSensor_T"]
    history = explicit_history(panel, ["FliS_T", "Bou283_T"], START_WITH_GAP)
    inputs = v2_inputs(pair, START_WITH_GAP, history)
    for raw_bytes in (False, True):
        over_grpc = grpc_outputs(stub.ModelInfer(grpc_request(pb, inputs, raw_bytes=raw_bytes), timeout=TIMEOUT))
        assert_valid_forecast(over_grpc, [START_WITH_GAP] * 2)
        assert_same_forecast(over_grpc, rest_outputs(rest_infer(server, inputs)), atol=1e-3)


# === 5. V1 ====================================================================================
def test_v1_predict(server) -> None:
    instances = [{"sensor_id": "FliS_T", "forecast_start": START}, {"sensor_id": "Swa295_T", "forecast_start": START}]
    response = post(server, f"/v1/models/{MODEL}:predict", {"instances": instances})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == VERSION
    predictions = body["predictions"]
    assert [p["sensor_id"] for p in predictions] == ["FliS_T", "Swa295_T"]
    as_arrays = {
        name: np.asarray([p[name] for p in predictions], dtype=np.float32 if name != "target_time" else object)
        for name in (*QUANTILES, "target_time")
    }
    assert_valid_forecast(as_arrays, [START, START])
    v2 = rest_outputs(rest_infer(server, v2_inputs(["FliS_T", "Swa295_T"], START)))
    assert_same_forecast(as_arrays, v2, atol=0.006)  # V1 rounds to 2 decimals


# === 6. bad input =============================================================================
def _history_case(values: list[Any], shape: list[int] | None = None) -> list[dict[str, Any]]:
    inputs = v2_inputs(["FliS_T"], START)
    inputs.append(tensor("history", "FP32", shape or [1, len(values)], values))
    return inputs


_GOOD_WEEK = [100.0] * (WINDOW - 1)

# (id, V2 inputs, regex the error message must match) -- sent over REST and over gRPC.
BAD_V2 = [
    ("missing-sensor_id", v2_inputs(["FliS_T"], START)[1:], r"missing.*sensor_id|sensor_id.*(missing|required)"),
    (
        "missing-forecast_start",
        v2_inputs(["FliS_T"], START)[:1],
        r"missing.*forecast_start|forecast_start.*(missing|required)",
    ),
    (
        "sensor_id-int32",
        [tensor("sensor_id", "INT32", [1], [5]), v2_inputs(["FliS_T"], START)[1]],
        r"sensor_id.*(BYTES|INT32)",
    ),
    ("empty-batch", v2_inputs([], START), r"sensor_id.*empty|at least one"),
    ("unknown-sensor", v2_inputs(["NoSuchSensor_T"], START), r"unknown sensor.*NoSuchSensor_T"),
    ("start-not-a-date", v2_inputs(["FliS_T"], "yesterday"), r"forecast_start.*yesterday"),
    ("start-impossible-date", v2_inputs(["FliS_T"], "2022-13-45T00:00:00"), r"forecast_start.*2022-13-45"),
    ("start-not-on-the-hour", v2_inputs(["FliS_T"], "2022-10-01T00:30:00"), r"forecast_start.*on the hour"),
    ("start-1990", v2_inputs(["FliS_T"], "1990-01-01T00:00:00"), r"not enough history.*FliS_T"),
    ("start-2030", v2_inputs(["FliS_T"], "2030-01-01T00:00:00"), r"not enough history.*FliS_T"),
    ("history-wrong-shape", _history_case([100.0] * 10), r"history.*shape.*\[1, L\] with 168 <= L <= 672"),
    ("history-shape-disagrees-with-data", _history_case([100.0] * 10, [1, WINDOW]), r"history"),
    ("history-rows-not-sensors", _history_case([100.0] * 2 * WINDOW, [2, WINDOW]), r"history.*shape"),
    ("history-nan", _history_case([math.nan, *_GOOD_WEEK]), r"history.*(NaN|finite)"),
    ("history-inf", _history_case([math.inf, *_GOOD_WEEK]), r"history.*(inf|finite)"),
    ("history-all-missing", _history_case([-1.0] * WINDOW), r"not enough history"),
    (
        "history-int32",
        [*v2_inputs(["FliS_T"], START), tensor("history", "INT32", [1, WINDOW], [1] * WINDOW)],
        r"history.*FP32",
    ),
    ("batch-over-limit", v2_inputs(["FliS_T"] * 513, START), r"513.*512"),
    ("start-count-mismatch", v2_inputs(KNOWN[:3], [START, START]), r"forecast_start.*2.*3"),
    (
        "unknown-input",
        [*v2_inputs(["FliS_T"], START), tensor("weather", "BYTES", [1], ["sunny"])],
        r"unknown input.*weather",
    ),
    (
        "duplicated-input",
        [*v2_inputs(["FliS_T"], START), v2_inputs(["Bou283_T"], START)[0]],
        r"sensor_id.*(twice|duplicat|more than once)",
    ),
]

# (id, raw body or JSON-able body, regex): only meaningful over REST.
BAD_REST_ONLY = [
    ("malformed-json", '{"inputs": [{"name": "sensor_id", ', r"JSON"),
    ("not-an-object", "[1, 2, 3]", r"."),
    ("no-inputs-field", {"id": "x"}, r"inputs"),
    ("history-nan-as-string", {"inputs": _history_case(["NaN", *_GOOD_WEEK])}, r"history|NaN|float"),
    ("history-float32-overflow", {"inputs": _history_case([1e39, *_GOOD_WEEK])}, r"history.*(inf|finite)"),
    ("history-not-numbers", {"inputs": _history_case(["a"] * WINDOW)}, r"history"),
]


def _assert_client_error(server: RunningServer, response: requests.Response, pattern: str) -> None:
    assert 400 <= response.status_code < 500, (
        f"expected 4xx, got {response.status_code}: {response.text}\n--- server log ---\n{log_tail(server)}"
    )
    message = error_message(response)
    assert re.search(pattern, message, re.IGNORECASE | re.DOTALL), f"{message!r} does not match {pattern!r}"


@pytest.mark.parametrize(("inputs", "pattern"), [c[1:] for c in BAD_V2], ids=[c[0] for c in BAD_V2])
def test_rest_rejects_bad_request(server, inputs, pattern) -> None:
    _assert_client_error(server, rest_infer(server, inputs), pattern)


@pytest.mark.parametrize(("body", "pattern"), [c[1:] for c in BAD_REST_ONLY], ids=[c[0] for c in BAD_REST_ONLY])
def test_rest_rejects_bad_body(server, body, pattern) -> None:
    _assert_client_error(server, post(server, f"/v2/models/{MODEL}/infer", body), pattern)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ('{"inputs": [{"name": "sensor_id", ', r"JSON decode error"),  # truncated
        ("[1, 2, 3]", r"body"),  # valid JSON, not an object
        ('"inputs"', r"."),  # a JSON string passes as raw bytes, then fails as a binary-extension request
        ({"id": "x"}, r"inputs"),  # an object without the required field
        ('{"inputs": [{"name": "sensor_id", "datatype": "BYTES", "shape": Infinity, "data": ["FliS_T"]}]}', r"shape"),
    ],
    ids=["truncated-json", "array-body", "string-body", "no-inputs-field", "shape-infinity"],
)
def test_v2_body_errors_are_400_with_an_error_string(server, body, pattern) -> None:
    """Open Inference Protocol: a body the server cannot parse is 400 ``{"error": "<message>"}``, not FastAPI's 422."""
    response = post(server, f"/v2/models/{MODEL}/infer", body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert list(payload) == ["error"] and isinstance(payload["error"], str), payload
    assert re.search(pattern, payload["error"]), payload["error"]


def test_rest_nan_literal_in_history_is_rejected(server) -> None:
    """JSON has no NaN, but Python-style NaN/Infinity literals must still be refused cleanly."""
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps({"inputs": _history_case([0.0, *_GOOD_WEEK])}).replace("[0.0, ", f"[{literal}, ", 1)
        assert literal in body
        _assert_client_error(server, post(server, f"/v2/models/{MODEL}/infer", body), r"history|NaN|inf")


def test_rest_unknown_model_is_404(server) -> None:
    response = post(server, "/v2/models/nope/infer", {"inputs": v2_inputs(["FliS_T"], START)})
    assert response.status_code == 404, response.text


BAD_V1 = [
    ("malformed-json", '{"instances": [', r"."),
    ("no-instances", {"inputs": []}, r"instances"),
    ("instances-not-objects", {"instances": ["FliS_T"]}, r"instances"),
    ("missing-forecast_start", {"instances": [{"sensor_id": "FliS_T"}]}, r"forecast_start"),
    ("missing-sensor_id", {"instances": [{"forecast_start": START}]}, r"sensor_id"),
    ("unknown-sensor", {"instances": [{"sensor_id": "Nope_T", "forecast_start": START}]}, r"unknown sensor.*Nope_T"),
    (
        "start-not-on-the-hour",
        {"instances": [{"sensor_id": "FliS_T", "forecast_start": "2022-10-01T00:15:00"}]},
        r"on the hour",
    ),
    ("empty", {"instances": []}, r"empty|at least one"),
]


@pytest.mark.parametrize(("body", "pattern"), [c[1:] for c in BAD_V1], ids=[c[0] for c in BAD_V1])
def test_v1_rejects_bad_request(server, body, pattern) -> None:
    _assert_client_error(server, post(server, f"/v1/models/{MODEL}:predict", body), pattern)


def _assert_grpc_invalid(server: RunningServer, stub, request, pattern: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=TIMEOUT)
    code, details = caught.value.code(), caught.value.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code}: {details}\n--- server log ---\n{log_tail(server)}"
    assert re.search(pattern, details, re.IGNORECASE | re.DOTALL), f"{details!r} does not match {pattern!r}"


@pytest.mark.parametrize(("inputs", "pattern"), [c[1:] for c in BAD_V2], ids=[c[0] for c in BAD_V2])
def test_grpc_rejects_bad_request(server, stub, pb, inputs, pattern) -> None:
    _assert_grpc_invalid(server, stub, grpc_request(pb, inputs), pattern)


def _raw_request(pb, raw: list[bytes], history: bool = False):
    tensors = [
        pb.ModelInferRequest.InferInputTensor(name="sensor_id", datatype="BYTES", shape=[1]),
        pb.ModelInferRequest.InferInputTensor(name="forecast_start", datatype="BYTES", shape=[1]),
    ]
    if history:
        tensors.append(pb.ModelInferRequest.InferInputTensor(name="history", datatype="FP32", shape=[1, WINDOW]))
    return pb.ModelInferRequest(model_name=MODEL, inputs=tensors, raw_input_contents=raw)


_RAW_START = serialize_bytes([START.encode()])
_RAW_SENSOR = serialize_bytes([b"FliS_T"])

# (id, request builder, regex): binary-level damage only gRPC clients can send.
BAD_GRPC_ONLY = [
    (
        "sensor_id-not-utf8",
        lambda pb: grpc_request(pb, v2_inputs([b"\xff\xfe"], START)),  # type: ignore[list-item]
        r"sensor_id",
    ),
    (
        "forecast_start-not-utf8",
        lambda pb: grpc_request(pb, v2_inputs(["FliS_T"], [b"\xff\xfe"])),  # type: ignore[list-item]
        r"forecast_start",
    ),
    (
        "raw-bytes-length-past-end",
        lambda pb: _raw_request(pb, [struct.pack("<I", 100) + b"ab", _RAW_START]),
        r"sensor_id",
    ),
    ("raw-bytes-truncated-prefix", lambda pb: _raw_request(pb, [b"ab", _RAW_START]), r"sensor_id"),
    ("raw-history-odd-size", lambda pb: _raw_request(pb, [_RAW_SENSOR, _RAW_START, b"abc"], history=True), r"history"),
    (
        "raw-history-too-short",
        lambda pb: _raw_request(pb, [_RAW_SENSOR, _RAW_START, np.ones(10, "<f4").tobytes()], history=True),
        r"history",
    ),
    (
        "raw-history-nan",
        lambda pb: _raw_request(pb, [_RAW_SENSOR, _RAW_START, np.full(WINDOW, np.nan, "<f4").tobytes()], history=True),
        r"history.*(NaN|finite)",
    ),
    ("raw-count-mismatch", lambda pb: _raw_request(pb, [_RAW_SENSOR]), r"raw|inputs"),
]


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in BAD_GRPC_ONLY], ids=[c[0] for c in BAD_GRPC_ONLY])
def test_grpc_rejects_bad_binary_request(server, stub, pb, build, pattern) -> None:
    _assert_grpc_invalid(server, stub, build(pb), pattern)


# === after all the bad requests ===============================================================
def test_server_still_serves_after_bad_requests(server, stub, pb) -> None:
    assert server.process.poll() is None, f"the server died:\n{log_tail(server)}"
    assert requests.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT).status_code == 200
    inputs = v2_inputs(KNOWN, START)
    assert_valid_forecast(rest_outputs(rest_infer(server, inputs)), [START] * len(KNOWN))
    assert_valid_forecast(
        grpc_outputs(stub.ModelInfer(grpc_request(pb, inputs), timeout=TIMEOUT)), [START] * len(KNOWN)
    )


_LOG_RECORD = re.compile(r"^(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.MULTILINE)
_INTERNAL = ("Internal server error", 'HTTP/1.1" 500', "Exception in ASGI application", "generic_exception_handler")


def test_server_log_has_no_internal_errors(server) -> None:
    """No request of this module may have ended in a 500 / INTERNAL: every bad input is the client's."""
    records = [r for r in _LOG_RECORD.split(server.log()) if any(marker in r for marker in _INTERNAL)]
    assert not records, "internal errors in the server log:\n" + "\n".join(records)[-8000:]

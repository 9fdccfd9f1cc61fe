"""Property-based fuzzing of the real model server: V2 REST and V2 gRPC under malformed and adversarial input.

One ``python -m serving`` process serves the whole module. Hypothesis generates requests that are wrong in
every way a client can be wrong (types, shapes, datatypes, huge or negative shapes, NaN/inf, bad UTF-8,
missing or duplicated inputs, deep JSON, wrong content types, bad URLs and methods, binary-extension
headers, raw_input_contents that disagree with the tensors, odd parameters) plus near-valid ones. Every
answer must be a client error or a success: no HTTP status >= 500, no gRPC INTERNAL/UNKNOWN/UNAVAILABLE.
At the end the process must still be alive, its log free of internal errors, and a correct request over
each protocol must still return a well-formed forecast. Request counts are printed (``-s``) and asserted.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_profile import PROFILE, SIZES

pytestmark = pytest.mark.server

MODEL = "cityscale"
START = "2022-10-01T00:00:00"
WINDOW, HORIZON = 168, 24
TIMEOUT = 30
SENT: Counter[str] = Counter()  # requests sent per protocol, asserted at the end
STATUSES: Counter[str] = Counter()

FUZZ = settings(
    deadline=None,
    database=None,  # every run explores afresh; a failure prints its reproducing example
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

# --- shared value strategies ------------------------------------------------------------------------
SENSORS = st.sampled_from(["FliS_T", "Bou283_T", "Swa295_T", "NoSuchSensor_T", "", " ", "FliS_T\x00", "é" * 50])
STARTS = st.sampled_from(
    [START, "2022-10-05T00:00:00", "2022-13-45T00:00:00", "2022-10-01T00:30:00", "1990-01-01T00:00:00",
     "2030-01-01T00:00:00", "", "yesterday", "2022-10-01T00:00:00+11:00", "NaT", "9999-12-31T23:00:00"]
)  # fmt: skip
TEXT = st.text(max_size=24)
DATATYPES = st.sampled_from(
    ["BYTES", "FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT64", "BOOL",
     "", "fp32", "STRING", "OBJECT"]
) | st.text(max_size=6)  # fmt: skip
NAMES = st.sampled_from(["sensor_id", "forecast_start", "history"]) | TEXT
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
DIMS = st.integers(-3, 600) | st.sampled_from([0, -1, 2**31, 2**40, 2**62, WINDOW, HORIZON])
SHAPES = st.lists(DIMS, max_size=4)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | FLOATS | TEXT
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(TEXT, kids, max_size=4))


# --- REST strategies --------------------------------------------------------------------------------
@st.composite
def history_data(draw: st.DrawFn) -> list[Any]:
    """Near-valid history rows: the right length or not, with NaN/inf/huge/negative/strings mixed in."""
    length = draw(st.sampled_from([WINDOW, WINDOW - 1, WINDOW + 1, 0, 2 * WINDOW]))
    fill = draw(st.sampled_from([100.0, -1.0, 0.0, 1e39, -5.0]))
    values: list[Any] = [fill] * length
    for _ in range(draw(st.integers(0, 3))):
        if values:
            values[draw(st.integers(0, len(values) - 1))] = draw(SCALARS)
    return values


@st.composite
def rest_tensor(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(NAMES)
    if name == "history" and draw(st.booleans()):
        data: Any = draw(history_data())
        shape: Any = draw(st.sampled_from([[1, len(data)], [len(data)], [1, WINDOW], [2, WINDOW // 2]]) | SHAPES)
        return {"name": name, "datatype": draw(st.sampled_from(["FP32", "FP64"]) | DATATYPES), "shape": shape,
                "data": data}  # fmt: skip
    values = st.lists(SENSORS if name == "sensor_id" else STARTS, min_size=0, max_size=4)
    data = draw(values | st.lists(JSON_VALUES, max_size=4) | JSON_VALUES)
    shape = draw(st.just([len(data)] if isinstance(data, list) else [1]) | SHAPES | JSON_VALUES)
    tensor = {"name": name, "datatype": draw(st.just("BYTES") | DATATYPES), "shape": shape, "data": data}
    if draw(st.integers(0, 9)) == 0:
        tensor["parameters"] = draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3))
    for key in draw(st.lists(st.sampled_from(["name", "datatype", "shape", "data"]), max_size=1)):
        del tensor[key]
    return tensor


@st.composite
def rest_body(draw: st.DrawFn) -> dict[str, Any]:
    """A V2 body built from a valid one: inputs fuzzed, duplicated, dropped; odd outputs and parameters."""
    good = [
        {"name": "sensor_id", "datatype": "BYTES", "shape": [1], "data": [draw(SENSORS)]},
        {"name": "forecast_start", "datatype": "BYTES", "shape": [1], "data": [draw(STARTS)]},
    ]
    inputs = draw(st.lists(rest_tensor(), max_size=4))
    if draw(st.booleans()):
        inputs = [*good[: draw(st.integers(0, 2))], *inputs]
    body: dict[str, Any] = {"inputs": draw(st.just(inputs) | JSON_VALUES) if draw(st.integers(0, 9)) == 0 else inputs}
    if draw(st.booleans()):
        body["id"] = draw(TEXT | JSON_VALUES)
    if draw(st.integers(0, 3)) == 0:
        params = {"binary_data_output": draw(st.booleans() | JSON_VALUES)}
        body["parameters"] = draw(st.just(params) | st.dictionaries(TEXT, JSON_VALUES, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        output = {"name": draw(st.sampled_from(["p10", "p50", "p90", "target_time"]) | TEXT)}
        if draw(st.booleans()):
            output["parameters"] = {"binary_data": draw(st.booleans() | JSON_VALUES)}
        body["outputs"] = draw(st.just([output]) | JSON_VALUES)
    return body


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def rest_request(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body): mostly POST infer with a fuzzed body, sometimes everything else wrong."""
    path = f"/v2/models/{MODEL}/infer"
    method = "POST"
    headers = {"content-type": "application/json"}
    kind = draw(st.sampled_from(["v2"] * 6 + ["v1", "json", "bytes", "deep", "url", "method", "ctype", "binary"]))
    body: bytes = json.dumps(draw(rest_body())).encode()  # NaN/Infinity literals allowed on purpose
    if kind == "v1":
        path = f"/v1/models/{MODEL}:predict"
        instances = st.lists(st.dictionaries(st.sampled_from(["sensor_id", "forecast_start"]) | TEXT, JSON_VALUES))
        body = json.dumps(draw(st.fixed_dictionaries({"instances": instances | JSON_VALUES}) | JSON_VALUES)).encode()
    elif kind == "json":
        body = json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=256) | st.just(b'{"inputs": [{"name": "sensor_id", "data": ["\xff\xfe"]}]}'))
    elif kind == "deep":
        body = draw(st.sampled_from([_deep(10_000), '{"inputs": ' + _deep(3000) + "}", '{"a":' * 5000])).encode()
    elif kind == "url":
        models = ["nope", "", "cityscale/versions/0001", "cityscale/versions/9999", "..%2f"]
        model = draw(st.sampled_from(models) | TEXT)
        tail = draw(st.sampled_from(["infer", "ready", "", "metadata", "infer/extra"]))
        path = f"/v2/models/{requests.utils.quote(model, safe='/%')}/{tail}"
    elif kind == "method":
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    elif kind == "ctype":
        types = ["text/plain", "application/octet-stream", "multipart/form-data", "", "application/json; charset=x"]
        headers["content-type"] = draw(st.sampled_from(types))
    elif kind == "binary":  # the V2 binary-tensor extension: JSON header length, then raw bytes
        length = draw(st.integers(-5, len(body) + 50) | st.sampled_from(["abc", "", "1e3"]))
        headers["inference-header-content-length"] = str(length)
        headers["content-type"] = "application/octet-stream"
        body += draw(st.binary(max_size=64))
    return method, path, headers, body


# --- gRPC strategies --------------------------------------------------------------------------------
CONTENTS = {
    "bytes_contents": st.lists(st.binary(max_size=12) | SENSORS.map(str.encode) | STARTS.map(str.encode), max_size=4),
    "fp32_contents": st.lists(st.floats(width=32), max_size=WINDOW + 2),
    "fp64_contents": st.lists(FLOATS, max_size=8),
    "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
    "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
    "uint_contents": st.lists(st.integers(0, 2**32 - 1), max_size=8),
    "bool_contents": st.lists(st.booleans(), max_size=8),
}


def _serialize_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


RAW_CONTENTS = (
    st.binary(max_size=64)
    | st.lists(SENSORS.map(str.encode), min_size=1, max_size=3).map(_serialize_bytes)
    | st.lists(STARTS.map(str.encode), min_size=1, max_size=3).map(_serialize_bytes)
    | st.sampled_from([np.full(WINDOW, 100, "<f4").tobytes(), np.full(WINDOW, np.nan, "<f4").tobytes(), b"abc"])
    | st.integers(0, 2**32 - 1).map(lambda n: struct.pack("<I", n) + b"ab")
)


def _parameter(pb, draw: st.DrawFn):
    kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param"]))
    value = {"bool_param": st.booleans(), "int64_param": st.integers(-(2**63), 2**63 - 1), "string_param": TEXT}[kind]
    return pb.InferParameter(**{kind: draw(value)})


def _add_parameters(target, pb, draw: st.DrawFn) -> None:
    """Random protocol parameters (``binary_data_output``, ``content_type`` ...) on a request or tensor."""
    keys = st.sampled_from(["binary_data_output", "binary_data", "content_type", "sequence_id", "priority"]) | TEXT
    for key in draw(st.lists(keys, max_size=2, unique=True)):
        target[key].CopyFrom(_parameter(pb, draw))


@st.composite
def grpc_request(draw: st.DrawFn, pb) -> Any:
    tensors = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(NAMES)
        shape = draw(st.lists(st.integers(-(2**63), 2**63 - 1) | DIMS, max_size=3))
        tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=draw(DATATYPES), shape=shape)
        _add_parameters(tensor.parameters, pb, draw)
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(CONTENTS)))
            getattr(tensor.contents, field).extend(draw(CONTENTS[field]))
        tensors.append(tensor)
    if draw(st.booleans()):  # a near-valid request with one thing wrong keeps the fuzz past the first checks
        near = [
            pb.ModelInferRequest.InferInputTensor(name="sensor_id", datatype="BYTES", shape=[1]),
            pb.ModelInferRequest.InferInputTensor(name="forecast_start", datatype="BYTES", shape=[1]),
        ]
        near[0].contents.bytes_contents.append(draw(SENSORS).encode())
        near[1].contents.bytes_contents.append(draw(STARTS).encode())
        tensors = [*near, *tensors]
    raw = draw(st.lists(RAW_CONTENTS, max_size=len(tensors) + 1)) if draw(st.booleans()) else []
    output_names = st.sampled_from(["p10", "p50", "target_time"]) | TEXT
    outputs = [
        pb.ModelInferRequest.InferRequestedOutputTensor(name=draw(output_names)) for _ in range(draw(st.integers(0, 2)))
    ]
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from([MODEL] * 8 + ["", "nope", "CityScale"])),
        model_version=draw(st.sampled_from(["", "", "0001", "9999", "x"])),
        id=draw(TEXT),
        inputs=tensors,
        outputs=outputs,
        raw_input_contents=raw,
    )
    _add_parameters(request.parameters, pb, draw)
    return request


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pb():
    from kserve.protocol.grpc import grpc_predict_v2_pb2

    return grpc_predict_v2_pb2


@pytest.fixture(scope="module")
def stub(model_server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    channel = grpc.insecure_channel(model_server.grpc_target)
    grpc.channel_ready_future(channel).result(timeout=20)
    yield grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def http(model_server):
    with requests.Session() as session:
        yield session


# --- the fuzz -----------------------------------------------------------------------------------------
def test_rest_fuzz_never_answers_5xx(model_server, http) -> None:
    @settings(FUZZ, max_examples=SIZES.rest_fuzz_examples)
    @given(rest_request())
    def check(case: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = case
        response = http.request(method, model_server.http_url + path, data=body, headers=headers, timeout=TIMEOUT)
        SENT["rest"] += 1
        STATUSES[f"http {response.status_code}"] += 1
        # kserve answers 501 "Model versioning not supported yet" on /versions/<v>/ URLs: a documented refusal.
        allowed = response.status_code == 501 and "/versions/" in path
        assert response.status_code < 500 or allowed, (
            f"{method} {path} -> {response.status_code}: {response.text[:500]}"
        )

    check()


ALLOWED_GRPC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}


def test_grpc_fuzz_never_answers_internal(model_server, stub, pb) -> None:
    @settings(FUZZ, max_examples=SIZES.grpc_fuzz_examples)
    @given(grpc_request(pb))
    def check(request) -> None:
        try:
            stub.ModelInfer(request, timeout=TIMEOUT)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
        SENT["grpc"] += 1
        STATUSES[f"grpc {code.name}"] += 1
        assert code in ALLOWED_GRPC, f"{code.name}: {details}"

    check()


# --- afterwards ------------------------------------------------------------------------------------------
# kserve logs every client error with its traceback; these markers appear only for internal (5xx) ones.
_INTERNAL = ("Internal server error", 'HTTP/1.1" 500', "Exception in ASGI application", "generic_exception_handler")


def test_server_survives_and_still_forecasts(model_server, http, stub, pb) -> None:
    total = SENT["rest"] + SENT["grpc"]
    print(f"\nfuzz profile={PROFILE}: {SENT['rest']} REST + {SENT['grpc']} gRPC = {total} requests; {dict(STATUSES)}")
    expected = SIZES.rest_fuzz_examples + SIZES.grpc_fuzz_examples
    assert total >= expected, f"only {total} of {expected} fuzz requests were sent (did a fuzz test fail?)"
    assert model_server.process.poll() is None, "the server process died"

    body = {"inputs": [
        {"name": "sensor_id", "datatype": "BYTES", "shape": [2], "data": ["FliS_T", "Bou283_T"]},
        {"name": "forecast_start", "datatype": "BYTES", "shape": [1], "data": [START]},
    ]}  # fmt: skip
    response = http.post(f"{model_server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert {"p10", "p50", "p90", "target_time"} <= set(outputs)
    p50 = np.asarray(outputs["p50"]["data"], dtype=np.float32).reshape(outputs["p50"]["shape"])
    assert p50.shape == (2, HORIZON) and np.isfinite(p50).all() and (p50 >= 0).all()

    tensors = []
    for name, values in (("sensor_id", [b"FliS_T", b"Bou283_T"]), ("forecast_start", [START.encode()])):
        tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(values)])
        tensor.contents.bytes_contents.extend(values)
        tensors.append(tensor)
    reply = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=tensors), timeout=TIMEOUT)
    shapes = {o.name: list(o.shape) for o in reply.outputs}
    for name in ("p10", "p50", "p90", "target_time"):
        assert shapes[name] == [2, HORIZON], name
    grpc_p50 = np.frombuffer(reply.raw_output_contents[[o.name for o in reply.outputs].index("p50")], "<f4")
    np.testing.assert_allclose(grpc_p50.reshape(2, HORIZON), p50, rtol=1e-4, atol=1e-2)

    internal = [line for line in model_server.log().splitlines() if any(m in line for m in _INTERNAL)]
    assert not internal, "internal errors in the server log:\n" + "\n".join(internal[-40:])

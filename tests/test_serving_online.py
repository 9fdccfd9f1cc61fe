"""Serving with online features, as real processes on loopback: Feast feature server -> predictor, and
transformer -> predictor over gRPC V2; plus model metadata versions and the Prometheus ``/metrics``.

Processes (module scope): one Feast feature server over a store materialized from the ``trained_workdir``
raw zone (its freshness hour is 2022-11-01T00:00, the hour after the last count), one predictor configured
with ``CITYSCALE_FEATURE_SERVER_URL`` (clients send only sensor_id + forecast_start), one transformer pointed
at that predictor (``--predictor_protocol grpc-v2``), and, for the reference, the explicit-history request
built from the raw zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.feast_backend import FeastBackend
from cityscale.features.server import local_feature_server
from cityscale.loopback import LoopbackServer as FeatureServer
from serving.local_server import RunningServer, local_model_server
from tests.test_serving import (
    MODEL,
    VERSION,
    assert_same_forecast,
    assert_valid_forecast,
    error_message,
    explicit_history,
    grpc_outputs,
    grpc_request,
    rest_infer,
    rest_outputs,
    v2_inputs,
)

pytestmark = pytest.mark.server

FRESH = "2022-11-01T00:00:00"  # what the online store serves: the hour after the raw zone's last count
STALE = "2022-10-31T23:00:00"
TIMEOUT = 30


@pytest.fixture(scope="module")
def feature_store(trained_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The Feast store of the trained workdir's raw zone, built in its own directory (the workdir is shared)."""
    settings = Settings(workdir=trained_workdir, features_dir=str(tmp_path_factory.mktemp("serving_features")))
    info = FeastBackend(settings).materialize_latest(FeatureComputer(settings.resolved_store_uri))
    assert info.online_as_of == {"melbourne": FRESH}
    return settings


@pytest.fixture(scope="module")
def feature_server(feature_store: Settings) -> Iterator[FeatureServer]:
    with local_feature_server(feature_store.resolved_store_uri, feature_store.resolved_features_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def online_env(trained_workdir: Path, feature_server: FeatureServer) -> dict[str, str]:
    return {"CITYSCALE_WORKDIR": str(trained_workdir), "CITYSCALE_FEATURE_SERVER_URL": feature_server.url}


@pytest.fixture(scope="module")
def predictor(online_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with local_model_server(env=online_env, log_dir=tmp_path_factory.mktemp("predictor_logs")) as running:
        yield running


@pytest.fixture(scope="module")
def transformer(
    online_env: dict[str, str], predictor: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    args = ["--predictor_host", predictor.grpc_target, "--predictor_protocol", "grpc-v2"]
    log_dir = tmp_path_factory.mktemp("transformer_logs")
    with local_model_server(env=online_env, module="serving.transformer", args=args, log_dir=log_dir) as running:
        yield running


@pytest.fixture(scope="module")
def stubs():
    from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

    channels: list[grpc.Channel] = []

    def make(server: RunningServer):
        channel = grpc.insecure_channel(server.grpc_target)
        grpc.channel_ready_future(channel).result(timeout=20)
        channels.append(channel)
        return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

    yield grpc_predict_v2_pb2, make
    for channel in channels:
        channel.close()


def _panel(trained_workdir: Path):
    from cityscale import raw_zone
    from cityscale.panel import Panel

    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


# === 1. the predictor reads history from the Feast feature server ============================
def test_predictor_serves_from_the_feature_server(predictor, trained_workdir) -> None:
    panel = _panel(trained_workdir)
    sensors = list(panel.sensor_ids)
    online = rest_outputs(rest_infer(predictor, v2_inputs(sensors, FRESH)))
    assert_valid_forecast(online, [FRESH] * len(sensors))
    # The same forecast as sending the raw zone's last week explicitly: the feature server held exactly it.
    sent = rest_outputs(rest_infer(predictor, v2_inputs(sensors, FRESH, explicit_history(panel, sensors, FRESH))))
    assert_same_forecast(online, sent, atol=1e-3)
    metrics = requests.get(f"{predictor.http_url}/metrics", timeout=TIMEOUT).text
    assert 'source="FeastHistorySource"' in metrics  # not the raw zone: the history came from the feature server


def test_predictor_rejects_a_start_the_online_store_cannot_serve(predictor, stubs) -> None:
    response = rest_infer(predictor, v2_inputs(["FliS_T"], STALE))
    assert response.status_code == 400, response.text
    message = error_message(response)
    assert f"serves forecast_start {FRESH} only, not {STALE}" in message
    pb, make = stubs
    with pytest.raises(grpc.RpcError) as caught:
        make(predictor).ModelInfer(grpc_request(pb, v2_inputs(["FliS_T"], STALE)), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"serves forecast_start {FRESH} only" in caught.value.details()
    unknown = rest_infer(predictor, v2_inputs(["NoSuchSensor_T"], FRESH))
    assert unknown.status_code == 400 and "unknown sensor" in error_message(unknown)


# === 2. transformer -> predictor over gRPC V2 ================================================
def test_transformer_equals_the_direct_predictor(transformer, predictor, stubs, trained_workdir) -> None:
    sensors = list(_panel(trained_workdir).sensor_ids)
    direct = rest_outputs(rest_infer(predictor, v2_inputs(sensors, FRESH)))
    via_rest = rest_outputs(rest_infer(transformer, v2_inputs(sensors, FRESH)))  # checks name + version too
    assert_same_forecast(via_rest, direct, atol=1e-4)
    pb, make = stubs
    for raw_bytes in (False, True):
        request = grpc_request(pb, v2_inputs(sensors[:3], "2022-10-31T13:00:00Z"), raw_bytes=raw_bytes)
        via_grpc = grpc_outputs(make(transformer).ModelInfer(request, timeout=TIMEOUT))  # UTC -> 00:00 local
        assert_same_forecast(via_grpc, {k: v[:3] for k, v in direct.items()}, atol=1e-4)
    meta = requests.get(f"{transformer.http_url}/v2/models/{MODEL}", timeout=TIMEOUT).json()
    assert [t["name"] for t in meta["inputs"]] == ["sensor_id", "forecast_start"]


def test_transformer_errors_are_400_with_the_message(transformer, stubs) -> None:
    stale = rest_infer(transformer, v2_inputs(["FliS_T"], STALE))
    assert stale.status_code == 400 and f"serves forecast_start {FRESH} only" in error_message(stale)
    unknown = rest_infer(transformer, v2_inputs(["NoSuchSensor_T"], FRESH))
    assert unknown.status_code == 400 and "unknown sensor 'NoSuchSensor_T'" in error_message(unknown)
    bad_hour = rest_infer(transformer, v2_inputs(["FliS_T"], "2022-11-01T00:30:00"))
    assert bad_hour.status_code == 400 and "on the hour" in error_message(bad_hour)
    extra = v2_inputs(["FliS_T"], FRESH) + [{"name": "history", "datatype": "FP32", "shape": [1], "data": [1.0]}]
    assert rest_infer(transformer, extra).status_code == 400
    pb, make = stubs
    with pytest.raises(grpc.RpcError) as caught:
        make(transformer).ModelInfer(grpc_request(pb, v2_inputs(["FliS_T"], STALE)), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Still serving after the errors.
    assert rest_infer(transformer, v2_inputs(["FliS_T"], FRESH)).status_code == 200


# === 3. model version in metadata ============================================================
def test_metadata_lists_the_loaded_version(predictor, stubs) -> None:
    meta = requests.get(f"{predictor.http_url}/v2/models/{MODEL}", timeout=TIMEOUT).json()
    assert meta["versions"] == [VERSION]
    assert meta["platform"] == "pytorch"
    pb, make = stubs
    grpc_meta = make(predictor).ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=TIMEOUT)
    assert list(grpc_meta.versions) == [VERSION]


# === 5. Prometheus metrics ===================================================================
def _samples(text: str, name: str) -> dict[str, float]:
    """``{label-string: value}`` of the samples of metric ``name`` in a Prometheus text exposition."""
    out = {}
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, flags=re.M):
        out[match.group(1) or ""] = float(match.group(2))
    return out


def test_metrics_after_requests(predictor, transformer) -> None:
    before = requests.get(f"{predictor.http_url}/metrics", timeout=TIMEOUT).text
    ok_before = sum(v for k, v in _samples(before, "cityscale_forecast_requests_total").items() if 'status="ok"' in k)
    for _ in range(3):
        assert rest_infer(predictor, v2_inputs(["FliS_T", "Bou283_T"], FRESH)).status_code == 200
    assert rest_infer(predictor, v2_inputs(["FliS_T"], STALE)).status_code == 400
    text = requests.get(f"{predictor.http_url}/metrics", timeout=TIMEOUT).text

    requests_total = _samples(text, "cityscale_forecast_requests_total")
    ok = {k: v for k, v in requests_total.items() if 'status="ok"' in k}
    assert sum(ok.values()) >= ok_before + 3
    assert all(f'model_version="{VERSION}"' in k and f'model_name="{MODEL}"' in k for k in requests_total)
    assert any('status="invalid"' in k and 'protocol="rest-v2"' in k and v >= 1 for k, v in requests_total.items())
    assert sum(_samples(text, "cityscale_forecast_latency_seconds_count").values()) >= 4
    batch = _samples(text, "cityscale_forecast_batch_sensors_bucket")
    assert batch[f'{{le="2.0",model_name="{MODEL}"}}'] >= 3
    fetch = _samples(text, "cityscale_feature_fetch_seconds_count")
    assert any('source="FeastHistorySource"' in k and 'call="history"' in k and v >= 3 for k, v in fetch.items())
    info = _samples(text, "cityscale_model_info")
    assert info == {f'{{model_name="{MODEL}",model_version="{VERSION}",role="predictor"}}': 1.0}
    assert "request_predict_seconds" in text  # kserve's own histograms still there

    transformer_text = requests.get(f"{transformer.http_url}/metrics", timeout=TIMEOUT).text
    assert _samples(transformer_text, "cityscale_feature_fetch_seconds_count"), "transformer fetch latency missing"

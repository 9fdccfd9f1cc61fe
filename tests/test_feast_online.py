"""Online features: materialize, the Feast feature server (a real process on loopback) and its client."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pandas as pd
import pytest
import requests

from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.feast_backend import FeastBackend
from cityscale.features.online import FeastHistorySource, FeatureServiceError, history_source_from_settings
from cityscale.features.server import local_feature_server
from cityscale.forecasting.service import ForecastRequestError, RawZoneHistory
from cityscale.ingestion.run import ingest_snapshot

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """A raw zone (real sample, 2022) with its Feast store built and materialized at the freshness hour."""
    workdir = tmp_path_factory.mktemp("feast_online")
    settings = Settings(workdir=workdir)
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start="2022-01-01", settings=settings)
    backend = FeastBackend(settings)
    computer = FeatureComputer(settings.resolved_store_uri)
    info = backend.materialize_latest(computer)
    return settings, backend, computer, info


@pytest.fixture(scope="module")
def server(built):
    settings, backend, _, _ = built
    with local_feature_server(settings.resolved_store_uri, backend.root) as srv:
        yield srv


def test_online_store_returns_exactly_the_offline_values_at_T(built, server) -> None:
    """Materialized at T, the feature server returns what point-in-time retrieval gives for T."""
    settings, backend, computer, info = built
    spine = computer.latest_spine()
    tables = computer.compute(spine)
    offline = backend.training_frame(tables, service="sensor_online")
    sensors = spine["sensor_id"].tolist()
    body = {"feature_service": "sensor_online", "entities": {"sensor_id": sensors}, "full_feature_names": True}
    resp = requests.post(f"{server.url}/get-online-features", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    online = dict(zip(payload["metadata"]["feature_names"], payload["results"], strict=True))
    compared = mismatches = 0
    for view in backend.spec.service("sensor_online").views:
        for f in backend.spec.view(view).features:
            name = f"{view}__{f.name}"
            result = online[name]
            assert all(s == "PRESENT" or v is None for s, v in zip(result["statuses"], result["values"], strict=True))
            for i in range(len(sensors)):
                a, b = offline[name].iloc[i], result["values"][i]
                if f.dtype == "float32_array":
                    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
                    mismatches += int((a != b).sum()) + abs(len(a) - len(b))
                    compared += len(a)
                elif f.dtype in ("float32", "float64"):
                    dt = np.float32 if f.dtype == "float32" else np.float64
                    same = (pd.isna(a) and b is None) or dt(a) == dt(b)
                    mismatches += 0 if same else 1
                    compared += 1
                else:
                    mismatches += 0 if (str(a) == str(b) or (pd.isna(a) and b is None)) else 1
                    compared += 1
    assert compared >= 500
    assert mismatches == 0
    assert info.online_as_of == {"melbourne": "2022-11-01T00:00:00"}


def test_feast_history_source_serves_the_freshness_hour(built, server) -> None:
    settings, _, _, info = built
    source = FeastHistorySource(server.url)
    direct = RawZoneHistory(settings.resolved_store_uri)
    sensors = direct.panel.sensor_ids
    start = pd.Timestamp(info.online_as_of["melbourne"])
    assert start == direct.last_hour + pd.Timedelta(hours=1)
    got = source.history(sensors, [start] * len(sensors), 168)
    want = direct.history(sensors, [start] * len(sensors), 168)
    np.testing.assert_array_equal(got, want)  # NaN where hours are missing, on both paths
    assert source.cities_of([sensors[0], "NoSuchSensor_T"]) == ["melbourne", None]  # None -> "unknown sensor ..."

    with pytest.raises(ForecastRequestError, match="serves forecast_start 2022-11-01T00:00:00 only"):
        source.history([sensors[0]], [start - pd.Timedelta(hours=1)], 168)
    with pytest.raises(ForecastRequestError, match="no history window"):
        source.history(["NoSuchSensor_T"], [start], 168)
    configured = history_source_from_settings(Settings(feature_server_url=server.url))
    assert isinstance(configured, FeastHistorySource)


def test_a_cold_batch_of_cities_is_one_feature_server_request(built, server, monkeypatch) -> None:
    settings, _, _, _ = built
    sensors = RawZoneHistory(settings.resolved_store_uri).panel.sensor_ids
    source = FeastHistorySource(server.url)
    calls: list[int] = []
    post = source._session.post

    def counting_post(url: str, **kwargs):
        calls.append(len(kwargs["json"]["entities"]["sensor_id"]))
        return post(url, **kwargs)

    monkeypatch.setattr(source._session, "post", counting_post)
    assert source.cities_of(sensors) == ["melbourne"] * len(sensors)
    assert calls == [len(sensors)]  # one request for the whole cold batch
    assert source.cities_of([*sensors[:2], "NoSuchSensor_T"]) == ["melbourne", "melbourne", None]
    assert calls == [len(sensors), 1]  # cached sensors cost nothing; only the unknown one is asked for


def test_feast_client_error_paths_against_real_servers(built, server) -> None:
    # A server that is not there: connection refused is the service's failure, not the client's.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(FeatureServiceError, match="unreachable"):
        FeastHistorySource(f"http://127.0.0.1:{dead}").cities_of(["FliS_T"])

    # The real feature server refusing a request (unknown feature view): a 404 with Feast's message.
    bad = FeastHistorySource(server.url)
    with pytest.raises(FeatureServiceError, match="404"):
        bad._get(["no_such_view:x"], ["FliS_T"])

    # A server that accepts and never answers: the client times out instead of hanging the predictor.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        slow = FeastHistorySource(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5)
        with pytest.raises(FeatureServiceError, match="unreachable"):
            slow.history(["FliS_T"], [pd.Timestamp("2022-11-01")], 168)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()

    with pytest.raises(ValueError, match="no feature server URL"):
        FeastHistorySource("")

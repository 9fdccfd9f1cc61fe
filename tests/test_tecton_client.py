"""``TectonHistorySource`` (tecton-client, Apache-2.0) against a FAKE Tecton cloud on loopback.

``FakeTectonFeatureService`` is a fake of Tecton's hosted FeatureService HTTP API (no Tecton account is
available to tests, and the Tecton SDK is proprietary): a real HTTP server on 127.0.0.1 that answers
``POST /api/v1/feature-service/get-features`` in Tecton's documented request/response shapes, serving
windows from the real Feast-computed tables so the values are real.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tecton_client")

from cityscale.features.compute import FeatureComputer  # noqa: E402
from cityscale.features.online import FeatureServiceError, TectonHistorySource  # noqa: E402
from cityscale.forecasting.service import ForecastRequestError  # noqa: E402

pytestmark = pytest.mark.server
API_KEY = "fake-key"


class FakeTectonFeatureService:
    """FAKE Tecton cloud: serves the `sensor_online` feature service of one workspace from a dict."""

    def __init__(self, rows: dict[str, dict], effective_time: str):
        self.rows = rows
        self.effective_time = effective_time
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                if self.headers.get("Authorization") != f"Tecton-key {API_KEY}":
                    return self._send(401, {"error": "invalid API key", "code": 16})
                params = body["params"]
                if (
                    self.path != "/api/v1/feature-service/get-features"
                    or params["featureServiceName"] != "sensor_online"
                ):
                    return self._send(404, {"error": f"feature service {params['featureServiceName']} not found"})
                row = fake.rows.get(params["joinKeyMap"].get("sensor_id"), {})
                names = ["sensor_metadata.city", "sensor_window.history_672h"]
                return self._send(
                    200,
                    {
                        "result": {"features": [row.get("city"), row.get("history")]},
                        "metadata": {
                            "features": [
                                {
                                    "name": names[0],
                                    "dataType": {"type": "string"},
                                    "effectiveTime": fake.effective_time if row else None,
                                },
                                {
                                    "name": names[1],
                                    "dataType": {"type": "array", "elementType": {"type": "float32"}},
                                    "effectiveTime": fake.effective_time if row else None,
                                },
                            ]
                        },
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTectonFeatureService:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def fake_tecton(sample_rows: pd.DataFrame):
    raw = sample_rows[sample_rows["timestamp_local"] >= "2022-06-01"]
    computer = FeatureComputer(raw)
    spine = computer.latest_spine()
    window = computer.compute(spine, views=["sensor_window"]).views["sensor_window"]
    rows = {
        r.sensor_id: {"city": "melbourne", "history": [float(v) for v in r.history_672h]} for r in window.itertuples()
    }
    as_of = spine["event_timestamp"].iloc[0]
    with FakeTectonFeatureService(rows, as_of.strftime("%Y-%m-%dT%H:%M:%SZ")) as fake:
        yield fake, window, spine["origin"].iloc[0]


def test_tecton_history_source_reads_windows_from_the_feature_service(fake_tecton) -> None:
    fake, window, start = fake_tecton
    source = TectonHistorySource(fake.url, API_KEY, "prod")
    sensors = window["sensor_id"].tolist()[:3]
    got = source.history(sensors, [start] * 3, 672)
    want = np.stack([np.asarray(v, np.float32) for v in window["history_672h"].iloc[:3]])
    want[want < 0] = np.nan
    np.testing.assert_array_equal(got, want)
    assert source.cities_of(sensors[:1]) == ["melbourne"]
    assert fake.requests[0]["params"]["workspaceName"] == "prod"
    assert fake.requests[0]["params"]["metadataOptions"]["includeEffectiveTimes"] is True


def test_tecton_history_source_error_paths(fake_tecton) -> None:
    fake, window, start = fake_tecton
    sensor = window["sensor_id"].iloc[0]
    assert TectonHistorySource(fake.url, API_KEY, "prod").cities_of(["NoSuchSensor_T"]) == [None]
    with pytest.raises(ForecastRequestError, match="no history window"):
        TectonHistorySource(fake.url, API_KEY, "prod").history(["NoSuchSensor_T"], [start], 168)
    with pytest.raises(ForecastRequestError, match="serves forecast_start"):
        TectonHistorySource(fake.url, API_KEY, "prod").history([sensor], [start + pd.Timedelta(hours=5)], 168)
    with pytest.raises(FeatureServiceError, match="401"):
        TectonHistorySource(fake.url, "wrong-key", "prod").cities_of([sensor])
    with pytest.raises(FeatureServiceError, match="not found"):
        TectonHistorySource(fake.url, API_KEY, "prod", feature_service="nope").cities_of([sensor])
    with pytest.raises(FeatureServiceError, match="unreachable"):
        TectonHistorySource("http://127.0.0.1:9", API_KEY, "prod").cities_of([sensor])
    with pytest.raises(ValueError, match="TECTON_URL"):
        TectonHistorySource("", API_KEY, "prod")

"""The real-time path end to end, as real processes on loopback: push gateway -> Feast feature server
(``POST /push``) -> KServe predictor (V2), plus the journal's durability and the edge simulator.

Module processes: a Feast feature server over a store materialized from a copy of the trained workdir's
raw zone (freshness hour 2022-11-01T00:00), the gateway (journal commits only when asked, so each test
controls what reaches the raw zone) and the predictor reading history from the feature server. The tests
run in order: each moves the online store forward from where the previous one left it.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer
from cityscale.features.feast_backend import FeastBackend
from cityscale.features.server import local_feature_server
from cityscale.features.spec import SPEC
from cityscale.ingestion.run import ingest_snapshot
from cityscale.loopback import LoopbackServer as FeatureServer
from cityscale.loopback import stop
from cityscale.realtime.process import local_gateway, start_gateway
from serving.local_server import RunningServer, local_model_server
from tests.conftest import MELBOURNE_2014_DST
from tests.test_serving import rest_infer, rest_outputs, v2_inputs

pytestmark = pytest.mark.server

FRESH = pd.Timestamp("2022-11-01T00:00:00")  # served after the batch build: the hour after the last count
SENSOR = "FliS_T"
TIMEOUT = 30
TECTON = Path(__file__).resolve().parents[1] / "feature_repo" / "tecton"


def iso(stamp: pd.Timestamp) -> str:
    return f"{stamp:%Y-%m-%dT%H:%M:%S}"


@pytest.fixture(scope="module")
def env(trained_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Settings of the stack: the trained model, a private copy of its raw zone, its own feature store."""
    root = tmp_path_factory.mktemp("realtime")
    shutil.copytree(trained_workdir / "store", root / "store")
    return {
        "CITYSCALE_WORKDIR": str(trained_workdir),
        "CITYSCALE_STORE_URI": str(root / "store"),
        "CITYSCALE_FEATURES_DIR": str(root / "features"),
        "CITYSCALE_REALTIME_JOURNAL_DIR": str(root / "journal"),
        "CITYSCALE_REALTIME_COMMIT_INTERVAL_S": "3600",
        "CITYSCALE_REALTIME_MAX_RECORDS": "500",
        "CITYSCALE_REALTIME_CATCH_UP_DELAY_S": "0.2",
        "CITYSCALE_FORECAST_LOG_ENABLED": "false",
    }


@pytest.fixture(scope="module")
def feature_server(env: dict[str, str]) -> Iterator[FeatureServer]:
    settings = Settings(store_uri=env["CITYSCALE_STORE_URI"], features_dir=env["CITYSCALE_FEATURES_DIR"])
    info = FeastBackend(settings).materialize_latest(FeatureComputer(settings.resolved_store_uri))
    assert info.online_as_of == {"melbourne": iso(FRESH)}
    with local_feature_server(settings.resolved_store_uri, settings.resolved_features_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def stack_env(env: dict[str, str], feature_server: FeatureServer) -> dict[str, str]:
    return {**env, "CITYSCALE_FEATURE_SERVER_URL": feature_server.url}


@pytest.fixture(scope="module")
def gateway(stack_env: dict[str, str]) -> Iterator[dict[str, FeatureServer]]:
    """The gateway in a holder, so that the crash test can replace it with a restarted one."""
    holder = {"gw": start_gateway(stack_env)}
    try:
        yield holder
    finally:
        stop(holder["gw"])


@pytest.fixture(scope="module")
def predictor(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with local_model_server(env=stack_env, log_dir=tmp_path_factory.mktemp("realtime_predictor")) as running:
        yield running


def push(gateway: dict, records: list[dict]) -> requests.Response:
    return requests.post(f"{gateway['gw'].url}/v1/push", json={"records": records}, timeout=TIMEOUT)


def record(hour: pd.Timestamp, count: int, sensor: str = SENSOR, **extra) -> dict:
    return {"city": "melbourne", "sensor_id": sensor, "hour": iso(hour), "count": count, **extra}


def online(feature_server: FeatureServer, sensors: list[str], features: list[str]) -> dict[str, dict]:
    body = {"features": features, "entities": {"sensor_id": sensors}, "full_feature_names": True}
    resp = requests.post(f"{feature_server.url}/get-online-features", json=body, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    payload = resp.json()
    return dict(zip(payload["metadata"]["feature_names"], payload["results"], strict=True))


def window(feature_server: FeatureServer, sensor: str = SENSOR) -> tuple[np.ndarray, pd.Timestamp]:
    """The sensor's online history window and the UTC event time it is for."""
    got = online(feature_server, [sensor], ["sensor_window:history_672h"])["sensor_window__history_672h"]
    return np.asarray(got["values"][0], np.float32), pd.Timestamp(got["event_timestamps"][0])


def forecast(predictor: RunningServer, start: pd.Timestamp, sensor: str = SENSOR) -> dict[str, np.ndarray]:
    return rest_outputs(rest_infer(predictor, v2_inputs([sensor], iso(start))))


def stats(gateway: dict) -> dict:
    return requests.get(f"{gateway['gw'].url}/v1/stats", timeout=TIMEOUT).json()


def settle(gateway: dict) -> None:
    """Wait for the catch-up round that moves sensors that did not push to their city's new hour."""
    for _ in range(100):
        if stats(gateway)["online_pending_sensors"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"online rows still pending: {stats(gateway)}")


# --- push -> online feature -> forecast ------------------------------------------------------------
def test_push_reaches_online_features_and_the_next_forecast(gateway, feature_server, predictor) -> None:
    before = forecast(predictor, FRESH)
    assert before["latest_observation"].tolist() == [iso(FRESH - pd.Timedelta(hours=1))]

    resp = push(gateway, [record(FRESH, 4321)])
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1 and resp.json()["latest_hour"] == {"melbourne": iso(FRESH)}
    nxt = FRESH + pd.Timedelta(hours=1)
    values, _ = window(feature_server)
    assert values[-1] == 4321  # the new hour is the window's last slot, the rest shifted by one
    # The acknowledgement waits for the window (what forecasts read); the aggregates follow in the same round.
    settle(gateway)
    agg = online(feature_server, [SENSOR], ["sensor_aggregates:pedestrians_mean_1h"])
    assert agg["sensor_aggregates__pedestrians_mean_1h"]["values"][0] == pytest.approx(4321)

    fresh = forecast(predictor, nxt)  # served at once: no batch build, no cache in between
    assert fresh["latest_observation"].tolist() == [iso(FRESH)]
    # The whole city moved on: the previous start is no longer what the online store serves.
    stale = rest_infer(predictor, v2_inputs([SENSOR], iso(FRESH)))
    assert stale.status_code == 400 and iso(nxt) in stale.text

    # A correction of the same hour changes the forecast from the same start.
    assert push(gateway, [record(FRESH, 3)]).json()["accepted"] == 1
    corrected = forecast(predictor, nxt)
    assert corrected["latest_observation"].tolist() == [iso(FRESH)]
    assert np.abs(corrected["p50"] - fresh["p50"]).max() > 1.0


def test_late_duplicate_and_out_of_order_records(gateway, feature_server, predictor) -> None:
    t1, t2, t3 = (FRESH + pd.Timedelta(hours=h) for h in (1, 2, 3))
    # Out of order: the latest hour first, then the earlier ones; one record duplicated in the batch.
    resp = push(gateway, [record(t3, 30), record(t1, 10)])
    assert resp.status_code == 200, resp.text
    assert resp.json()["latest_hour"] == {"melbourne": iso(t3)}
    resp = push(gateway, [record(t2, 20), record(t2, 20)])
    assert resp.json()["accepted"] == 1 and resp.json()["unchanged"] == 1  # one key: one row

    # A retried push changes nothing and is not journaled again.
    pending = stats(gateway)["journal_pending_rows"]
    retry = push(gateway, [record(t2, 20), record(t3, 30)])
    assert retry.json() | {"latest_hour": None} == {
        "accepted": 0,
        "unchanged": 2,
        "online_rows": 0,
        "latest_hour": None,
    }
    assert stats(gateway)["journal_pending_rows"] == pending

    values, event = window(feature_server)
    assert values[-4:].tolist() == [3, 10, 20, 30]  # each hour in its own slot
    assert event == pd.Timestamp("2022-10-31T17:00:00Z")  # t3 + 1 h in Melbourne (AEDT, UTC+11)

    # A late count for an hour 30 h back lands in its slot, and the forecast from t3 + 1 h sees it.
    late_hour = t3 - pd.Timedelta(hours=30)
    before = forecast(predictor, t3 + pd.Timedelta(hours=1))
    assert push(gateway, [record(late_hour, 9999)]).json()["accepted"] == 1
    values, _ = window(feature_server)
    assert values[-31] == 9999
    after = forecast(predictor, t3 + pd.Timedelta(hours=1))
    assert after["latest_observation"].tolist() == [iso(t3)]
    assert not np.array_equal(before["p50"], after["p50"])

    # A sensor that did not push (SENSOR pushed alone) has the new hours as missing at its window's end,
    # once the catch-up round has moved it to the city's new hour.
    settle(gateway)
    other, event = window(feature_server, "Swa295_T")
    assert event == pd.Timestamp("2022-10-31T17:00:00Z")
    assert (other[-4:] == -1).all()


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"city": "sydney"}, "city", "unknown city"),
        ({"count": -1}, "count", "greater than or equal to 0"),
        ({"count": 12.5}, "count", "valid integer"),
        ({"count": "12"}, "count", "valid integer"),
        ({"hour": "2022-11-01T00:30:00"}, "hour", "not the start of an hour"),
        ({"hour": "yesterday at noon"}, "hour", "not an ISO 8601"),
        ({"hour": "2022-10-02T02:00:00"}, "hour", "daylight-saving gap"),
        ({"sensor_id": ""}, "sensor_id", "at least 1 character"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_schema_violations_are_422_and_write_nothing(gateway, feature_server, bad, field, reason) -> None:
    settle(gateway)
    before_stats, before_window = stats(gateway), window(feature_server)
    good = record(FRESH + pd.Timedelta(hours=10), 77)
    resp = push(gateway, [good, {**record(FRESH, 1), **bad}])
    assert resp.status_code == 422, resp.text
    problem = resp.json()["problems"][0]
    assert problem["record"] == 1 and problem["field"] == field and reason in problem["error"], problem
    assert stats(gateway) == before_stats  # the good record of the batch was not written either
    np.testing.assert_array_equal(window(feature_server)[0], before_window[0])


def test_bad_bodies_and_conflicts_are_4xx(gateway) -> None:
    url = f"{gateway['gw'].url}/v1/push"
    assert requests.post(url, data=b"not json", timeout=TIMEOUT).status_code == 422
    assert requests.post(url, json={"records": []}, timeout=TIMEOUT).status_code == 422
    too_many = [record(FRESH, i) for i in range(501)]
    resp = push(gateway, too_many)
    assert resp.status_code == 413 and "limit of 500" in resp.text
    moved = push(gateway, [{**record(FRESH, 1), "city": "auckland"}])  # a Melbourne sensor id in Auckland
    assert moved.status_code == 409 and "belongs to 'melbourne'" in moved.text


# --- durability -----------------------------------------------------------------------------------
def test_sigkill_mid_stream_loses_no_acknowledged_count(gateway, stack_env, feature_server) -> None:
    """Kill -9 the gateway while a client streams pushes; restart: every acknowledged count is there."""
    acked: list[dict] = []
    start = FRESH + pd.Timedelta(hours=4)
    enough = threading.Event()

    def stream() -> None:
        for i in range(400):
            rec = record(start + pd.Timedelta(hours=i), 100 + i, sensor="Swa295_T")
            try:
                resp = push(gateway, [rec])
            except requests.RequestException:
                return
            if resp.status_code != 200:
                return
            acked.append(rec)
            if len(acked) >= 15:
                enough.set()

    sender = threading.Thread(target=stream)
    sender.start()
    assert enough.wait(TIMEOUT)
    os.kill(gateway["gw"].process.pid, signal.SIGKILL)
    sender.join(TIMEOUT)
    gateway["gw"].process.wait(TIMEOUT)
    stop(gateway["gw"])  # already dead: this only removes its temporary log
    gateway["gw"] = start_gateway(stack_env)  # replays the journal, commits it, re-pushes online rows

    assert requests.post(f"{gateway['gw'].url}/v1/commit", timeout=TIMEOUT).status_code == 200
    raw = raw_zone.read(stack_env["CITYSCALE_STORE_URI"])
    got = raw[raw["sensor_id"] == "Swa295_T"].set_index("timestamp_local")["count"]
    for rec in acked:
        assert got.get(pd.Timestamp(rec["hour"])) == rec["count"], rec
    assert raw.duplicated(["city", "sensor_id", "timestamp_local"]).sum() == 0
    values, _ = window(feature_server, "Swa295_T")
    last = pd.Timestamp(acked[-1]["hour"])
    latest = pd.Timestamp(stats(gateway)["latest_hour"]["melbourne"])
    assert latest >= last
    assert values[-1 - int((latest - last) / pd.Timedelta(hours=1))] == acked[-1]["count"]


def test_online_rows_equal_the_batch_build_of_the_committed_raw_zone(gateway, stack_env, feature_server) -> None:
    """Offline/online parity for the pushed views: what the gateway pushed = what a batch build computes."""
    requests.post(f"{gateway['gw'].url}/v1/commit", timeout=TIMEOUT).raise_for_status()
    settle(gateway)
    computer = FeatureComputer(stack_env["CITYSCALE_STORE_URI"])
    spine = computer.latest_spine()
    tables = computer.compute(spine, views=[v.name for v in SPEC.pushed_views()])
    sensors = spine["sensor_id"].tolist()
    compared = 0
    for view in SPEC.pushed_views():
        offline = tables.views[view.name].set_index("sensor_id").loc[sensors]
        names = [f"{view.name}:{f.name}" for f in view.features]
        got = online(feature_server, sensors, names)
        for f in view.features:
            result = got[f"{view.name}__{f.name}"]
            assert all(s == "PRESENT" for s in result["statuses"]), f.name
            stamps = pd.to_datetime(result["event_timestamps"], utc=True)
            assert (stamps == pd.DatetimeIndex(offline["event_timestamp"])).all(), f.name
            for want, have in zip(offline[f.name], result["values"], strict=True):
                if f.dtype == "float32_array":
                    np.testing.assert_array_equal(np.asarray(have, np.float32), np.asarray(want, np.float32))
                elif pd.isna(want):
                    assert have is None, f.name
                elif f.dtype == "float32":
                    assert np.float32(have) == np.float32(want), f.name
                else:
                    assert have == want, f.name
                compared += 1
    assert compared == len(sensors) * 13 and len(sensors) == 12
    assert spine["origin"].max() > FRESH  # the batch build sees the pushed hours


def test_commit_worker_starts_with_the_gateway(tmp_path: Path) -> None:
    """The journal-commit worker process is up before the first commit, so traffic never pays its spawn."""
    from cityscale.realtime.gateway import Gateway

    settings = Settings(workdir=tmp_path, feature_server_url="")
    gateway = Gateway(settings)
    try:
        workers = list(gateway._upserter._processes.values())
        assert len(workers) == 1 and workers[0].is_alive() and gateway.committed_rows == 0
    finally:
        gateway.close()
    assert not workers[0].is_alive()


def test_pushed_rows_equal_the_definitions_written_out_plainly() -> None:
    """The gateway's vectorized rows (numpy windows, int64 moments) equal the features computed one value at a
    time in plain Python, on counts with gaps, an empty sensor and the largest count the ingest accepts."""
    import math

    from cityscale.realtime.state import CountState

    state, rng, last = CountState(SPEC), np.random.default_rng(7), 120_000
    for i in range(12):
        sensor = f"s{i}"
        state.city_of[sensor], state.first_pos[sensor], state.names[sensor] = "melbourne", last - 5_000, None
        observed = rng.random(state.lookback + 20) > rng.random() * 0.6
        state.counts[sensor] = {
            last - k: int(rng.integers(0, 100_001 if i == 3 else 3_000))
            for k in range(state.lookback + 20)
            if observed[k]
        }
    state.counts["s5"] = {}
    state.city_last["melbourne"] = last
    sensors = sorted(state.city_of)
    for view in SPEC.pushed_views():
        rows = state.rows(view, sensors)
        for i, sensor in enumerate(sensors):
            held = state.counts[sensor]
            series = [held.get(p) for p in range(last + 1 - state.lookback, last + 1)]  # None = missing
            for f in view.features:
                got = rows[f.name][i]
                if f.kind == "window":
                    want = [float(np.float32(v)) if v is not None else -1.0 for v in series[-f.length :]]
                elif f.kind == "same_hour_of_week":
                    want = []
                    for h in range(f.length):
                        seen = [
                            series[-(168 * k - h)] for k in range(1, f.weeks + 1) if series[-(168 * k - h)] is not None
                        ]
                        want.append(float(np.float32(sum(seen) / len(seen))) if seen else -1.0)
                elif f.kind == "aggregate":
                    seen = [v for v in series[-f.window_hours :] if v is not None]
                    n, s1, s2 = len(seen), sum(seen), sum(v * v for v in seen)
                    want = {
                        "count": n,
                        "sum": s1,
                        "mean": float(np.float32(s1 / n)) if n else None,
                        "stddev": float(np.float32(math.sqrt((n * s2 - s1 * s1) / (n * (n - 1))))) if n > 1 else None,
                    }[f.function]
                else:
                    continue
                assert got == want and type(got) is type(want), (sensor, f.name)


class _FakeFeatureServerRecordingPushes:
    """A fake feature server: a loopback HTTP server answering ``POST /push`` after 30 ms, recording how many
    were in flight at once and each push's source and sensors.

    A fake only to observe the gateway's concurrency and rounds deterministically (with the real Feast server an
    overlap fails only sometimes); the real one is tested above.
    """

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.lock, self.in_flight, self.most, self.pushes = threading.Lock(), 0, 0, 0
        self.rounds: list[tuple[str, list[str]]] = []  # (push source, sensor ids) of each push, in arrival order
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder.lock:
                    recorder.rounds.append((body["push_source_name"], body["df"]["sensor_id"]))
                    recorder.in_flight += 1
                    recorder.most = max(recorder.most, recorder.in_flight)
                    recorder.pushes += 1
                time.sleep(0.03)
                with recorder.lock:
                    recorder.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("serial", [True, False])
def test_the_gateway_sends_one_push_at_a_time_unless_told_otherwise(tmp_path: Path, serial: bool) -> None:
    """Window rounds and aggregates pushes never overlap (Feast's SQLite online store fails two at once with
    "cannot start a transaction within a transaction"); with ``realtime_serial_pushes`` off they do."""
    from cityscale.realtime.gateway import Gateway
    from cityscale.realtime.records import CountRow

    recorder = _FakeFeatureServerRecordingPushes()
    settings = Settings(
        workdir=tmp_path,
        feature_server_url=recorder.url,
        realtime_aggregates_interval_s=0.0,
        realtime_serial_pushes=serial,
    )
    gateway = Gateway(settings)
    try:
        gateway.start()
        hour0 = int((pd.Timestamp("2022-10-01") - pd.Timestamp("1970-01-01")) // pd.Timedelta(hours=1))

        def pushes(sensor: str) -> None:
            for hour in range(25):
                gateway.push([CountRow("melbourne", sensor, hour0 + hour, 10 + hour, None)])

        threads = [threading.Thread(target=pushes, args=(f"sensor-{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        gateway.close()
        recorder.close()
    assert recorder.pushes > 20
    assert recorder.most == 1 if serial else recorder.most > 1


def test_a_catch_up_sends_each_sensor_at_its_own_due(tmp_path: Path) -> None:
    """A new hour moves the silent sensors' rows ``realtime_catch_up_delay_s`` later, each with its own due: a
    sensor still silent when the next hour opens does not pull the whole city into its round (that round of
    every sensor, as each hour opened, was the real-time tail of ``make bench-realtime``)."""
    from cityscale.features.spec import HISTORY_VIEW
    from cityscale.realtime.gateway import Gateway
    from cityscale.realtime.records import CountRow

    recorder = _FakeFeatureServerRecordingPushes()
    settings = Settings(
        workdir=tmp_path,
        feature_server_url=recorder.url,
        realtime_aggregates_interval_s=60.0,
        realtime_catch_up_delay_s=1.0,
    )
    gateway = Gateway(settings)
    hour0 = int((pd.Timestamp("2022-10-01") - pd.Timestamp("1970-01-01")) // pd.Timedelta(hours=1))
    try:
        gateway.start()
        gateway.push([CountRow("melbourne", sensor, hour0, 5, None) for sensor in ("a", "b", "c")])
        gateway.push([CountRow("melbourne", "a", hour0 + 1, 6, None)])  # opens hour 1: b and c due in 1 s
        gateway.push([CountRow("melbourne", "b", hour0 + 1, 6, None)])  # b counts hour 1 itself
        time.sleep(0.4)
        gateway.push([CountRow("melbourne", "a", hour0 + 2, 7, None)])  # opens hour 2: b due in 1 s, c keeps its due
        deadline = time.monotonic() + 10
        while gateway.stats()["online_pending_sensors"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gateway.close()
        recorder.close()
    windows = [sensors for source, sensors in recorder.rounds if source == SPEC.view(HISTORY_VIEW).push_source]
    assert windows[:3] == [["a", "b", "c"], ["a"], ["b"]]
    assert windows[3:] == [["a"], ["c"], ["b"]]  # before the fix: [["a"], ["b", "c"]], both at c's due


# --- the edge simulator ---------------------------------------------------------------------------
def test_replay_of_real_counts_equals_a_batch_ingest(tmp_path: Path) -> None:
    """`cityscale replay` with jitter, late, duplicate and drop-out faults lands row-for-row what a batch
    ingest of the same counts lands."""
    from cityscale.ingestion.run import load_snapshot

    long = load_snapshot(MELBOURNE_2014_DST)  # the first 6 sensors of grouped_data_2014_2014.csv, 25 Mar - 9 Apr
    keep = sorted(long["sensor_id"].unique())[:6]
    hours = long["timestamp_local"]
    part = long[long["sensor_id"].isin(keep) & (hours >= "2014-03-25") & (hours < "2014-04-10")]
    data = tmp_path / "slice.parquet"  # spans the April 2014 DST change (a repeated hour)
    part.to_parquet(data)

    batch = Settings(workdir=tmp_path / "batch")
    ingest_snapshot(data, batch.resolved_store_uri, settings=batch)
    env = {
        "CITYSCALE_STORE_URI": str(tmp_path / "pushed"),
        "CITYSCALE_REALTIME_JOURNAL_DIR": str(tmp_path / "journal"),
        "CITYSCALE_FEATURE_SERVER_URL": "",
        "FEAST_FEATURE_SERVER_URL": "",
    }
    with local_gateway(env) as gw:
        cmd = [sys.executable, "-m", "cityscale.cli", "replay", "--data", str(data), "--speed", "0"]
        cmd += ["--target", gw.url, "--seed", "7", "--late", "0.1", "--duplicates", "0.1", "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        requests.post(f"{gw.url}/v1/commit", timeout=TIMEOUT).raise_for_status()
    assert '"late": ' in out.stdout and '"dropout_sensor": "' in out.stdout and '"rejected": 0' in out.stdout
    key = ["city", "sensor_id", "timestamp_local"]
    pushed = raw_zone.read(str(tmp_path / "pushed")).sort_values(key, ignore_index=True)
    batched = raw_zone.read(batch.resolved_store_uri).sort_values(key, ignore_index=True)
    assert len(batched) > 2000
    pd.testing.assert_frame_equal(pushed, batched)


# --- the Tecton declaration (static: the SDK is proprietary) ---------------------------------------
def test_tecton_push_source_is_declared_from_the_spec() -> None:
    spec = SPEC.push_source("raw_counts_push")
    tree = ast.parse((TECTON / "data_sources" / "raw_counts_push.py").read_text())
    calls = {ast.unparse(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    source = {k.arg: k.value for k in calls["StreamSource"].keywords}
    assert ast.literal_eval(source["name"]) == spec.name
    assert ast.literal_eval(source["description"]) == spec.description
    assert ast.unparse(source["stream_config"]).startswith("PushConfig(")
    assert ast.unparse(source["batch_config"]) == "raw_counts.batch_config"
    fields = [(ast.literal_eval(f.args[0]), ast.unparse(f.args[1])) for f in source["schema"].elts]
    types = {"string": "String", "int64": "Int64", "timestamp": "Timestamp"}
    assert fields == [(name, types[kind]) for name, kind in spec.raw_fields]


class _Scripted:
    """A ``requests.Session`` stand-in answering ``/v1/push`` from a script of status codes or exceptions."""

    def __init__(self, script: list) -> None:
        self.script, self.posts = list(script), 0

    def post(self, url: str, json: dict, timeout: float) -> requests.Response:
        self.posts += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        resp = requests.Response()
        resp.status_code = step
        resp._content = b'{"accepted": 2, "unchanged": 0}' if step == 200 else b"nope"
        return resp


@pytest.mark.parametrize(
    ("script", "posts", "sleeps", "outcome"),
    [
        ([503, requests.ConnectionError("reset"), 200], 3, [0.1, 0.2], "accepted"),
        ([503, 503, 503, 503], 4, [0.1, 0.2, 0.4], "gave up after 3 retries: 503: nope"),
        ([400], 1, [], "400: nope"),
    ],
)
def test_replay_retries_only_connection_errors_and_5xx(monkeypatch, script, posts, sleeps, outcome) -> None:
    from cityscale.realtime import replay

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    session, report = _Scripted(script), replay.ReplayReport()
    replay._send(session, "http://gateway", [{}, {}], replay.ReplayOptions(retries=3), report)
    assert (session.posts, slept) == (posts, pytest.approx(sleeps))
    if outcome == "accepted":
        assert (report.accepted, report.rejected, report.retried_requests) == (2, 0, 2)
    else:
        assert report.rejected == 2 and report.errors == [outcome]

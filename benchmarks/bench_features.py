"""Feature platform benchmark on the full Melbourne history (../shared/data, ~4 M hourly counts).

Phases, each in a fresh child process so its peak RSS is its own:
  materialize    compute every view at the freshness hour, apply the Feast repo, materialize (SQLite)
  training_set   point-in-time training set (Feast) for every daily 00:00 origin of the whole history
Then the Feast feature server (a real gunicorn process on loopback) answers online lookups through the
predictor's client (``FeastHistorySource.history``): one sensor, and all sensors, per request.

Targets (2 cores): training set < 2 min and < 3 GB; online p99 < 5 ms (1 sensor), < 20 ms (all sensors).
Writes build/bench/features.json.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BENCH_DIR, latency_summary, write_result  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "melbourne_pcs"
WORK = BENCH_DIR / "features_work"
STORE = WORK / "store"


def _ensure_store() -> dict:
    from cityscale import raw_zone
    from cityscale.config import Settings
    from cityscale.ingestion.run import ingest_snapshot

    if not (STORE / "raw").exists():
        ingest_snapshot(SHARED, str(STORE.absolute()), settings=Settings())
    df = raw_zone.read(str(STORE.absolute()))
    return {
        "rows": len(df),
        "sensors": int(df["sensor_id"].nunique()),
        "from": f"{df['timestamp_local'].min():%Y-%m-%d}",
        "to": f"{df['timestamp_local'].max():%Y-%m-%d}",
    }


def _phase(name: str, queue: mp.Queue) -> None:
    import pandas as pd

    from cityscale.config import Settings
    from cityscale.features.compute import FeatureComputer
    from cityscale.features.feast_backend import FeastBackend
    from cityscale.features.retrieval import build_training_set

    settings = Settings(workdir=WORK.absolute())
    start = time.perf_counter()
    if name == "materialize":
        info = FeastBackend(settings).materialize_latest(FeatureComputer(str(STORE.absolute())))
        extra = {"sensors": info.n_sensors, "serves": info.online_as_of["melbourne"]}
    else:
        computer = FeatureComputer(str(STORE.absolute()))
        bounds = computer.bounds()
        first = pd.Timestamp("1970-01-01") + pd.Timedelta(hours=int(bounds["first_pos"].min()))
        last = pd.Timestamp("1970-01-01") + pd.Timedelta(hours=int(bounds["last_pos"].max()) - 23)
        origins = pd.date_range(first.ceil("D"), last, freq="D")
        del computer
        ts = build_training_set(str(STORE.absolute()), origins, settings, features_dir=WORK / "training_store")
        extra = {
            "origins": len(origins),
            "examples": len(ts.examples),
            "values_per_example": int(ts.examples.history.shape[1] + ts.examples.target.shape[1]),
        }
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"seconds": seconds, "peak_rss_mb": peak_mb, **extra})


def _run_phase(name: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_phase, args=(name, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _online() -> dict[str, dict]:
    import pandas as pd

    from cityscale.config import Settings
    from cityscale.features.feast_backend import FeastBackend
    from cityscale.features.online import FeastHistorySource
    from cityscale.features.server import local_feature_server

    settings = Settings(workdir=WORK.absolute())
    backend = FeastBackend(settings)
    info = backend.build_info()
    start = pd.Timestamp(info.online_as_of["melbourne"])
    frame = pd.read_parquet(backend.offline_dir / "sensor_window.parquet", columns=["sensor_id", "event_timestamp"])
    sensors = frame.loc[frame["event_timestamp"] == frame["event_timestamp"].max(), "sensor_id"].tolist()
    out = {}
    with local_feature_server(str(STORE.absolute()), backend.root) as server:
        client = FeastHistorySource(server.url)
        for case, batch, n in (
            ("online lookup, 1 sensor", sensors[:1], 500),
            (f"online lookup, all {len(sensors)} sensors", sensors, 200),
        ):
            for _ in range(20):  # warm-up (connections, registry cache)
                client.history(batch, [start] * len(batch), 168)
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                client.history(batch, [start] * len(batch), 168)
                samples.append(time.perf_counter() - t0)
            out[case] = latency_summary(samples)
    return out


def main() -> None:
    data = _ensure_store()
    rows = {"raw zone (full Melbourne history)": data}
    rows["materialize (latest hour, all views)"] = _run_phase("materialize")
    rows["training set, all daily origins (Feast PIT join)"] = _run_phase("training_set")
    rows.update(_online())
    write_result("features", rows)


if __name__ == "__main__":
    main()

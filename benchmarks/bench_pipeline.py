"""Walking-skeleton benchmark: ingestion, training throughput, backtest and V2 REST latency.

Prints a table and writes build/bench/pipeline.json. Everything runs on real data: the bundled
sample, plus the full Melbourne history from ../shared/data when it is present.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import latency_summary, timed, write_result  # noqa: E402

from cityscale import raw_zone, registry  # noqa: E402
from cityscale.config import Settings  # noqa: E402
from cityscale.evaluation.backtest import daily_origins, run_backtest  # noqa: E402
from cityscale.forecasting.forecaster import Forecaster  # noqa: E402
from cityscale.ingestion.run import ingest_snapshot  # noqa: E402
from cityscale.model.examples import cut_examples, origin_grid  # noqa: E402
from cityscale.panel import Panel  # noqa: E402
from cityscale.training.train import train_model  # noqa: E402
from serving.client import forecast_request  # noqa: E402
from serving.local_server import local_model_server  # noqa: E402

FULL_HISTORY = Path(__file__).resolve().parents[2] / "shared" / "data" / "melbourne_pcs"
REQUESTS = 300


def main() -> None:
    rows: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="cityscale-bench-"))
    settings = Settings(workdir=work, max_epochs=4)

    if FULL_HISTORY.is_dir():
        full, secs = timed(lambda: ingest_snapshot(FULL_HISTORY, str(work / "full-store"), settings=settings))
        rows["ingest full Melbourne history (snapshot)"] = {
            "rows": len(full.rows),
            "seconds": secs,
            "rows_per_s": len(full.rows) / secs,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    sample, secs = timed(lambda: ingest_snapshot(settings.sample_data, settings.resolved_store_uri, settings=settings))
    rows["ingest bundled sample"] = {"rows": len(sample.rows), "seconds": secs, "rows_per_s": len(sample.rows) / secs}

    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    test_start = pd.Timestamp("2022-07-01")
    origins = origin_grid(panel.index[0], test_start - pd.Timedelta(hours=24), settings.origin_stride_hours)
    examples, secs = timed(lambda: cut_examples(panel, origins, settings.input_window, settings.horizon, 0.5))
    rows["build training examples"] = {"rows": len(examples), "seconds": secs, "rows_per_s": len(examples) / secs}

    contract, secs = timed(lambda: train_model(examples, work / "model", settings))
    rows[f"train {settings.max_epochs} epochs (CPU, 1 process)"] = {
        "rows": len(examples) * settings.max_epochs,
        "seconds": secs,
        "rows_per_s": len(examples) * settings.max_epochs / secs,
    }

    forecaster = Forecaster.load(work / "model")
    test_origins = daily_origins(test_start, "2022-10-31")
    result, secs = timed(lambda: run_backtest(panel, test_origins, {"model": forecaster}, 24))
    for method, metrics in result.summary.iterrows():
        rows[f"backtest {method}"] = {
            "wape": metrics["wape"],
            "mase": metrics["mase"],
            "n_pairs": int(metrics["n_pairs"]),
        }
    rows["backtest model"]["coverage"] = result.summary.loc["model", "coverage"]
    rows["backtest model"]["seconds"] = secs

    version = registry.register(work / "model", settings.resolved_registry_uri, "cityscale", {}, "bench")
    registry.set_alias(settings.resolved_registry_uri, "cityscale", "production", version)
    sensors = panel.sensor_ids
    with local_model_server(env={"CITYSCALE_WORKDIR": str(work)}, log_dir=work) as server:
        url = f"{server.http_url}/v2/models/cityscale/infer"
        with requests.Session() as session:
            for label, ids in (("1 sensor", sensors[:1]), (f"{len(sensors)} sensors", sensors)):
                body = forecast_request(ids, "2022-10-20T00:00:00")
                session.post(url, json=body).raise_for_status()  # warm-up
                samples = []
                for _ in range(REQUESTS):
                    t = time.perf_counter()
                    session.post(url, json=body).raise_for_status()
                    samples.append(time.perf_counter() - t)
                rows[f"V2 REST infer, {label}, concurrency 1"] = latency_summary(samples)
    write_result("pipeline", rows)
    del contract


if __name__ == "__main__":
    main()

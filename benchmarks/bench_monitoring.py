"""Monitoring benchmark: the forecast log's cost on the request path, and the monitoring run's time.

Trains a small model on Jan-Oct 2022 of the bundled sample (1 epoch: latency does not depend on accuracy),
then times ``CityScalePredictor._predict_v1`` (validation, history, model, response: everything but HTTP)
for 1 and 64 sensors with the forecast log off and on, and ``ForecastLog.record`` alone. Then logs a week
of 6-hourly forecasts for every sensor and times ``monitor()`` + the HTML report on that store.
Writes build/bench/monitoring.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import latency_summary, timed, write_result  # noqa: E402
from bench_serving import _ensure_model  # noqa: E402

from cityscale import raw_zone  # noqa: E402
from cityscale.config import Settings  # noqa: E402
from cityscale.monitoring import forecast_log  # noqa: E402
from cityscale.monitoring.report import to_html  # noqa: E402
from cityscale.monitoring.run import monitor  # noqa: E402
from serving.predictor import CityScalePredictor  # noqa: E402

CALLS = 400


def trained(workdir: Path) -> Settings:
    """A production model trained on the bundled sample in its own ``workdir`` (so the forecast log is this run's)."""
    return Settings(workdir=_ensure_model(workdir), max_epochs=1)


def time_requests(predictor: CityScalePredictor, sensors: list[str], start: str) -> list[float]:
    payload = {"instances": [{"sensor_id": s, "forecast_start": start} for s in sensors]}
    for _ in range(20):
        predictor.answer(payload)
    samples = []
    for _ in range(CALLS):
        began = time.perf_counter()
        predictor.answer(payload)
        samples.append(time.perf_counter() - began)
    return samples


def main() -> None:
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = trained(Path(tmp))
        sensors = sorted(raw_zone.read(settings.resolved_store_uri)["sensor_id"].unique())
        for log_on in (False, True):
            predictor = CityScalePredictor(settings.model_copy(update={"forecast_log_enabled": log_on}))
            predictor.load()
            for n in (1, 64):
                batch = (sensors * 6)[:n]
                case = f"predict_v1 {n} sensors, log {'on' if log_on else 'off'}"
                rows[case] = latency_summary(time_requests(predictor, batch, "2022-10-20T00:00:00"))
            if predictor.forecast_log is not None:
                batch = predictor.service.forecast(sensors, ["2022-10-20T00:00:00"])
                samples = []
                for _ in range(CALLS):
                    began = time.perf_counter()
                    predictor.forecast_log.record(batch, predictor.model_version)
                    samples.append(time.perf_counter() - began)
                rows[f"ForecastLog.record ({len(sensors)} sensors)"] = latency_summary(samples)
                _, seconds = timed(predictor.forecast_log.close)
                logged = len(forecast_log.read(settings.resolved_store_uri))
                rows["forecast log drain on close"] = {"rows": logged, "seconds": round(seconds, 3)}
        store = settings.resolved_store_uri
        served = pd.Timestamp.now(tz="UTC")
        week = [
            forecast_log.batch_rows(predictor.service.forecast(sensors, [f"{o:%Y-%m-%dT%H:%M:%S}"]), "bench", served)
            for o in pd.date_range("2022-10-20", "2022-10-31", freq="6h")
        ]
        forecast_log.write_part(store, pd.concat(week, ignore_index=True))
        result, seconds = timed(lambda: monitor(store, settings))
        rows["monitor() over 7 days"] = {"forecast_rows": len(result.joined), "seconds": round(seconds, 3)}
        page, seconds = timed(lambda: to_html(result))
        rows["HTML report"] = {"kbytes": len(page) // 1024, "seconds": round(seconds, 3)}
    write_result("monitoring", rows)


if __name__ == "__main__":
    main()

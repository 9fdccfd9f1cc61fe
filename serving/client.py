"""Minimal V2 REST client for the CityScale forecast contract (used by ``make run`` and tests)."""

from __future__ import annotations

from typing import Any

import requests


def forecast_request(sensor_ids: list[str], forecast_start: str | list[str]) -> dict[str, Any]:
    """The V2 JSON body asking for forecasts of ``sensor_ids`` from ``forecast_start``."""
    starts = [forecast_start] if isinstance(forecast_start, str) else list(forecast_start)
    return {
        "inputs": [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [len(sensor_ids)], "data": list(sensor_ids)},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [len(starts)], "data": starts},
        ]
    }


def infer_rest(
    base_url: str, model_name: str, sensor_ids: list[str], forecast_start: str | list[str], timeout: float = 30
) -> dict[str, Any]:
    response = requests.post(
        f"{base_url}/v2/models/{model_name}/infer", json=forecast_request(sensor_ids, forecast_start), timeout=timeout
    )
    if response.status_code != 200:
        raise RuntimeError(f"inference failed with {response.status_code}: {response.text}")
    return response.json()

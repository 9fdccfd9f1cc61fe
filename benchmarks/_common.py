"""Helpers shared by the benchmarks: timing, percentiles, result files."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path("build/bench")
console = Console(width=160)


def metric_samples(http_url: str, family: str) -> list[tuple[dict[str, str], float]]:
    """The samples ``(labels, value)`` of one metric family on the server's ``/metrics``."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(requests.get(f"{http_url}/metrics", timeout=10).text)
    return [(s.labels, s.value) for f in families if f.name == family for s in f.samples]


def wait_for_inlined_trees(http_url: str, timeout_s: float = 600.0) -> float:
    """Wait until the predictor at ``http_url`` serves its inlined trees (built aside after start-up); seconds waited.

    A benchmark measures the steady state: while the forest builds, its worker takes a core for ~1 minute.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        trees = [value for _, value in metric_samples(http_url, "cityscale_compiled_trees")]
        if trees and min(trees) == 2:
            return time.monotonic() - began
        time.sleep(1.0)
    raise TimeoutError(f"{http_url} did not serve inlined trees within {timeout_s:.0f} s")


def forecast_cache_hit_share(http_url: str) -> float | None:
    """Share of forecast rows the predictor answered from its forecast cache so far (None: no cache, no rows)."""
    rows = {labels["result"]: value for labels, value in metric_samples(http_url, "cityscale_forecast_cache_rows")}
    total = sum(rows.values())
    return rows.get("hit", 0.0) / total if total else None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def write_result(name: str, rows: dict[str, dict[str, Any]]) -> Path:
    """Print ``rows`` as a table and write them with the machine description to build/bench/<name>.json."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": {"python": platform.python_version(), "cpus": _cpus()}, "results": rows}
    path.write_text(json.dumps(payload, indent=2))
    columns = sorted({k for r in rows.values() for k in r})
    table = Table(title=f"{name} ({path})")
    table.add_column("case")
    for col in columns:
        table.add_column(col, justify="right")
    for case, row in rows.items():
        table.add_row(case, *(_fmt(row.get(c)) for c in columns))
    console.print(table)
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))

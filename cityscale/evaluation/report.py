"""Backtest reports people look at: PNG charts embedded in one self-contained HTML (and Markdown).

The KFP UI shows both artifact types; the same HTML opens from a run directory in any browser.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cityscale.evaluation.backtest import BacktestResult  # noqa: E402


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def fan_chart(result: BacktestResult, model: str = "model", n_sensors: int = 3, days: int = 7) -> str:
    """P10-P90 band and P50 against actuals for the last ``days`` origins of the busiest sensors."""
    quantiles = result.forecasts[f"{model}:quantiles"]
    busiest = pd.Series(np.nansum(result.actual, axis=1)).groupby(result.sensor_ids).sum().nlargest(n_sensors)
    fig, axes = plt.subplots(len(busiest), 1, figsize=(11, 2.6 * len(busiest)), squeeze=False)
    horizon = result.actual.shape[1]
    for ax, sensor in zip(axes[:, 0], busiest.index, strict=True):
        idx = np.flatnonzero(result.sensor_ids == sensor)
        idx = idx[np.argsort(result.origins[idx])][-days:]
        times = (result.origins[idx][:, None] + np.arange(horizon) * np.timedelta64(1, "h")).ravel()
        q = quantiles[idx].reshape(-1, quantiles.shape[-1])
        ax.fill_between(times, q[:, 0], q[:, -1], alpha=0.3, color="tab:blue", label="P10-P90")
        ax.plot(times, q[:, q.shape[1] // 2], color="tab:blue", lw=1.2, label="P50")
        ax.plot(times, result.actual[idx].ravel(), color="black", lw=1, label="actual")
        ax.set_title(f"{sensor}: last {len(idx)} daily forecasts", fontsize=10)
        ax.set_ylabel("pedestrians / h")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def error_by_hour_chart(result: BacktestResult) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for method in result.by_hour.columns:
        ax.plot(
            result.by_hour.index, result.by_hour[method], marker=".", label=method, lw=2 if method == "model" else 1
        )
    ax.set_xlabel("hour of day (local)")
    ax.set_ylabel("MAE (pedestrians / h)")
    ax.legend(fontsize=8, ncol=3)
    ax.set_title("Error by hour of day", fontsize=10)
    return _png(fig)


def error_by_sensor_chart(result: BacktestResult) -> str:
    best = result.best_baseline("wape")
    frame = result.per_sensor[["model", best]].sort_values("model")
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(frame))))
    y = np.arange(len(frame))
    ax.barh(y - 0.2, frame["model"] * 100, height=0.4, label="model")
    ax.barh(y + 0.2, frame[best] * 100, height=0.4, label=best)
    ax.set_yticks(y, frame.index, fontsize=7)
    ax.set_xlabel("WAPE (%)")
    ax.legend(fontsize=8)
    ax.set_title(f"WAPE by sensor: model vs best baseline ({best})", fontsize=10)
    return _png(fig)


def backtest_charts(result: BacktestResult) -> dict[str, str]:
    """Base64 PNGs keyed by caption."""
    return {
        "Forecast fans vs actuals": fan_chart(result),
        "Error by hour of day": error_by_hour_chart(result),
        "Error by sensor": error_by_sensor_chart(result),
    }


def render_html(title: str, markdown_tables: list[tuple[str, pd.DataFrame]], text: str, charts: dict[str, str]) -> str:
    """A self-contained HTML page: tables, a verdict line and embedded PNG charts."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(text)}</p>",
    ]
    for caption, frame in markdown_tables:
        parts += [f"<h2>{html.escape(caption)}</h2>", frame.to_html(float_format=lambda v: f"{v:.4f}", border=0)]
    for caption, png in charts.items():
        parts += [
            f"<h2>{html.escape(caption)}</h2>",
            f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)

"""The monitoring report: one self-contained HTML page of PNG charts and tables from a monitoring run.

Charts (matplotlib, base64-embedded through ``cityscale.evaluation.report``): forecast fans vs actuals for the
busiest sensors, a map of the sensors coloured by WAPE (lat/lon from the bundled Melbourne locations; a
grid for sensors without a location), error by hour of day and error by day. The same HTML and a
Markdown summary are the KFP UI artifacts of the monitor step.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from cityscale.evaluation.report import _png, render_html
from cityscale.monitoring.accuracy import OVERALL
from cityscale.monitoring.run import MonitoringResult

LOCATIONS = Path(__file__).parents[1] / "features" / "data" / "melbourne_sensor_locations.csv"
SECTIONS = ("Forecast fans vs actuals", "Sensors coloured by WAPE", "Error by hour of day", "Error by day")


def _scored(result: MonitoringResult) -> pd.DataFrame:
    return result.joined[result.joined["actual"].notna()]


def fan_chart(result: MonitoringResult, n_sensors: int = 3, days: int = 7) -> str:
    """For the busiest sensors, the latest forecast of each day (its 24-hour fan) against the actuals."""
    scored = _scored(result)
    busiest = scored.groupby("sensor_id")["actual"].sum().nlargest(n_sensors).index
    fig, axes = plt.subplots(max(1, len(busiest)), 1, figsize=(11, 2.6 * max(1, len(busiest))), squeeze=False)
    for ax, sensor in zip(axes[:, 0], busiest, strict=False):
        rows = result.joined[result.joined["sensor_id"] == sensor]
        origins = rows.groupby(rows["origin"].dt.normalize())["origin"].max().sort_values().iloc[-days:]
        for i, origin in enumerate(origins):
            fan = rows[rows["origin"] == origin].sort_values("target_time")
            ax.fill_between(
                fan["target_time"],
                fan["p10"],
                fan["p90"],
                color="tab:blue",
                alpha=0.3,
                label="P10-P90" if i == 0 else None,
            )
            ax.plot(fan["target_time"], fan["p50"], color="tab:blue", lw=1.2, label="P50" if i == 0 else None)
        actual = rows.drop_duplicates("target_time").sort_values("target_time")
        ax.plot(actual["target_time"], actual["actual"], color="black", lw=1, label="actual")
        ax.set_title(f"{sensor}: latest forecast of each day", fontsize=10)
        ax.set_ylabel("pedestrians / h")
    if len(busiest) == 0:
        axes[0, 0].text(0.5, 0.5, "no forecast with a landed actual in the window", ha="center", va="center")
    else:
        axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def sensor_map(result: MonitoringResult) -> str:
    """Sensors at their lat/lon coloured by WAPE; sensors without a known location on a grid beside."""
    errors = result.by_sensor[result.by_sensor["sensor_id"] != OVERALL].set_index("sensor_id")["wape"].dropna()
    locations = pd.read_csv(LOCATIONS).drop_duplicates("Sensor_Name").set_index("Sensor_Name")
    located = errors[errors.index.isin(locations.index)]
    unplaced = errors[~errors.index.isin(locations.index)]
    fig, (ax, grid) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [3, 1]})
    norm = Normalize(vmin=0, vmax=max(0.5, float(errors.max()) if len(errors) else 0.5))
    points = ax.scatter(
        locations.loc[located.index, "Longitude"],
        locations.loc[located.index, "Latitude"],
        c=located.to_numpy(),
        cmap="RdYlGn_r",
        norm=norm,
        s=120,
        edgecolors="black",
    )
    for sensor in located.index:
        ax.annotate(
            sensor,
            (locations.loc[sensor, "Longitude"], locations.loc[sensor, "Latitude"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"WAPE by sensor location ({len(located)} sensors)", fontsize=10)
    fig.colorbar(points, ax=ax, label="WAPE")
    cols = max(1, int(np.ceil(np.sqrt(len(unplaced)))))
    for i, (sensor, value) in enumerate(unplaced.items()):
        grid.scatter(i % cols, -(i // cols), c=[value], cmap="RdYlGn_r", norm=norm, s=200, edgecolors="black")
        grid.annotate(
            sensor, (i % cols, -(i // cols)), fontsize=7, xytext=(0, -14), textcoords="offset points", ha="center"
        )
    grid.set_title(f"no location ({len(unplaced)})" if len(unplaced) else "", fontsize=10)
    grid.axis("off")
    return _png(fig)


def error_by_hour_chart(result: MonitoringResult) -> str:
    scored = _scored(result)
    err = (scored["p50"] - scored["actual"]).abs()
    hour = scored["target_time"].dt.hour
    by_hour = pd.DataFrame({"mae": err.groupby(hour).mean(), "actual": scored["actual"].groupby(hour).mean()})
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(by_hour.index, by_hour["actual"], color="lightgrey", label="mean actual")
    ax.plot(by_hour.index, by_hour["mae"], marker=".", color="tab:red", lw=2, label="MAE of P50")
    ax.set_xlabel("hour of day (local)")
    ax.set_ylabel("pedestrians / h")
    ax.legend(fontsize=8)
    ax.set_title("Error by hour of day", fontsize=10)
    return _png(fig)


def error_by_day_chart(result: MonitoringResult) -> str:
    overall = result.daily[result.daily["sensor_id"] == OVERALL].set_index("date")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(overall.index, overall["wape"] * 100, marker="o", label="WAPE (%)")
    ax.plot(overall.index, overall["coverage"] * 100, marker="s", label="P10-P90 coverage (%)")
    ax.axhline(80, color="grey", ls=":", lw=1)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.set_title("Error by day (all sensors)", fontsize=10)
    fig.autofmt_xdate()
    return _png(fig)


def charts(result: MonitoringResult) -> dict[str, str]:
    return dict(
        zip(
            SECTIONS,
            (fan_chart(result), sensor_map(result), error_by_hour_chart(result), error_by_day_chart(result)),
            strict=True,
        )
    )


def verdict(result: MonitoringResult) -> str:
    s = result.summary
    head = f"Window {s['window_start'][:16]} .. {s['as_of'][:16]} (newest count {s['newest_count'][:16]})"
    decision = "retrain: " + "; ".join(result.reasons) if result.retrain else "no retraining needed"
    return (
        f"{head}; WAPE {s['wape']:.3f}, MASE {s['mase']:.3f}, coverage {s['coverage']:.1%} over {s['n_hours']} "
        f"scored hours; {s['sensors_drifted']} drifted and {s['sensors_in_outage']} sensors in outage; {decision}."
    )


def tables(result: MonitoringResult) -> list[tuple[str, pd.DataFrame]]:
    return [
        ("Accuracy by sensor", result.by_sensor.set_index("sensor_id")),
        ("Drift", result.drift.set_index("sensor_id")),
        ("Outages", result.outages.set_index("sensor_id") if len(result.outages) else pd.DataFrame({"outages": []})),
    ]


def to_html(result: MonitoringResult) -> str:
    return render_html("CityScale monitoring", tables(result), verdict(result), charts(result))


def to_markdown(result: MonitoringResult) -> str:
    parts = ["# CityScale monitoring", "", verdict(result), ""]
    for caption, frame in tables(result):
        parts += [f"## {caption}", "", frame.to_markdown(floatfmt=".4f"), ""]
    return "\n".join(parts)

"""Data-quality checks and the cleaning of known source artefacts.

Soft problems (artefacts we know how to repair, missing hours, sensors coming and going) are
repaired or reported; hard problems fail the run and write nothing, because training on them
silently would poison every downstream model:

- schema drift (a source's fields no longer match its configuration or the raw contract),
- negative, non-integer or impossible counts,
- duplicate (city, sensor_id, timestamp_local) keys, and sensor ids shared by two cities,
- a sensor missing almost all of its hours in a batch (``quality_missing_rate_max``).

Handled explicitly and counted: the September 2010 daily-total artefact (a lone 00:00 value per
day, masked), DST gap hours (a local hour that does not exist: dropped), DST overlap hours (one value
for a repeated hour: placed in daylight time), sensors appearing or disappearing relative to the raw
zone, and per-sensor missing rates above ``quality_missing_rate_warn``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cityscale.cities import get_city
from cityscale.schema import RAW_KEY

MAX_PLAUSIBLE_HOURLY_COUNT = 100_000
MIN_HOURS_FOR_MISSING_RATE = 168  # a sensor's missing rate is judged over at least a week
DISAPPEARED_AFTER = pd.Timedelta(days=7)


class DataQualityError(ValueError):
    """The data has problems that must not reach the raw zone."""


@dataclass
class QualityReport:
    rows_in: int = 0
    rows_out: int = 0
    daily_total_artefacts_masked: int = 0
    dst_nonexistent_hours_dropped: int = 0
    dst_ambiguous_hours: int = 0
    source_rows_out_of_sequence: int = 0
    hard_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sensors_appeared: list[str] = field(default_factory=list)
    sensors_disappeared: list[str] = field(default_factory=list)
    sensors: pd.DataFrame = field(default_factory=pd.DataFrame)

    def raise_for_errors(self) -> None:
        if self.hard_errors:
            raise DataQualityError("; ".join(self.hard_errors))

    def to_markdown(self) -> str:
        lines = [
            "# Data quality report",
            "",
            "| check | value |",
            "| --- | --- |",
            f"| rows in | {self.rows_in:,} |",
            f"| rows out | {self.rows_out:,} |",
            f"| daily-total artefacts masked (lone 00:00 value in a day) | {self.daily_total_artefacts_masked:,} |",
            f"| DST gap hours dropped (local hour that does not exist) | {self.dst_nonexistent_hours_dropped:,} |",
            f"| DST overlap hours (assigned to daylight time) | {self.dst_ambiguous_hours:,} |",
            f"| source rows out of time order (dropped) | {self.source_rows_out_of_sequence:,} |",
            f"| sensors new to the raw zone | {len(self.sensors_appeared)} |",
            f"| sensors that stopped reporting | {len(self.sensors_disappeared)} |",
            f"| warnings | {len(self.warnings)} |",
            f"| hard errors | {len(self.hard_errors)} |",
            "",
            f"**Result: {'FAILED' if self.hard_errors else 'PASSED'}**",
            "",
        ]
        for err in self.hard_errors:
            lines.append(f"- **error**: {err}")
        for warning in self.warnings:
            lines.append(f"- warning: {warning}")
        if self.sensors_appeared:
            lines.append(f"- new sensors: {', '.join(self.sensors_appeared)}")
        if self.sensors_disappeared:
            lines.append(f"- stopped reporting: {', '.join(self.sensors_disappeared)}")
        if not self.sensors.empty:
            lines += ["", "## Sensors", "", self.sensors.to_markdown(index=False, floatfmt=".3f")]
        return "\n".join(lines) + "\n"


def _mask_daily_total_artefact(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop days where a sensor reports only a value at 00:00 (a daily total, e.g. Sept 2010)."""
    day = df["timestamp_local"].dt.normalize()
    per_day = df.groupby([df["city"], df["sensor_id"], day])["count"].transform("size")
    artefact = (per_day == 1) & (df["timestamp_local"].dt.hour == 0)
    return df.loc[~artefact], int(artefact.sum())


def _attach_utc(df: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    """Localise wall-clock hours per city; gap hours cannot be placed in UTC and are dropped."""
    parts = []
    for city_name, part in df.groupby("city", sort=False):
        tz = get_city(str(city_name)).timezone
        stamps = pd.DatetimeIndex(part["timestamp_local"].unique())
        utc_dst = stamps.tz_localize(tz, ambiguous=np.ones(len(stamps), bool), nonexistent="NaT")
        utc_std = stamps.tz_localize(tz, ambiguous=np.zeros(len(stamps), bool), nonexistent="NaT")
        report.dst_ambiguous_hours += int(((utc_dst != utc_std) & ~utc_dst.isna()).sum())
        mapping = pd.Series(utc_dst.tz_convert("UTC"), index=stamps)
        part = part.assign(timestamp_utc=part["timestamp_local"].map(mapping))
        gap = part["timestamp_utc"].isna()
        report.dst_nonexistent_hours_dropped += int(gap.sum())
        parts.append(part.loc[~gap])
    return pd.concat(parts, ignore_index=True) if parts else df.assign(timestamp_utc=pd.NaT)


def _sensor_summary(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby(["city", "sensor_id"])
    summary = grouped["timestamp_local"].agg(first="min", last="max", rows="size").reset_index()
    summary["first_ts"], summary["last_ts"] = summary["first"], summary["last"]
    summary["span_hours"] = (summary["last"] - summary["first"]) / pd.Timedelta(hours=1) + 1
    summary["missing_rate"] = (1.0 - summary["rows"] / summary["span_hours"]).clip(lower=0.0)
    summary["first"] = summary["first"].dt.strftime("%Y-%m-%d %H:%M")
    summary["last"] = summary["last"].dt.strftime("%Y-%m-%d %H:%M")
    return summary


def check_schema(columns: list[str] | set[str], required: list[str], known: list[str] | None = None) -> list[str]:
    """Schema drift of a batch: required fields that are missing (errors) and fields never seen before.

    Returns hard-error messages; new, unknown fields are not errors (sources add columns) and are
    left for the caller to report as warnings via ``unknown_fields``.
    """
    missing = [c for c in required if c not in columns]
    return [f"schema drift: fields {missing} are missing (present: {sorted(columns)})"] if missing else []


def unknown_fields(columns: list[str] | set[str], known: list[str]) -> list[str]:
    return sorted(set(columns) - set(known))


def _sensor_changes(
    summary: pd.DataFrame, known: pd.DataFrame | None, report: QualityReport, batch_end: pd.Timestamp
) -> None:
    """Sensors new to the raw zone, and sensors that stopped reporting (in the batch or vs the raw zone)."""
    batch_ids = set(zip(summary["city"], summary["sensor_id"], strict=True))
    if known is not None and len(known):
        known_ids = set(zip(known["city"], known["sensor_id"], strict=True))
        report.sensors_appeared = sorted(f"{c}/{s}" for c, s in batch_ids - known_ids)
        recent = known[pd.to_datetime(known["last"]) >= summary["first_ts"].min() - DISAPPEARED_AFTER]
        gone = set(zip(recent["city"], recent["sensor_id"], strict=True)) - batch_ids
        if batch_end - summary["first_ts"].min() >= DISAPPEARED_AFTER:
            report.sensors_disappeared += sorted(f"{c}/{s}" for c, s in gone)
    stopped = summary[summary["last_ts"] < batch_end - DISAPPEARED_AFTER]
    report.sensors_disappeared += sorted(f"{c}/{s}" for c, s in zip(stopped["city"], stopped["sensor_id"], strict=True))
    report.sensors_disappeared = sorted(set(report.sensors_disappeared))


def clean_and_check(
    df: pd.DataFrame,
    known_sensors: pd.DataFrame | None = None,
    *,
    missing_rate_warn: float = 0.2,
    missing_rate_max: float = 0.98,
    report: QualityReport | None = None,
) -> tuple[pd.DataFrame, QualityReport]:
    """Repair known artefacts, attach UTC timestamps and collect warnings and hard errors.

    Input: long rows with city, sensor_id, sensor_name, timestamp_local, count. ``known_sensors``
    (``raw_zone.sensors``) is what the raw zone already holds, to tell sensors appearing and
    disappearing and to catch a sensor id reused by another city. ``report`` may carry findings
    of the source step (schema drift, rows out of sequence).
    Output: the same rows plus timestamp_utc, in the raw contract's column order.
    """
    report = report or QualityReport()
    report.rows_in = len(df)
    report.hard_errors += check_schema(
        set(df.columns), ["city", "sensor_id", "sensor_name", "timestamp_local", "count"]
    )
    if report.hard_errors:
        return df, report
    if (df["count"] < 0).any():
        report.hard_errors.append(f"{int((df['count'] < 0).sum())} negative counts")
    too_big = df["count"] > MAX_PLAUSIBLE_HOURLY_COUNT
    if too_big.any():
        report.hard_errors.append(f"{int(too_big.sum())} counts above {MAX_PLAUSIBLE_HOURLY_COUNT} per hour")
    fractional = (df["count"] % 1) != 0
    if fractional.any():
        report.hard_errors.append(f"{int(fractional.sum())} non-integer counts")
    duplicates = df.duplicated(RAW_KEY).sum()
    if duplicates:
        report.hard_errors.append(f"{int(duplicates)} duplicate (city, sensor_id, timestamp_local) keys")

    cities = (
        pd.concat([df[["sensor_id", "city"]], known_sensors[["sensor_id", "city"]]])
        if known_sensors is not None and len(known_sensors)
        else df[["sensor_id", "city"]]
    )
    shared = cities.drop_duplicates().groupby("sensor_id")["city"].nunique()
    if (shared > 1).any():
        report.hard_errors.append(f"sensor ids used by several cities: {sorted(shared[shared > 1].index)[:10]}")

    df, report.daily_total_artefacts_masked = _mask_daily_total_artefact(df)
    df = _attach_utc(df, report)
    df = df.sort_values(RAW_KEY, ignore_index=True)
    report.rows_out = len(df)
    if len(df):
        summary = _sensor_summary(df)
        long_enough = summary["span_hours"] >= MIN_HOURS_FOR_MISSING_RATE
        bad = summary[long_enough & (summary["missing_rate"] > missing_rate_max)]
        if len(bad):
            worst = ", ".join(f"{r.sensor_id} {r.missing_rate:.1%}" for r in bad.head(10).itertuples())
            report.hard_errors.append(
                f"{len(bad)} sensors miss more than {missing_rate_max:.0%} of their hours: {worst}"
            )
        warn = summary[
            long_enough & (summary["missing_rate"] > missing_rate_warn) & (summary["missing_rate"] <= missing_rate_max)
        ]
        if len(warn):
            report.warnings.append(
                f"{len(warn)} sensors miss more than {missing_rate_warn:.0%} of their hours: "
                + ", ".join(f"{r.sensor_id} {r.missing_rate:.1%}" for r in warn.head(10).itertuples())
            )
        _sensor_changes(summary, known_sensors, report, df["timestamp_local"].max())
        report.sensors = summary.drop(columns=["first_ts", "last_ts", "span_hours"])
    else:
        report.sensors = pd.DataFrame()
    cols = ["city", "sensor_id", "sensor_name", "timestamp_local", "timestamp_utc", "count"]
    return df[cols], report

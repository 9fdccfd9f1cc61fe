"""Input drift per sensor: the recent window's counts against the reference weeks before it.

Two population stability indices (PSI, sum over bins of (recent - ref) * ln(recent / ref)):

- ``psi``: the distribution of hourly counts, binned at the reference deciles. A level change (a sensor
  moved, a recalibration that doubles counts, a new development nearby) shows here.
- ``profile_psi``: the hour-of-day profile, the share of a day's traffic falling in each hour. A change
  in *when* people pass (a closed entrance, a new event pattern) shows here even at the same total.

0.1 is the usual "watch", 0.25 the usual "significant shift" (the default threshold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-4  # floor on bin shares, so an empty bin gives a large finite PSI instead of infinity


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two share vectors over the same bins."""
    e = np.clip(expected / expected.sum(), EPS, None)
    a = np.clip(actual / actual.sum(), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def value_psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """PSI of the recent values against bins cut at the reference quantiles (NaN when either is empty)."""
    reference, recent = reference[np.isfinite(reference)], recent[np.isfinite(recent)]
    if len(reference) == 0 or len(recent) == 0:
        return np.nan
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    new_counts = np.bincount(np.searchsorted(edges, recent, side="right"), minlength=len(edges) + 1)
    return psi(ref_counts.astype(float), new_counts.astype(float))


def profile_psi(reference: pd.Series, recent: pd.Series) -> float:
    """PSI of the hour-of-day traffic shares (series indexed by local hour timestamps)."""
    ref = reference.groupby(reference.index.hour).mean().reindex(range(24))
    new = recent.groupby(recent.index.hour).mean().reindex(range(24))
    if ref.isna().any() or new.isna().any() or ref.sum() <= 0 or new.sum() <= 0:
        return np.nan
    return psi(ref.to_numpy(float), new.to_numpy(float))


def drift_table(
    raw: pd.DataFrame, window_start: pd.Timestamp, as_of: pd.Timestamp, reference_days: int, threshold: float
) -> pd.DataFrame:
    """Per sensor seen in either period: psi, profile_psi, level ratio (recent / reference mean), drifted."""
    reference_start = window_start - pd.Timedelta(days=reference_days)
    rows = raw[(raw["timestamp_local"] >= reference_start) & (raw["timestamp_local"] < as_of)]
    out = []
    for sensor, frame in rows.groupby("sensor_id", sort=True):
        series = frame.set_index("timestamp_local")["count"].astype(float).sort_index()
        ref, new = series[series.index < window_start], series[series.index >= window_start]
        value = value_psi(ref.to_numpy(), new.to_numpy())
        profile = profile_psi(ref, new)
        level = float(new.mean() / ref.mean()) if len(ref) and len(new) and ref.mean() > 0 else np.nan
        worst = np.nanmax([value, profile]) if np.isfinite([value, profile]).any() else np.nan
        out.append(
            {
                "sensor_id": sensor,
                "psi": value,
                "profile_psi": profile,
                "level_ratio": level,
                "n_reference": len(ref),
                "n_recent": len(new),
                "drifted": bool(np.isfinite(worst) and worst > threshold),
            }
        )
    columns = ["sensor_id", "psi", "profile_psi", "level_ratio", "n_reference", "n_recent", "drifted"]
    return pd.DataFrame(out, columns=columns)

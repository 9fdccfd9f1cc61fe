"""Compute the spec's features at requested event times with DuckDB over the raw zone Parquet.

Why not a row per hour: a 168-value window for every hour of the full Melbourne history (4 M rows)
would be ~2.7 G values, far too big for an offline source. Training needs windows only at its forecast
origins and the online store only at the latest hour, so the feature build computes exactly those
event times (the *spine*) and hands them to the feature store, which does the point-in-time join,
materialization and serving. Feast's own batch aggregations are alpha; these SQL queries are generated
from :mod:`cityscale.features.spec` instead:

- windows and same-hour-of-week profiles: the spine crossed with the needed hour offsets, an equality
  join on ``(sensor, hour)`` and an ordered ``list()`` per row (missing hours become ``-1``);
- rolling aggregates: exact integer prefix sums (count, sum, sum of squares) per sensor and one
  ``ASOF`` join per window edge, so each aggregate costs O(log n) per event instead of O(window);
- labels (the target hours from ``T`` on) the same way as windows; they never enter a feature view.

Hours are positions on the naive local-time grid (hours since 1970-01-01 local), the same grid the
``Panel`` uses, so DST days keep their 23/25 hours exactly as in the direct path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cityscale import storage
from cityscale.calendar import day_flags
from cityscale.cities import get_city
from cityscale.features.spec import SPEC, Feature, FeatureSpec, FeatureView

EPOCH = pd.Timestamp("1970-01-01")
RAW_COLUMNS = ["city", "sensor_id", "timestamp_local", "count"]
LOCATIONS_CSV = Path(__file__).parent / "data" / "melbourne_sensor_locations.csv"


def hour_positions(stamps: pd.DatetimeIndex | pd.Series) -> np.ndarray:
    """Naive local hours as integer positions on the shared hourly grid."""
    return ((pd.DatetimeIndex(stamps) - EPOCH) // pd.Timedelta(hours=1)).to_numpy(dtype=np.int64)


def position_stamps(pos: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(EPOCH + pd.to_timedelta(np.asarray(pos, dtype=np.int64), unit="h"))


def local_to_utc(stamps: pd.DatetimeIndex, city: str) -> pd.DatetimeIndex:
    """The UTC instant of naive local hours of a city: the event timestamps the feature store keys on.

    The repeated DST hour is read as daylight time (as the ingest places it); a local hour that does
    not exist (the DST gap) is shifted back to just before the gap so that it stays a distinct instant.
    """
    tz = get_city(city).timezone
    idx = pd.DatetimeIndex(stamps)
    return idx.tz_localize(tz, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_backward").tz_convert("UTC")


def read_raw(raw: str | pa.Table | pd.DataFrame) -> pa.Table:
    """Raw counts as Arrow: a Parquet file, a raw-zone root (file:// or gs://, via fsspec) or a frame."""
    if isinstance(raw, pd.DataFrame):
        return pa.Table.from_pandas(raw[RAW_COLUMNS], preserve_index=False)
    if isinstance(raw, pa.Table):
        return raw.select(RAW_COLUMNS)
    fs, path = storage.filesystem(raw)
    files = [path] if fs.isfile(path) else sorted(fs.glob(f"{path.rstrip('/')}/raw/city=*/year=*/part.parquet"))
    if not files:
        raise FileNotFoundError(f"no raw counts at {raw} (a Parquet file or a raw-zone root)")
    tables = []
    for file in files:
        with fs.open(file, "rb") as fh:
            tables.append(pq.read_table(fh, columns=RAW_COLUMNS))
    # Partition files may carry dictionary-encoded strings; unify to plain strings before concatenating.
    return pa.concat_tables([t.cast(_RAW_ARROW) for t in tables])


_RAW_ARROW = pa.schema(
    [("city", pa.string()), ("sensor_id", pa.string()), ("timestamp_local", pa.timestamp("us")), ("count", pa.int32())]
)


@lru_cache(maxsize=1)
def sensor_locations() -> pd.DataFrame:
    """Melbourne sensor metadata (CC BY 4.0), one row per sensor id (the latest installation wins)."""
    df = pd.read_csv(LOCATIONS_CSV, parse_dates=["Installation_Date"])
    df = df.sort_values("Installation_Date").drop_duplicates("Sensor_Name", keep="last")
    return pd.DataFrame(
        {
            "sensor_id": df["Sensor_Name"].astype(str),
            "location_id": df["Location_ID"].astype("int64"),
            "latitude": df["Latitude"].astype("float64"),
            "longitude": df["Longitude"].astype("float64"),
            "installation_date": df["Installation_Date"].dt.strftime("%Y-%m-%d"),
        }
    )


@dataclass
class FeatureTables:
    """Computed feature rows per view (Feast-ready frames) plus the spine and its labels."""

    views: dict[str, pd.DataFrame]
    spine: pd.DataFrame  # sensor_id, city, origin (naive local), event_timestamp (UTC)
    labels: np.ndarray | None  # float32 [len(spine), horizon], NaN = missing; None when not asked for

    def write(self, offline_dir: Path) -> dict[str, Path]:
        offline_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, frame in self.views.items():
            path = offline_dir / f"{name}.parquet"
            tmp = path.with_suffix(".tmp")
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
            tmp.replace(path)
            paths[name] = path
        return paths


class FeatureComputer:
    """DuckDB over one snapshot of raw counts; computes every view of the spec at a spine of event times."""

    def __init__(self, raw: str | pa.Table | pd.DataFrame, spec: FeatureSpec = SPEC, threads: int | None = None):
        self.spec = spec
        self.source_uri = raw if isinstance(raw, str) else f"<{type(raw).__name__}>"
        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.register("raw_in", read_raw(raw))
        self.con.execute(
            """CREATE TEMP TABLE raw AS
               SELECT city, sensor_id, datediff('hour', TIMESTAMP '1970-01-01', timestamp_local)::BIGINT AS pos,
                      "count"::BIGINT AS pedestrians
               FROM raw_in"""
        )
        self.con.unregister("raw_in")
        self.con.execute(
            """CREATE TEMP TABLE bounds AS
               SELECT sensor_id, any_value(city) AS city, min(pos) AS first_pos, max(pos) AS last_pos,
                      count(DISTINCT city) AS n_cities
               FROM raw GROUP BY sensor_id"""
        )
        clash = self.con.execute("SELECT sensor_id FROM bounds WHERE n_cities > 1 LIMIT 1").fetchone()
        if clash:
            raise ValueError(f"sensor {clash[0]!r} appears in more than one city; sensor ids must be unique")

    # --- spines ---------------------------------------------------------------------------------
    def bounds(self) -> pd.DataFrame:
        return self.con.execute("SELECT sensor_id, city, first_pos, last_pos FROM bounds ORDER BY city, sensor_id").df()

    def training_spine(self, origins: pd.DatetimeIndex) -> pd.DataFrame:
        """Every (sensor, origin) that can hold a training example: the sensor counted before the origin
        and at or after it (a superset of the rows that pass the history and target checks)."""
        pos = pd.DataFrame({"pos": hour_positions(origins)})
        self.con.register("origins_in", pos)
        spine = self.con.execute(
            """SELECT b.sensor_id, b.city, o.pos FROM bounds b JOIN origins_in o
               ON o.pos > b.first_pos AND o.pos <= b.last_pos ORDER BY b.city, b.sensor_id, o.pos"""
        ).df()
        self.con.unregister("origins_in")
        return self._with_timestamps(spine)

    def latest_spine(self) -> pd.DataFrame:
        """One row per sensor at its city's freshness hour: the hour after the city's latest count.

        Every sensor of a city shares that hour (a sensor that stopped reporting gets missing hours at
        the end of its window, which is the truth), so the online store serves forecasts from it.
        """
        spine = self.con.execute(
            """SELECT b.sensor_id, b.city, c.next_pos AS pos FROM bounds b
               JOIN (SELECT city, max(last_pos) + 1 AS next_pos FROM bounds GROUP BY city) c USING (city)
               ORDER BY b.city, b.sensor_id"""
        ).df()
        return self._with_timestamps(spine)

    def spine_for(self, sensor_ids: list[str], origins: list[pd.Timestamp]) -> pd.DataFrame:
        """Explicit (sensor, origin) event rows; sensors unknown to the raw zone are dropped."""
        frame = pd.DataFrame({"sensor_id": sensor_ids, "pos": hour_positions(pd.DatetimeIndex(origins))})
        self.con.register("req_in", frame)
        spine = self.con.execute(
            "SELECT r.sensor_id, b.city, r.pos FROM req_in r JOIN bounds b USING (sensor_id) ORDER BY ALL"
        ).df()
        self.con.unregister("req_in")
        return self._with_timestamps(spine)

    @staticmethod
    def _with_timestamps(spine: pd.DataFrame) -> pd.DataFrame:
        spine = spine.reset_index(drop=True)
        spine["pos"] = spine["pos"].astype("int64")
        spine["origin"] = position_stamps(spine["pos"].to_numpy())
        ts = pd.Series(pd.NaT, index=spine.index, dtype="datetime64[ns, UTC]")
        for city, idx in spine.groupby("city").groups.items():
            unique = spine.loc[idx, "pos"].unique()
            mapping = pd.Series(local_to_utc(position_stamps(unique), str(city)), index=unique)
            ts.loc[idx] = mapping.reindex(spine.loc[idx, "pos"].to_numpy()).to_numpy()
        spine["event_timestamp"] = ts.dt.as_unit("us")
        return spine

    # --- features -------------------------------------------------------------------------------
    def compute(self, spine: pd.DataFrame, views: list[str] | None = None, horizon: int | None = None) -> FeatureTables:
        """Every requested view (default: all) at every spine row; labels too when ``horizon`` is given."""
        self.con.register("spine_in", spine[["sensor_id", "city", "pos"]])
        self.con.execute("CREATE OR REPLACE TEMP TABLE spine AS SELECT DISTINCT * FROM spine_in")
        self.con.unregister("spine_in")
        out: dict[str, pd.DataFrame] = {}
        for view in self.spec.views:
            if views is not None and view.name not in views:
                continue
            if view.name == "sensor_metadata":
                out[view.name] = self._metadata(view)
            elif view.entity == "city":
                out[view.name] = self._calendar(view, spine)
            else:
                out[view.name] = self._sensor_view(view, spine)
        labels = self._labels(spine, horizon) if horizon else None
        return FeatureTables(out, spine, labels)

    def _sensor_view(self, view: FeatureView, spine: pd.DataFrame) -> pd.DataFrame:
        frame = self.con.execute("SELECT sensor_id, pos FROM spine ORDER BY sensor_id, pos").df()
        for feature in view.features:
            values = self._feature(feature)
            frame = frame.merge(values, on=["sensor_id", "pos"], how="left", validate="one_to_one")
        return self._finish(frame, spine, "sensor_id", view)

    def _feature(self, f: Feature) -> pd.DataFrame:
        if f.kind == "window":
            sql = f"""SELECT s.sensor_id, s.pos,
                        list(coalesce(r.pedestrians::FLOAT, -1.0::FLOAT) ORDER BY k) AS "{f.name}"
                      FROM spine s CROSS JOIN range({f.length}) t(k)
                      LEFT JOIN raw r ON r.sensor_id = s.sensor_id AND r.pos = s.pos - {f.length} + k
                      GROUP BY s.sensor_id, s.pos"""
        elif f.kind == "same_hour_of_week":
            if f.function != "mean" or f.length > 168:
                raise ValueError(f"{f.name}: only the mean over horizons up to one week is defined")
            sql = f"""SELECT sensor_id, pos, list(coalesce(m, -1.0)::FLOAT ORDER BY h) AS "{f.name}" FROM (
                        SELECT s.sensor_id, s.pos, h, avg(r.pedestrians::DOUBLE) AS m
                        FROM spine s CROSS JOIN range({f.length}) t(h) CROSS JOIN range(1, {f.weeks + 1}) w(k)
                        LEFT JOIN raw r ON r.sensor_id = s.sensor_id AND r.pos = s.pos + h - 168 * k
                        GROUP BY s.sensor_id, s.pos, h)
                      GROUP BY sensor_id, pos"""
        elif f.kind == "aggregate":
            return self._aggregate(f)
        elif f.kind == "age":
            meta = self._metadata_frame()[["sensor_id", "installation_date"]]
            self.con.register("meta_in", meta)
            sql = f"""SELECT s.sensor_id, s.pos,
                        ((s.pos - coalesce(datediff('hour', TIMESTAMP '1970-01-01', m.installation_date::TIMESTAMP),
                                           b.first_pos)) / 24.0)::FLOAT AS "{f.name}"
                      FROM spine s JOIN bounds b USING (sensor_id)
                      LEFT JOIN meta_in m ON m.sensor_id = s.sensor_id AND m.installation_date <> ''"""
        else:
            raise ValueError(f"feature {f.name!r} of kind {f.kind!r} is not computed per sensor and hour")
        return self.con.execute(sql).df()

    def _aggregate(self, f: Feature) -> pd.DataFrame:
        """``function`` over ``[T - window, T)`` from exact prefix sums at the two window edges."""
        self._ensure_prefix_sums()
        w = f.window_hours
        sql = f"""
            WITH e AS (
              SELECT s.sensor_id, s.pos, c.n AS n, c.s1 AS s1, c.s2 AS s2
              FROM (SELECT sensor_id, pos, pos - 1 AS edge FROM spine) s
              ASOF LEFT JOIN cum c ON s.sensor_id = c.sensor_id AND s.edge >= c.pos),
            b AS (
              SELECT s.sensor_id, s.pos, c.n AS n, c.s1 AS s1, c.s2 AS s2
              FROM (SELECT sensor_id, pos, pos - 1 - {w} AS edge FROM spine) s
              ASOF LEFT JOIN cum c ON s.sensor_id = c.sensor_id AND s.edge >= c.pos),
            d AS (
              SELECT e.sensor_id, e.pos,
                     (coalesce(e.n, 0) - coalesce(b.n, 0))::BIGINT AS n,
                     (coalesce(e.s1, 0) - coalesce(b.s1, 0))::HUGEINT AS s1,
                     (coalesce(e.s2, 0) - coalesce(b.s2, 0))::HUGEINT AS s2
              FROM e JOIN b USING (sensor_id, pos))
            SELECT sensor_id, pos, {self._agg_expr(f)} AS "{f.name}" FROM d"""
        return self.con.execute(sql).df()

    @staticmethod
    def _agg_expr(f: Feature) -> str:
        if f.function == "count":
            return "n"
        if f.function == "sum":
            return "s1::BIGINT"
        if f.function == "mean":
            return "CASE WHEN n > 0 THEN (s1::DOUBLE / n)::FLOAT END"
        if f.function == "stddev":
            # Sample standard deviation from exact integer moments: (n*s2 - s1^2) / (n (n-1)).
            return "CASE WHEN n > 1 THEN sqrt((n * s2 - s1 * s1)::DOUBLE / (n * (n - 1)))::FLOAT END"
        raise ValueError(f"unknown aggregation {f.function!r} for {f.name}")

    def _ensure_prefix_sums(self) -> None:
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'cum' AND temporary"
        ).fetchone()[0]
        if not exists:
            self.con.execute(
                """CREATE TEMP TABLE cum AS
                   SELECT sensor_id, pos,
                          count(*) OVER w AS n,
                          sum(pedestrians) OVER w AS s1,
                          sum(pedestrians::HUGEINT * pedestrians) OVER w AS s2
                   FROM raw WINDOW w AS (PARTITION BY sensor_id ORDER BY pos ROWS UNBOUNDED PRECEDING)"""
            )

    def _metadata_frame(self) -> pd.DataFrame:
        bounds = self.bounds()
        meta = bounds.merge(sensor_locations(), on="sensor_id", how="left")
        meta["location_id"] = meta["location_id"].fillna(-1).astype("int64")
        meta["installation_date"] = meta["installation_date"].fillna("")
        return meta

    def _metadata(self, view: FeatureView) -> pd.DataFrame:
        """Static attributes, valid from the sensor's first count (so every origin after it joins them)."""
        meta = self._metadata_frame()
        frame = meta[["sensor_id", "city", "first_pos"]].rename(columns={"first_pos": "pos"})
        for f in view.features:
            if f.name != "city":
                frame[f.name] = meta[f.name].to_numpy()
        return self._finish(frame, self._with_timestamps(frame[["sensor_id", "city", "pos"]]), "sensor_id", view)

    def _calendar(self, view: FeatureView, spine: pd.DataFrame) -> pd.DataFrame:
        """Holiday and lockdown flags of the hours from T on, per (city, T): known in advance, no leakage."""
        rows = spine[["city", "pos"]].drop_duplicates().sort_values(["city", "pos"]).reset_index(drop=True)
        frame = rows.copy()
        for f in view.features:
            frame[f.name] = pd.Series([None] * len(rows), dtype=object)
        for city, idx in rows.groupby("city").groups.items():
            pos = rows.loc[idx, "pos"].to_numpy()
            length = max(f.length for f in view.features)
            hours = pos[:, None] + np.arange(length)[None, :]
            lo = int(hours.min())
            grid = position_stamps(np.arange(lo, int(hours.max()) + 1))
            days, inverse = np.unique(grid.normalize().to_numpy(), return_inverse=True)
            hol, lock = day_flags(pd.DatetimeIndex(days), str(city))
            flags = {"holiday": hol[inverse], "lockdown": lock[inverse]}
            for f in view.features:
                table = flags[f.name.split("_")[0]][hours - lo][:, : f.length].astype(np.float32)
                frame.loc[idx, f.name] = pd.Series(list(table), index=idx)
        return self._finish(frame, self._with_timestamps(rows.assign(sensor_id="")), "city", view)

    def _labels(self, spine: pd.DataFrame, horizon: int) -> np.ndarray:
        frame = self.con.execute(
            f"""SELECT s.sensor_id, s.pos, list(coalesce(r.pedestrians::FLOAT, 'NaN'::FLOAT) ORDER BY k) AS target
                FROM spine s CROSS JOIN range({horizon}) t(k)
                LEFT JOIN raw r ON r.sensor_id = s.sensor_id AND r.pos = s.pos + k
                GROUP BY s.sensor_id, s.pos"""
        ).df()
        frame = spine[["sensor_id", "pos"]].merge(frame, on=["sensor_id", "pos"], how="left", validate="many_to_one")
        return np.array([np.asarray(v, dtype=np.float64) for v in frame["target"]], dtype=np.float32).reshape(
            len(frame), horizon
        )

    @staticmethod
    def _finish(frame: pd.DataFrame, stamped: pd.DataFrame, key: str, view: FeatureView) -> pd.DataFrame:
        """Attach the UTC event timestamp and cast each feature to its declared type."""
        keys = stamped[[key, "pos", "event_timestamp"]].drop_duplicates([key, "pos"])
        frame = frame.merge(keys, on=[key, "pos"], how="left", validate="many_to_one")
        columns = [key, "event_timestamp"]
        for f in view.features:
            columns.append(f.name)
            if f.dtype == "float32_array":
                frame[f.name] = [np.asarray(v, dtype=np.float32) for v in frame[f.name]]
            elif f.dtype == "float32":
                frame[f.name] = frame[f.name].astype("float32")
            elif f.dtype == "float64":
                frame[f.name] = frame[f.name].astype("float64")
            elif f.dtype == "int64":
                frame[f.name] = frame[f.name].fillna(0).astype("int64")
            else:
                frame[f.name] = frame[f.name].astype(str)
        return frame[columns].sort_values([key, "event_timestamp"], ignore_index=True)

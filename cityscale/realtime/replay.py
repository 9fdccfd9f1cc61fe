"""The edge simulator: replay real counts as if sensors pushed them hour by hour.

Each source hour is one *tick*; ticks are sent ``speed`` per second (0 = as fast as the gateway takes
them). A tick's records go out in a few requests at jittered times within the tick, shuffled. Seeded
faults exercise the real-time path the way real edge devices do:

- late: a share of records is held back 1..``late_max_hours`` ticks (arrives out of order);
- duplicates: a share of records is sent twice (a retried message);
- drop-out: one sensor goes silent for ``dropout_hours`` ticks, then reconnects and sends its backlog
  (store-and-forward), so every count still arrives and the raw zone ends equal to a batch ingest.

Hours that do not exist on the city's wall clock (the DST gap) are skipped, as the batch ingest drops them.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from cityscale.cities import get_city
from cityscale.ingestion.run import load_snapshot


@dataclass(frozen=True)
class ReplayOptions:
    speed: float = 10.0  # source hours per second; 0 = no pacing
    seed: int = 0
    late_fraction: float = 0.05
    late_max_hours: int = 3
    duplicate_fraction: float = 0.05
    dropout_hours: int = 6  # 0 = no sensor drops out
    requests_per_tick: int = 4
    retries: int = 3
    token: str = field(default="", repr=False)  # the gateway's realtime_token, sent as a bearer token when set


@dataclass
class ReplayReport:
    records: int = 0  # distinct source counts replayed
    sent: int = 0  # records sent, duplicates included
    requests: int = 0
    accepted: int = 0
    unchanged: int = 0
    rejected: int = 0
    late: int = 0
    duplicates: int = 0
    skipped_dst_gap: int = 0
    dropout_sensor: str = ""
    dropout_hours: int = 0
    retried_requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def load_counts(data: str | Path, start: str | None = None, end: str | None = None, sensors: int = 0) -> pd.DataFrame:
    """Long counts from a Melbourne wide CSV, a folder of them or a raw/long Parquet, optionally windowed."""
    df = load_snapshot(data)
    if start:
        df = df[df["timestamp_local"] >= pd.Timestamp(start)]
    if end:
        df = df[df["timestamp_local"] < pd.Timestamp(end)]
    if sensors:
        keep = sorted(df["sensor_id"].unique())[:sensors]
        df = df[df["sensor_id"].isin(keep)]
    if df.empty:
        raise ValueError(f"no counts in {data} for [{start}, {end})")
    return df.sort_values(["timestamp_local", "sensor_id"], ignore_index=True)


def _records(df: pd.DataFrame) -> tuple[list[list[dict]], int]:
    """Records per tick (one tick per distinct source hour, in time order) and the DST-gap rows skipped."""
    ticks: list[list[dict]] = []
    skipped = 0
    hours = pd.DatetimeIndex(df["timestamp_local"])
    placed = pd.Series(True, index=df.index)
    for city, idx in df.groupby("city").groups.items():
        tz = get_city(str(city)).timezone
        local = pd.DatetimeIndex(hours[df.index.get_indexer(idx)])
        utc = local.tz_localize(tz, ambiguous=np.ones(len(local), bool), nonexistent="NaT")
        placed.loc[idx] = ~utc.isna()
    skipped = int((~placed).sum())
    df = df[placed.to_numpy()]
    for _, part in df.groupby("timestamp_local", sort=True):
        ticks.append(
            [
                {
                    "city": str(r.city),
                    "sensor_id": str(r.sensor_id),
                    "sensor_name": None if pd.isna(r.sensor_name) else str(r.sensor_name),
                    "hour": f"{r.timestamp_local:%Y-%m-%dT%H:%M:%S}",
                    "count": int(r.count),
                }
                for r in part.itertuples(index=False)
            ]
        )
    return ticks, skipped


def schedule(df: pd.DataFrame, options: ReplayOptions, report: ReplayReport) -> list[list[dict]]:
    """What is sent at each tick, faults included (deterministic for a seed)."""
    rng = random.Random(options.seed)
    ticks, report.skipped_dst_gap = _records(df)
    report.records = sum(len(t) for t in ticks)
    sensors = sorted({r["sensor_id"] for t in ticks for r in t})
    out: dict[int, list[dict]] = defaultdict(list)
    drop_from = drop_to = -1
    if options.dropout_hours and len(ticks) > options.dropout_hours + 2 and sensors:
        report.dropout_sensor = rng.choice(sensors)
        report.dropout_hours = options.dropout_hours
        drop_from = rng.randrange(1, len(ticks) - options.dropout_hours)
        drop_to = drop_from + options.dropout_hours  # reconnects here and sends its backlog
    for i, records in enumerate(ticks):
        for record in records:
            at = i
            if record["sensor_id"] == report.dropout_sensor and drop_from <= i < drop_to:
                at = drop_to
            elif rng.random() < options.late_fraction:
                at = i + rng.randint(1, options.late_max_hours)
                report.late += 1
            out[at].append(record)
            if rng.random() < options.duplicate_fraction:
                out[at + rng.randint(0, 2)].append(record)
                report.duplicates += 1
    plan = [out.get(i, []) for i in range(max(out) + 1 if out else 0)]
    for records in plan:
        rng.shuffle(records)
    return plan


class _ServerError(Exception):
    """A 5xx from the gateway: worth another try."""

    def __init__(self, resp: requests.Response) -> None:
        super().__init__(f"{resp.status_code}: {resp.text[:300]}")


def _send(session: requests.Session, target: str, records: list[dict], options: ReplayOptions, report: ReplayReport):
    """POST one batch; a connection error or a 5xx is retried ``options.retries`` times (0.1 s doubling, 2 s cap)."""

    def post() -> requests.Response:
        resp = session.post(f"{target}/v1/push", json={"records": records}, timeout=30)
        if resp.status_code >= 500:
            raise _ServerError(resp)
        return resp

    def count_failure(_: RetryCallState) -> None:
        report.retried_requests += 1

    retrying = Retrying(
        stop=stop_after_attempt(options.retries + 1),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        retry=retry_if_exception_type((requests.RequestException, _ServerError)),
        after=count_failure,
        reraise=True,
    )
    try:
        resp = retrying(post)
    except (requests.RequestException, _ServerError) as exc:
        error = str(exc) if isinstance(exc, _ServerError) else f"{type(exc).__name__}: {exc}"
        report.rejected += len(records)
        report.errors.append(f"gave up after {options.retries} retries: {error}")
        return
    if resp.status_code == 200:
        body = resp.json()
        report.accepted += body["accepted"]
        report.unchanged += body["unchanged"]
        return
    # refused as sent (4xx): retrying cannot help
    report.rejected += len(records)
    report.errors.append(f"{resp.status_code}: {resp.text[:300]}")


def replay(df: pd.DataFrame, target: str, options: ReplayOptions) -> ReplayReport:
    """Send the schedule to the gateway at ``target``, paced at ``speed`` ticks per second."""
    report = ReplayReport()
    plan = schedule(df, options, report)
    rng = random.Random(options.seed + 1)
    target = target.rstrip("/")
    session = requests.Session()
    if options.token:
        session.headers["Authorization"] = f"Bearer {options.token}"
    began = time.perf_counter()
    for i, records in enumerate(plan):
        if not records:
            continue
        n = max(1, min(options.requests_per_tick, len(records)))
        chunks = [records[k::n] for k in range(n)]
        for chunk in chunks:
            if options.speed > 0:  # jitter: each request at a random moment within its tick
                due = began + (i + rng.random()) / options.speed
                time.sleep(max(0.0, due - time.perf_counter()))
            _send(session, target, chunk, options, report)
            report.sent += len(chunk)
            report.requests += 1
    report.seconds = round(time.perf_counter() - began, 3)
    return report

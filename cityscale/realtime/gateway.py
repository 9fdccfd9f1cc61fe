"""The push gateway's core: validate -> journal (fsync) -> update state -> push feature rows -> commit.

Ordering is what makes it safe. A push is answered only after its counts are fsynced in the journal,
so an acknowledged count survives a crash. The online feature rows are pushed *after* the journal write
and before the answer, so a client that got its 200 finds the count in the next forecast. The journal
is committed into the raw zone (its transactional upsert) in the background, every few seconds or at a
row threshold, so the next batch run sees every pushed count. The upsert runs in a worker process: it rewrites
a year's partition with pandas, and in this process it held the GIL long enough to stall the pushes of the
moment (the slow hours of ``make bench-realtime`` lined up with the 5-s commits). Conflicts resolve *last
write wins*, the raw zone's own upsert rule: a corrected count replaces the old one, and an identical
duplicate or retry changes nothing (it is not even journaled).

Online rows are sent by one pusher thread in rounds (group commit): a round takes every sensor touched
since the last one, snapshots their window rows (the view forecasts read) under the state lock, sends one
``/push`` and answers the pushes waiting on it. Concurrent pushes thus share a round instead of each paying the
feature server's per-call cost, and rows always reach the online store in state order (never an older row
after a newer one). The other views (the aggregates), which no acknowledgement waits on, go through a second
thread at most every ``realtime_aggregates_interval_s``, one ``/push`` per view for every sensor touched
meanwhile: sent in the window's rounds they took a third of the pusher's time (and the next round's pushes
waited behind them). The two threads send one ``/push`` at a time (``realtime_serial_pushes``): Feast's SQLite
online store shares one connection across the feature server's threads, and two pushes at once failed with a 500
("cannot start a transaction within a transaction"). A failed round puts its sensors back, so a later
successful round covers them; requests waiting on a failed window push get a 503.

When a count opens a new hour for its city, the other sensors' rows move to that hour too (missing last
hour, as the batch build has them), but as a *catch-up* ``realtime_catch_up_delay_s`` later, each sensor
with the due of the hour that moved it: by then most sensors have pushed the hour themselves, so the pushes on
the critical path stay small (Feast's ``/push`` costs ~15 ms per call in registry look-ups, plus ~1 ms per
sensor's window). The due is per sensor, not one for the whole catch-up: with one due, a sensor still
silent when the next hour opened kept that due alive, the whole city joined it, and a round of every
sensor (70 windows, ~330 KB) went out just as the new hour's first pushes waited behind it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import requests

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.features.compute import local_to_utc, position_stamps
from cityscale.features.spec import HISTORY_VIEW, SPEC, FeatureSpec, FeatureView
from cityscale.realtime.journal import Journal
from cityscale.realtime.records import CountRow
from cityscale.realtime.state import CountState, pos_to_local

logger = logging.getLogger(__name__)


class PushRejected(ValueError):
    """The batch cannot be accepted as sent (nothing of it was written): a 4xx with ``problems``."""

    def __init__(self, problems: list[dict], status: int = 422):
        super().__init__("; ".join(f"record {p['record']}: {p['error']}" for p in problems[:5]))
        self.problems = problems
        self.status = status


class OnlineStoreUnavailable(RuntimeError):
    """Counts are journaled but the feature server refused the rows: a 503, and a retry is safe."""


@dataclass
class PushResult:
    accepted: int
    unchanged: int
    online_rows: int
    latest_hour: dict[str, str] = field(default_factory=dict)


def journal_dir(settings: Settings) -> Path:
    return Path(settings.realtime_journal_dir or (settings.workdir / "realtime" / "journal")).absolute()


def rows_frame(rows: list[CountRow]) -> pd.DataFrame:
    """Count rows in the raw contract (last write per key wins), UTC placed as the batch ingest does."""
    latest = {r.key: r for r in rows}
    frame = pd.DataFrame(
        {
            "city": [r.city for r in latest.values()],
            "sensor_id": [r.sensor_id for r in latest.values()],
            "sensor_name": [r.sensor_name for r in latest.values()],
            "timestamp_local": position_stamps([r.pos for r in latest.values()]),
            "count": [r.count for r in latest.values()],
        }
    )
    utc = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    for city, idx in frame.groupby("city").groups.items():
        utc.loc[idx] = local_to_utc(pd.DatetimeIndex(frame.loc[idx, "timestamp_local"]), str(city)).to_numpy()
    frame.insert(4, "timestamp_utc", utc)
    return frame


def _worker_pid() -> int:
    """The commit worker's pid: submitting it starts the worker and imports this module there."""
    return os.getpid()


class Gateway:
    def __init__(self, settings: Settings, spec: FeatureSpec = SPEC):
        self.settings = settings
        self.spec = spec
        self.store_uri = settings.resolved_store_uri
        self.feature_server_url = settings.feature_server_url.rstrip("/")
        self.state = CountState(spec)
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._online = threading.Condition()
        self._pending: set[str] = set()  # sensors whose online rows wait for the next round
        # Sensors moved to a new city hour without a count of their own -> when their rows are due (monotonic s).
        self._catch_up: dict[str, float] = {}
        self._in_flight: set[str] = set()  # sensors of the round being sent now
        self._aggregates = threading.Condition()
        self._aggregates_pending: set[str] = set()  # sensors whose aggregate rows wait for the next aggregates round
        self._aggregates_in_flight: set[str] = set()
        self._requested = self._done = 0  # request tickets issued / covered by a finished round
        self._round_error: str | None = None
        # Held around every /push when realtime_serial_pushes (Settings: the SQLite online store's one connection).
        self._push_lock: AbstractContextManager = threading.Lock() if settings.realtime_serial_pushes else nullcontext()
        self._session = requests.Session()  # one per sending thread: a Session is not thread-safe
        self._aggregates_session = requests.Session()
        self.committed_rows = 0
        self._upserter = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        # Spawn the worker and import its modules now, not at the first commit in the middle of traffic.
        logger.info("journal commits run in worker process %d", self._upserter.submit(_worker_pid).result())
        self.state.load_raw(raw_zone.read(self.store_uri))
        self.journal = Journal(journal_dir(settings))
        replayed = list(Journal.read(self.journal.segments()))
        self.state.apply(self.state.diff(replayed))
        logger.info("replayed %d journaled rows", len(replayed))
        self.commit()  # whatever a crash left journaled goes into the raw zone now
        self._committer = threading.Thread(target=self._commit_loop, name="journal-commit", daemon=True)
        self._pusher = threading.Thread(target=self._push_loop, name="online-push", daemon=True)
        self._aggregates_pusher = threading.Thread(target=self._aggregates_loop, name="online-aggregates", daemon=True)

    def start(self) -> None:
        """Bring the online store up to the journal (rows a crash may not have pushed) and start committing."""
        self._committer.start()
        if self.feature_server_url:
            self._pusher.start()
            self._aggregates_pusher.start()
            try:
                self._wait_online(set(self.state.city_of))
            except OnlineStoreUnavailable as exc:  # stays pending: the next round retries
                logger.warning("%s", exc)

    # --- pushes ------------------------------------------------------------------------------------
    def push(self, rows: list[CountRow]) -> PushResult:
        problems = [
            {"record": i, "field": "sensor_id", "error": why}
            for i, row in enumerate(rows)
            if (why := self.state.conflict(row)) is not None
        ]
        if problems:
            raise PushRejected(problems, status=409)
        with self._lock:
            changed = self.state.diff(rows)
            self.journal.append(changed)  # durable first: a failed write leaves the state as it was
            advanced = self.state.apply(changed)
            sensors = {r.sensor_id for r in changed}
            catch_up = set(self.state.sensors_of(advanced)) - sensors
            latest = self._latest()
        if catch_up and self.feature_server_url:
            with self._online:
                due = time.monotonic() + self.settings.realtime_catch_up_delay_s
                for sensor in catch_up:  # a due never moves later: a silent sensor is not put off hour after hour
                    self._catch_up.setdefault(sensor, due)
        online = self._wait_online(sensors)
        if self.journal.pending_rows >= self.settings.realtime_commit_rows:
            self._wake.set()
        return PushResult(len(changed), len(rows) - len(changed), online, latest)

    def _latest(self) -> dict[str, str]:
        """Each city's latest counted hour (local ISO); the online rows serve the hour after it."""
        return {c: f"{pos_to_local(h):%Y-%m-%dT%H:%M:%S}" for c, h in sorted(self.state.city_last.items())}

    def _wait_online(self, sensors: set[str]) -> int:
        """Queue the sensors' rows for the pusher and wait for the round that sends them."""
        if not self.feature_server_url:
            return 0
        with self._online:
            if sensors:
                self._pending |= sensors
            elif not self._pending:
                return 0
            self._requested += 1
            ticket = self._requested
            self._online.notify_all()
            deadline = time.monotonic() + 2 * self.settings.realtime_push_timeout_s + 1
            while self._done < ticket:
                if not self._online.wait(max(0.0, deadline - time.monotonic())):
                    raise OnlineStoreUnavailable("counts are stored durably; the online push timed out, retry is safe")
            # A later round than ours may have finished meanwhile: it re-sent our sensors if ours had failed.
            if self._round_error:
                raise OnlineStoreUnavailable(
                    f"counts are stored durably but the online store was not updated ({self._round_error}); "
                    "retrying is safe"
                )
        return len(sensors)

    def _push_loop(self) -> None:
        while not self._stop.is_set():
            with self._online:
                while not self._pending and not self._stop.is_set():
                    first_due = min(self._catch_up.values(), default=None)
                    if first_due is not None and time.monotonic() >= first_due:
                        break
                    self._online.wait(1.0 if first_due is None else max(0.001, first_due - time.monotonic()))
                now = time.monotonic()
                todo = self._pending | {sensor for sensor, due in self._catch_up.items() if due <= now}
                self._pending = set()
                for sensor in todo:  # sent now, with a count of their own or due
                    self._catch_up.pop(sensor, None)
                covered = self._requested
                self._in_flight = todo
            if not todo:
                continue
            error = self._send_views([self.spec.view(HISTORY_VIEW)], todo, self._session)
            if not error:  # handed over before the round counts as done: stats never sees the sensors in neither
                with self._aggregates:
                    self._aggregates_pending |= todo
                    self._aggregates.notify_all()
            with self._online:  # the waiting pushes are answered once the rows forecasts read are online
                self._round_error, self._done = error, covered
                if error:  # the next round sends the sensors' rows again
                    self._pending |= todo
                self._in_flight = set()
                self._online.notify_all()
            if error:
                logger.warning("online push failed, retrying: %s", error)
                self._stop.wait(0.5)

    def _aggregates_loop(self) -> None:
        views = [v for v in self.spec.pushed_views() if v.name != HISTORY_VIEW]
        while not self._stop.is_set():
            with self._aggregates:
                while not self._aggregates_pending and not self._stop.is_set():
                    self._aggregates.wait(1.0)
                todo, self._aggregates_pending = self._aggregates_pending, set()
                self._aggregates_in_flight = todo
            error = self._send_views(views, todo, self._aggregates_session) if todo else None
            with self._aggregates:
                if error:
                    self._aggregates_pending |= todo
                self._aggregates_in_flight = set()
            if error:
                logger.warning("online aggregates push failed, retrying: %s", error)
            self._stop.wait(self.settings.realtime_aggregates_interval_s)

    def _send_views(self, views: list[FeatureView], sensors: set[str], session: requests.Session) -> str | None:
        """Snapshot the sensors' rows of each view under the state lock (state order), then POST them."""
        with self._lock:
            bodies = [(v.push_source, self.state.rows(v, sorted(sensors))) for v in views]
        return self._send(bodies, session)

    def _send(self, bodies: list[tuple[str, dict]], session: requests.Session) -> str | None:
        """POST each view's rows to the feature server's /push; the error, or None."""
        try:
            for source, rows in bodies:
                with self._push_lock:
                    resp = session.post(
                        f"{self.feature_server_url}/push",
                        json={"push_source_name": source, "df": rows, "to": "online"},
                        timeout=self.settings.realtime_push_timeout_s,
                    )
                if resp.status_code not in (200, 202):
                    return f"feature server answered {resp.status_code}: {resp.text[:300]}"
        except requests.RequestException as exc:
            return f"feature server unreachable: {exc}"
        return None

    # --- commits into the raw zone -----------------------------------------------------------------
    def commit(self) -> int:
        """Upsert every closed journal segment into the raw zone (one transaction), then drop them."""
        with self._commit_lock:
            with self._lock:
                segments = self.journal.rotate()
            rows = list(Journal.read(segments))
            if rows:
                self._upserter.submit(raw_zone.upsert, self.store_uri, rows_frame(rows), self.settings).result()
            Journal.remove(segments)
            self.committed_rows += len(rows)
            with self._lock:
                self.state.prune()
            return len(rows)

    def _commit_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.realtime_commit_interval_s)
            self._wake.clear()
            try:
                if self.journal.pending_rows:
                    self.commit()
            except Exception:  # the journal keeps the rows: the next round retries
                logger.exception("journal commit failed; retrying in %.0f s", self.settings.realtime_commit_interval_s)
                time.sleep(1)

    def close(self) -> None:
        """Stop committing and commit what is left (a clean shutdown leaves an empty journal)."""
        self._stop.set()
        self._wake.set()
        with self._online:
            self._online.notify_all()
        with self._aggregates:
            self._aggregates.notify_all()
        for thread in (self._pusher, self._aggregates_pusher):
            if thread.is_alive():
                thread.join(timeout=30)
        if self._committer.is_alive():
            self._committer.join(timeout=30)
        self.commit()
        self.journal.close()
        self._upserter.shutdown()

    def stats(self) -> dict:
        with self._online, self._aggregates:  # the pusher threads swap these sets
            waiting = self._pending | self._catch_up.keys() | self._in_flight
            online_pending = len(waiting | self._aggregates_pending | self._aggregates_in_flight)
        return {
            "sensors": len(self.state.city_of),
            "journal_pending_rows": self.journal.pending_rows,
            "online_pending_sensors": online_pending,
            "committed_rows": self.committed_rows,
            "latest_hour": self._latest(),
        }

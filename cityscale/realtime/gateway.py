"""The push gateway's core: validate -> journal (fsync) -> update state -> push feature rows -> commit.

Ordering is what makes it safe. A push is answered only after its counts are fsynced in the journal,
so an acknowledged count survives a crash. The online feature rows are pushed *after* the journal write
and before the answer, so a client that got its 200 finds the count in the next forecast. The journal
is committed into the raw zone (its transactional upsert) in the background, every few seconds or at a
row threshold, so the next batch run sees every pushed count. Conflicts resolve *last write wins*, the
raw zone's own upsert rule: a corrected count replaces the old one, and an identical duplicate or retry
changes nothing (it is not even journaled).

One lock serialises pushes: each push recomputes and sends whole rows, so two interleaved pushes for the
same sensor could otherwise leave an older row in the online store.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import requests

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.features.compute import local_to_utc, position_stamps
from cityscale.features.spec import SPEC, FeatureSpec
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
        self._dirty: set[str] = set()  # sensors whose online rows failed to push: retried with the next push
        self._session = requests.Session()
        self.committed_rows = 0
        self.state.load_raw(raw_zone.read(self.store_uri))
        self.journal = Journal(journal_dir(settings))
        replayed = list(Journal.read(self.journal.segments()))
        self.state.apply(self.state.diff(replayed))
        logger.info("replayed %d journaled rows", len(replayed))
        self.commit()  # whatever a crash left journaled goes into the raw zone now
        self._dirty = set(self.state.city_of) if self.feature_server_url else set()
        self._committer = threading.Thread(target=self._commit_loop, name="journal-commit", daemon=True)

    def start(self) -> None:
        """Bring the online store up to the journal (rows a crash may not have pushed) and start committing."""
        with self._lock:
            self._push_online(set())
        self._committer.start()

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
            sensors = {r.sensor_id for r in changed} | set(self.state.sensors_of(advanced))
            online = self._push_online(sensors)
            latest = self._latest()
        if self.journal.pending_rows >= self.settings.realtime_commit_rows:
            self._wake.set()
        return PushResult(len(changed), len(rows) - len(changed), online, latest)

    def _latest(self) -> dict[str, str]:
        """Each city's latest counted hour (local ISO); the online rows serve the hour after it."""
        return {c: f"{pos_to_local(h):%Y-%m-%dT%H:%M:%S}" for c, h in sorted(self.state.city_last.items())}

    def _push_online(self, sensors: set[str]) -> int:
        """Send the pushed views' rows of ``sensors`` (and earlier failures) to the feature server."""
        if not self.feature_server_url:
            return 0
        todo = sorted(sensors | self._dirty)
        if not todo:
            return 0
        try:
            for view in self.spec.pushed_views():
                body = {"push_source_name": view.push_source, "df": self.state.rows(view, todo), "to": "online"}
                resp = self._session.post(
                    f"{self.feature_server_url}/push", json=body, timeout=self.settings.realtime_push_timeout_s
                )
                if resp.status_code not in (200, 202):
                    raise OnlineStoreUnavailable(f"feature server answered {resp.status_code}: {resp.text[:300]}")
        except (requests.RequestException, OnlineStoreUnavailable) as exc:
            self._dirty.update(todo)
            raise OnlineStoreUnavailable(
                f"counts are stored durably but the online store was not updated ({exc}); retrying is safe"
            ) from exc
        self._dirty.clear()
        return len(todo)

    # --- commits into the raw zone -----------------------------------------------------------------
    def commit(self) -> int:
        """Upsert every closed journal segment into the raw zone (one transaction), then drop them."""
        with self._commit_lock:
            with self._lock:
                segments = self.journal.rotate()
            rows = list(Journal.read(segments))
            if rows:
                raw_zone.upsert(self.store_uri, rows_frame(rows))
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
        if self._committer.is_alive():
            self._committer.join(timeout=30)
        self.commit()
        self.journal.close()

    def stats(self) -> dict:
        return {
            "sensors": len(self.state.city_of),
            "journal_pending_rows": self.journal.pending_rows,
            "committed_rows": self.committed_rows,
            "latest_hour": self._latest(),
        }

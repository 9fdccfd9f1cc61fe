"""A loopback stand-in for the City of Melbourne Opendatasoft portal that replays real exports.

Tests and the ingestion benchmark cannot reach the live portal, and the portal's field names and
filter syntax cannot be checked from here, so the connector is exercised against this replay of
the real wide CSV exports (``../shared/data/melbourne_pcs``) in the Explore API v2.1 records shape
(``{"total_count": N, "results": [...]}``, ``limit``/``offset``, ``where``/``order_by``). It is a
stand-in, not the portal: it understands exactly the hour-range ``where`` the manifest sends and
answers anything else with HTTP 400, as the portal does for ODSQL it cannot parse.

It also serves static files (``/files/<name>``: the Auckland export) and injects faults (429,
5xx, a body cut off mid-transfer, malformed JSON) so the connectors' retry and failure paths run
against real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

RECORDS_PATH = re.compile(r"^/api/explore/v2\.1/catalog/datasets/(?P<dataset>[^/]+)/records$")
_DATE = r"date'(\d{4}-\d{2}-\d{2})'"
# The manifest's window filter: (D > d0 OR (D = d0 AND H >= h0)) AND (D < d1 OR (D = d1 AND H <= h1)).
WHERE_RANGE = re.compile(
    rf"\(\s*(?P<d>\w+)\s*>\s*{_DATE}\s+OR\s+\(\s*\w+\s*=\s*{_DATE}\s+AND\s+(?P<h>\w+)\s*>=\s*(\d+)\s*\)\s*\)"
    rf"\s+AND\s+\(\s*\w+\s*<\s*{_DATE}\s+OR\s+\(\s*\w+\s*=\s*{_DATE}\s+AND\s+\w+\s*<=\s*(\d+)\s*\)\s*\)",
    re.IGNORECASE,
)
FAULTS = ("429", "500", "503", "truncate", "malformed")


def melbourne_records(long: pd.DataFrame, location_ids: dict[str, int] | None = None) -> pd.DataFrame:
    """Long raw-contract rows -> records with the portal's field names, sorted as the portal orders them."""
    codes = long["sensor_id"].astype(str).str.replace("+", ", ", regex=False)
    ts = pd.to_datetime(long["timestamp_local"])
    out = pd.DataFrame(
        {
            "location_id": long["sensor_id"].map(location_ids or {}).fillna(0).astype(int).to_numpy(),
            "sensing_date": ts.dt.strftime("%Y-%m-%d").to_numpy(),
            "hourday": ts.dt.hour.to_numpy(),
            "pedestriancount": long["count"].astype("int64").to_numpy(),
            "sensor_name": codes.to_numpy(),
        }
    )
    return out.sort_values(["sensing_date", "hourday", "sensor_name"], ignore_index=True)


def melbourne_locations(path: str | Path) -> pd.DataFrame:
    """The real sensor_locations.csv in the portal's lower-case field names."""
    loc = pd.read_csv(path)
    loc.columns = [c.lower() for c in loc.columns]
    keep = ["location_id", "sensor_description", "sensor_name", "installation_date", "note", "location_type"]
    keep += ["status", "direction_1", "direction_2", "latitude", "longitude"]
    return loc[keep].sort_values("location_id", ignore_index=True)


@dataclass
class _Dataset:
    frame: pd.DataFrame
    key: np.ndarray | None  # day * 24 + hour per row (sorted), for hour-range filters

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Dataset:
        key = None
        if {"sensing_date", "hourday"} <= set(frame.columns):
            days = pd.to_datetime(frame["sensing_date"]).to_numpy().astype("datetime64[D]").astype(np.int64)
            key = days * 24 + frame["hourday"].to_numpy().astype(np.int64)
        return cls(frame.reset_index(drop=True), key)


@dataclass
class ReplayPortal:
    """State shared with the request handler: datasets, static files, queued faults, a request log."""

    datasets: dict[str, _Dataset] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    faults: deque[str] = field(default_factory=deque)
    requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_dataset(self, dataset_id: str, frame: pd.DataFrame) -> None:
        self.datasets[dataset_id] = _Dataset.of(frame)

    def inject(self, *faults: str) -> None:
        """Queue faults; each is served instead of the next response (in order)."""
        for fault in faults:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
            self.faults.append(fault)

    def page(self, dataset_id: str, params: dict[str, str]) -> tuple[int, bytes]:
        if dataset_id not in self.datasets:
            return 404, json.dumps({"error_code": "DatasetNotFound", "message": dataset_id}).encode()
        ds = self.datasets[dataset_id]
        limit, offset = int(params.get("limit", 10)), int(params.get("offset", 0))
        if limit > 100 or offset + limit > 10_000:
            return 400, json.dumps({"error_code": "InvalidRESTParameterError", "message": "limit/offset"}).encode()
        lo, hi = 0, len(ds.frame)
        where = params.get("where", "").strip()
        if where:
            match = WHERE_RANGE.fullmatch(" ".join(where.split()))
            if match is None or ds.key is None:
                return 400, json.dumps({"error_code": "ODSQLError", "message": f"unsupported where: {where}"}).encode()
            d0, _, h0, d1, _, h1 = match.group(2, 3, 5, 6, 7, 8)
            start = np.datetime64(d0, "D").astype(np.int64) * 24 + int(h0)
            end = np.datetime64(d1, "D").astype(np.int64) * 24 + int(h1)
            lo, hi = int(np.searchsorted(ds.key, start, "left")), int(np.searchsorted(ds.key, end, "right"))
        rows = ds.frame.iloc[lo + offset : min(lo + offset + limit, hi)]
        body = {"total_count": hi - lo, "results": rows.to_dict("records")}
        return 200, json.dumps(body, default=_json_default).encode()


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    raise TypeError(type(value))


def _handler(portal: ReplayPortal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # header and body go out in two writes: no 40 ms delayed-ACK stalls

        def log_message(self, *args: object) -> None:  # keep test output clean
            return

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with portal.lock:
                portal.requests.append({"path": url.path, **params})
                fault = portal.faults.popleft() if portal.faults else None
            if fault in ("429", "500", "503"):
                return self._send(int(fault), b'{"error_code": "injected"}', extra={"Retry-After": "0"})
            if url.path.startswith("/files/") and url.path[7:] in portal.files:
                status, body, ctype = 200, portal.files[url.path[7:]], "text/csv"
            elif match := RECORDS_PATH.match(url.path):
                (status, body), ctype = portal.page(match["dataset"], params), "application/json"
            else:
                status, body, ctype = 404, b'{"error_code": "NotFound"}', "application/json"
            if fault == "malformed":
                body = body[: max(1, len(body) // 2)]  # a cut-off document, served complete
            if fault == "truncate":  # announce the full body, send half, drop the connection
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, body, ctype)

        def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(portal: ReplayPortal) -> Iterator[str]:
    """Serve the portal on 127.0.0.1 (a free port) in a thread; yields the base URL, stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(portal))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def portal_from_exports(
    melbourne_dir: str | Path | None = None, auckland_csv: str | Path | None = None
) -> ReplayPortal:
    """A portal holding the real Melbourne history (and sensor locations) and/or the Auckland export."""
    portal = ReplayPortal()
    if melbourne_dir is not None:
        from cityscale.sources import melbourne

        melbourne_dir = Path(melbourne_dir)
        long = melbourne.read_wide_exports(sorted(melbourne_dir.glob("grouped_data_*.csv")))
        locations = melbourne_locations(melbourne_dir / "sensor_locations.csv")
        ids = dict(zip(locations["sensor_name"].astype(str).str.strip(), locations["location_id"], strict=False))
        portal.set_dataset("pedestrian-counting-system-monthly-counts-per-hour", melbourne_records(long, ids))
        portal.set_dataset("pedestrian-counting-system-sensor-locations", locations)
    if auckland_csv is not None:
        portal.files["hourly_counts.csv"] = Path(auckland_csv).read_bytes()
    return portal


def main() -> None:
    """``python -m cityscale.ingestion.replay --melbourne DIR``: serve until killed (benchmarks run it apart)."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--melbourne", default=None)
    parser.add_argument("--auckland", default=None)
    args = parser.parse_args()
    portal = portal_from_exports(args.melbourne, args.auckland)
    with serve(portal) as url:
        print(url, flush=True)
        sys.stdout.close()
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()

"""Run the Feast feature server over a built feature store, in this process or as a loopback child.

The server is Feast's own (``FeatureStore.serve``: gunicorn + FastAPI, ``POST /get-online-features``,
``POST /push``, ``GET /health``); CityScale only points it at the registry and online store that
``cityscale features build`` wrote under the settings' features directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

from cityscale.config import Settings


def serve_forever(settings: Settings, features_dir: str | Path, host: str, port: int, workers: int = 1) -> None:
    """Block serving the store's online features (Feast's feature server)."""
    from cityscale.features.feast_backend import FeastBackend

    backend = FeastBackend(settings, features_dir)
    if backend.build_info() is None:
        raise FileNotFoundError(f"no feature store built in {backend.root}: run `cityscale features build` first")
    # max_requests=0: gunicorn must not recycle the worker every 1000 requests (a latency spike each time).
    backend.store.serve(
        host=host,
        port=port,
        workers=workers,
        no_access_log=True,
        max_requests=0,
        max_requests_jitter=0,
        registry_ttl_sec=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen


@contextmanager
def local_feature_server(
    store_uri: str, features_dir: str | Path, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> Iterator[RunningServer]:
    """``cityscale feature-server`` as a child process on a free loopback port; stopped on exit."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "cityscale.cli",
        "feature-server",
        "--store",
        str(store_uri),
        "--features-dir",
        str(features_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-build",
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"feature server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                )
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"feature server not healthy at {url} after {timeout_s:.0f} s")
            time.sleep(0.2)
        yield RunningServer(url, proc)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop the server and its gunicorn workers (its own process group, started above)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=timeout_s)
    if proc.stderr:
        proc.stderr.close()

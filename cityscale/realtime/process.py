"""The push gateway as a child process on a free loopback port (tests, benchmarks, ``cityscale replay``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from cityscale.features.server import RunningServer, free_port, stop


def start_gateway(env: dict[str, str], port: int | None = None, timeout_s: float = 60.0) -> RunningServer:
    """Start ``cityscale gateway`` with ``env`` (CITYSCALE_* settings) and wait until it is healthy."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "cityscale.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return RunningServer(url, proc)
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise TimeoutError(f"gateway not healthy at {url} after {timeout_s:.0f} s")
        time.sleep(0.1)


@contextmanager
def local_gateway(env: dict[str, str], timeout_s: float = 60.0) -> Iterator[RunningServer]:
    """The gateway for the duration of a ``with`` block; stopped (SIGTERM: journal committed) on exit."""
    server = start_gateway(env, timeout_s=timeout_s)
    try:
        yield server
    finally:
        stop(server.process)

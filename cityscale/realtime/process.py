"""The push gateway as a child process on a free loopback port (tests, benchmarks, ``cityscale replay``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cityscale.loopback import LoopbackServer, free_port, start, stop


def start_gateway(env: dict[str, str], port: int | None = None, timeout_s: float = 60.0) -> LoopbackServer:
    """Start ``cityscale gateway`` with ``env`` (CITYSCALE_* settings) and wait until it is healthy.

    The caller stops it with ``cityscale.loopback.stop`` (SIGTERM: the journal is committed).
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "cityscale.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    return start(cmd, url=f"http://127.0.0.1:{port}", name="gateway", env=env, timeout_s=timeout_s, poll_s=0.1)


@contextmanager
def local_gateway(env: dict[str, str], timeout_s: float = 60.0) -> Iterator[LoopbackServer]:
    """The gateway for the duration of a ``with`` block; stopped (SIGTERM: journal committed) on exit."""
    server = start_gateway(env, timeout_s=timeout_s)
    try:
        yield server
    finally:
        stop(server)

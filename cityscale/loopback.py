"""Real servers as child processes on free loopback ports: ``make run``, the tests and the benchmarks.

CityScale's servers (the KServe model server, Feast's feature server, the push gateway) are exercised
locally as the very processes the cluster runs, not as in-process fakes. Each needs the same
scaffolding: a free port, a child process whose output goes somewhere that cannot fill up, a wait
until its health endpoint answers 200 (or a fast, readable failure when it dies or hangs), and a
clean stop that also takes down any workers it forked. This module is that one place; the runners
(``serving.local_server``, ``cityscale.features.server``, ``cityscale.realtime.process``) only say
which command to run, with which environment, and where its health endpoint is.

Every server gets its own session (``start_new_session=True``), so it and its workers form one
process group: stopping sends SIGTERM to the group, waits, then SIGKILLs the group. Its stdout and
stderr go to a log file (a pipe nobody reads blocks the server once it is full); errors quote the
log's tail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LoopbackServer:
    """A server started by :func:`start`: its base URL, its process (leader of its own group) and its log."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout_s: float = 10.0
    log_is_temporary: bool = False  # a log file :func:`start` made up itself; :func:`stop` removes it

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]


def start(
    argv: Sequence[str],
    *,
    url: str,
    health_path: str = "/health",
    name: str = "server",
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: str | Path | None = None,
    log_path: str | Path | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.2,
    stop_timeout_s: float = 10.0,
) -> LoopbackServer:
    """Start ``argv`` and return once ``GET <url><health_path>`` answers 200; the caller must :func:`stop` it.

    ``env`` is laid over ``os.environ``, or is the whole environment with ``inherit_env=False`` (a process that
    must see only what its manifest declares). Output goes to ``log_path`` (a temporary file, removed on
    stop, when not given). If the process exits first, :class:`RuntimeError`; if it is not healthy
    within ``timeout_s``, :class:`TimeoutError`; both quote the log's tail and leave nothing running.
    """
    if log_path is None:
        fd, temp = tempfile.mkstemp(prefix=f"cityscale-{name.replace(' ', '-')}-", suffix=".log")
        os.close(fd)
        path, temporary = Path(temp), True
    else:
        path, temporary = Path(log_path), False
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**(os.environ if inherit_env else {}), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LoopbackServer(name, url, process, path, stop_timeout_s, temporary)
    try:
        _wait_healthy(server, f"{url}{health_path}", timeout_s, poll_s)
    except BaseException:
        stop(server)
        raise
    return server


@contextmanager
def serve(argv: Sequence[str], **options: Any) -> Iterator[LoopbackServer]:
    """:func:`start` (same options) for the duration of a ``with`` block; always :func:`stop`-ped on exit."""
    server = start(argv, **options)
    try:
        yield server
    finally:
        stop(server)


def stop(server: LoopbackServer, timeout_s: float | None = None) -> None:
    """SIGTERM the server's process group, wait (``timeout_s``, default its ``stop_timeout_s``), then SIGKILL it.

    A no-op for a process that has already exited (and been waited for by someone else, e.g. a test
    that killed it on purpose), apart from removing a temporary log.
    """
    process = server.process
    timeout_s = server.stop_timeout_s if timeout_s is None else timeout_s
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    if server.log_is_temporary:
        server.log_path.unlink(missing_ok=True)


def _wait_healthy(server: LoopbackServer, health_url: str, timeout_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(health_url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{server.name} not healthy at {health_url} after {timeout_s:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(poll_s)

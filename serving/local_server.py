"""Run the model server as a child process on free loopback ports (``make run`` and the tests).

The server is a real ``kserve.ModelServer`` process, exactly what the cluster runs; this module
only picks ports, waits for readiness and stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    http_url: str
    grpc_target: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def local_model_server(
    env: dict[str, str] | None = None,
    model: str = "production",
    timeout_s: float = 90.0,
    log_dir: Path | None = None,
    module: str = "serving",
    args: list[str] | None = None,
) -> Iterator[RunningServer]:
    """Start ``python -m <module>`` on free ports and stop it (SIGTERM, then SIGKILL) on exit.

    ``module`` is ``serving`` (the predictor, given ``--model``), ``serving.transformer`` or any other
    ``kserve.ModelServer`` entry point that reads ``HTTP_PORT``/``GRPC_PORT``; ``args`` replace ``--model``.
    """
    http_port, grpc_port = free_port(), free_port()
    child_env = {**os.environ, **(env or {}), "HTTP_PORT": str(http_port), "GRPC_PORT": str(grpc_port)}
    log_dir = Path(log_dir or child_env.get("CITYSCALE_WORKDIR", "local_outputs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"model-server-{http_port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *(args if args is not None else ["--model", model])],
            cwd=REPO_ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process, log_path)
    try:
        _wait_ready(server, timeout_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: RunningServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"model server exited with {server.process.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"model server not ready after {timeout_s:.0f} s:\n{server.log()[-3000:]}")

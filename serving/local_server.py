"""Run the model server as a child process on free loopback ports (``make run`` and the tests).

The server is a real ``kserve.ModelServer`` process, exactly what the cluster runs; ports, readiness
and the clean stop are ``cityscale.loopback``'s, this module only says how to start it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cityscale import loopback

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningServer:
    """The model server as ``local_model_server`` yields it: its loopback process plus its gRPC address."""

    server: loopback.LoopbackServer
    grpc_target: str

    @property
    def http_url(self) -> str:
        return self.server.url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.server.process

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def log(self) -> str:
        return self.server.log()


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
    http_port, grpc_port = loopback.free_port(), loopback.free_port()
    child_env = {**(env or {}), "HTTP_PORT": str(http_port), "GRPC_PORT": str(grpc_port)}
    log_dir = Path(log_dir or {**os.environ, **child_env}.get("CITYSCALE_WORKDIR", "local_outputs"))
    with loopback.serve(
        [sys.executable, "-m", module, *(args if args is not None else ["--model", model])],
        url=f"http://127.0.0.1:{http_port}",
        health_path="/v2/health/ready",
        name="model server",
        env=child_env,
        cwd=REPO_ROOT,
        log_path=log_dir / f"model-server-{http_port}.log",
        timeout_s=timeout_s,
        poll_s=0.3,
        stop_timeout_s=15.0,
    ) as server:
        yield RunningServer(server, f"127.0.0.1:{grpc_port}")

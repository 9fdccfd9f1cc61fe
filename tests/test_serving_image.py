"""The serving image (Dockerfile.serving) holds what serving needs: requirements/serving.lock and nothing else.

No Docker here, so the image's package set is enforced in a process: an import hook makes every module of an
installed distribution that requirements/serving.lock does not name fail to import, as it would in the image
(kfp, the Feast SDK, Airbyte, statsforecast, matplotlib, Lightning ...). Under that hook the real predictor
(``python -m serving``, the image's entrypoint) starts on loopback and answers V2 and V1 forecasts, and the
transformer and the lazily imported paths (gs:// storage, the opt-in Tecton client) import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from cityscale import loopback

REPO = Path(__file__).resolve().parents[1]
SERVING_LOCK = REPO / "requirements" / "serving.lock"
DOCKERFILE = REPO / "Dockerfile.serving"
START = "2022-10-01T00:00:00"  # inside the trained workdir's Jan-Oct 2022 raw zone
SENSORS = ["FliS_T", "Bou283_T"]

# Runs first in the child: from then on, importing a module that an installed distribution outside the lock
# provides raises ModuleNotFoundError (project code and the standard library are no distribution's files here).
SLIM_IMAGE = r"""
import importlib.abc, importlib.machinery, os, re, sys
from importlib import metadata

def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

_lock = open(os.environ["SLIM_IMAGE_LOCK"]).read()
_allowed = {_norm(n) for n in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", _lock, re.M)}
_owner = {}
for _dist in metadata.distributions():
    _name = _norm(_dist.metadata["Name"])
    if _name in _allowed or _name == "cityscale":
        continue
    for _file in _dist.files or ():
        if _file.suffix in (".py", ".so", ".pyc") or ".cpython-" in _file.name:
            _owner[os.path.normpath(str(_dist.locate_file(_file)))] = _name


class SlimImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        dist = _owner.get(os.path.normpath(spec.origin)) if spec is not None and spec.origin else None
        if dist is not None:
            with open(os.environ["SLIM_IMAGE_REPORT"], "a") as report:
                report.write(f"{name} {dist}\n")
            raise ModuleNotFoundError(f"No module named {name!r} (the serving image has no {dist})", name=name)
        return None


sys.meta_path.insert(0, SlimImage())
"""


def slim_python(code: str) -> list[str]:
    """``python -c`` that installs the hook, then runs ``code``."""
    return [sys.executable, "-c", SLIM_IMAGE + code]


def slim_env(report: Path, **extra: str) -> dict[str, str]:
    return {"SLIM_IMAGE_LOCK": str(SERVING_LOCK), "SLIM_IMAGE_REPORT": str(report), **extra}


def blocked(report: Path) -> dict[str, str]:
    return dict(line.split() for line in report.read_text().splitlines()) if report.exists() else {}


def test_the_hook_blocks_what_the_lock_leaves_out(tmp_path: Path) -> None:
    report = tmp_path / "blocked.txt"
    code = """
for name in ("feast", "kfp", "airbyte_cdk", "statsforecast", "matplotlib", "pytorch_lightning"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} imported under the hook")
import kserve, lightgbm, torch  # in the lock
"""
    proc = subprocess.run(
        slim_python(code), cwd=REPO, env={**_base_env(), **slim_env(report)}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = blocked(report)
    assert {"feast", "kfp", "airbyte_cdk", "statsforecast", "matplotlib", "pytorch_lightning"} <= set(found), found


def test_the_transformer_and_the_lazy_paths_import_with_the_lock_only(tmp_path: Path) -> None:
    """gs:// registry and raw zone (gcsfs, google-cloud-storage), Tecton history, the boosters, the transformer."""
    report = tmp_path / "blocked.txt"
    code = """
import serving.__main__, serving.predictor, serving.server, serving.transformer, serving.metrics
import cityscale.features.online, cityscale.monitoring.forecast_log, cityscale.registry
import gcsfs, google.cloud.storage, google.api_core.exceptions, lightgbm, tecton_client, tecton_client.exceptions
import fsspec
fsspec.get_filesystem_class("gs")
"""
    proc = subprocess.run(
        slim_python(code), cwd=REPO, env={**_base_env(), **slim_env(report)}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.server
def test_the_predictor_serves_with_the_lock_only(trained_workdir: Path, tmp_path: Path) -> None:
    """The image's entrypoint, ``python -m serving``, with only the lock's packages: ready, V2 and V1 forecasts."""
    workdir = tmp_path / "work"
    shutil.copytree(trained_workdir, workdir)  # the forecast log writes into the raw zone's store
    report = tmp_path / "blocked.txt"
    http_port, grpc_port = loopback.free_port(), loopback.free_port()
    env = slim_env(report, CITYSCALE_WORKDIR=str(workdir), HTTP_PORT=str(http_port), GRPC_PORT=str(grpc_port))
    argv = [*slim_python("import runpy; runpy.run_module('serving', run_name='__main__', alter_sys=True)")]
    url = f"http://127.0.0.1:{http_port}"
    with loopback.serve(
        [*argv, "--model", "production"],
        url=url,
        health_path="/v2/health/ready",
        name="slim predictor",
        env=env,
        cwd=REPO,
        timeout_s=120,
    ) as server:
        inputs = [
            {"name": "sensor_id", "datatype": "BYTES", "shape": [len(SENSORS)], "data": SENSORS},
            {"name": "forecast_start", "datatype": "BYTES", "shape": [1], "data": [START]},
        ]
        v2 = requests.post(f"{url}/v2/models/cityscale/infer", json={"inputs": inputs}, timeout=30)
        assert v2.status_code == 200, v2.text + server.log_tail()
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["p50"]["shape"] == [len(SENSORS), 24]
        instances = [{"sensor_id": s, "forecast_start": START} for s in SENSORS]
        v1 = requests.post(f"{url}/v1/models/cityscale:predict", json={"instances": instances}, timeout=30)
        assert v1.status_code == 200, v1.text
        assert len(v1.json()["predictions"]) == len(SENSORS)
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        log = server.log()
    assert "Traceback" not in log, log[-3000:]
    print("imports the serving image would refuse (each handled by its importer):", json.dumps(blocked(report)))


def test_the_dockerfile_is_the_slim_serving_image() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == re.findall(r"^FROM (\S+)", (REPO / "Dockerfile").read_text(), re.M), "same base as the pipeline"
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"^EXPOSE 8080 8081$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["python", "-m", "serving"\]$', text, re.M)
    assert re.search(r"apt-get install .*\blibgomp1=", text), "lightgbm links the system OpenMP runtime"
    copied = re.findall(r"^COPY (?:--\S+ )*(\S+)", text, re.M)
    assert copied == ["requirements/serving.lock", "cityscale", "serving"], copied
    assert re.search(r"^ENV PYTHONPATH=/app", text, re.M), "the code is on PYTHONPATH, not pip-installed"


def _base_env() -> dict[str, str]:
    """The child's environment: this one's, without CITYSCALE_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CITYSCALE_")}

"""Model lifecycle on a real model server: rollout to a new registry version, rollback, hot reload.

The registry is a copy of the ``trained_workdir`` one (that workdir is shared by the session) plus a second
version whose weights differ, so the served version shows in the response, the V2 metadata, the metrics
and the forecasts themselves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from cityscale import registry, steps
from cityscale.config import Settings
from cityscale.model.contract import WEIGHTS_FILE
from serving.local_server import RunningServer, local_model_server
from tests.test_serving import MODEL, error_message, rest_infer, v2_inputs

pytestmark = pytest.mark.server

START = "2022-10-01T00:00:00"
TIMEOUT = 30


@pytest.fixture()
def lifecycle(trained_workdir: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    """(server env, registry URI): production = 0001, latest = 0002 (same architecture, shifted output bias)."""
    registry_uri = str(tmp_path / "registry")
    shutil.copytree(Settings(workdir=trained_workdir).resolved_registry_uri, registry_uri)
    name = Settings().model_name
    v2 = tmp_path / "model_v2"
    shutil.copytree(registry.version_uri(registry_uri, name, "0001"), v2)
    state = torch.load(v2 / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    last_bias = [k for k in state if k.endswith("bias")][-1]
    state[last_bias] = state[last_bias] + 0.3
    torch.save(state, v2 / WEIGHTS_FILE)
    assert registry.register(v2, registry_uri, name, {"wape": 0.0}, "lifecycle test v2") == "0002"
    env = {"CITYSCALE_WORKDIR": str(trained_workdir), "CITYSCALE_REGISTRY_URI": registry_uri}
    return env, registry_uri


def served(server: RunningServer) -> tuple[str, list[str], np.ndarray]:
    """(response model_version, metadata versions, p50 of one forecast)."""
    response = rest_infer(server, v2_inputs(["FliS_T"], START))
    assert response.status_code == 200, response.text
    body = response.json()
    p50 = next(np.asarray(o["data"], dtype=np.float32) for o in body["outputs"] if o["name"] == "p50")
    meta = requests.get(f"{server.http_url}/v2/models/{MODEL}", timeout=TIMEOUT).json()
    return body["model_version"], meta["versions"], p50


def model_info(server: RunningServer) -> dict[str, float]:
    text = requests.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text
    return {
        line.split('model_version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cityscale_model_info{")
    }


def reload(server: RunningServer) -> requests.Response:
    """The V2 model-repository extension: re-resolve the alias and swap the model in place."""
    return requests.post(f"{server.http_url}/v2/repository/models/{MODEL}/load", timeout=60)


def test_rollout_and_rollback_over_the_registry(lifecycle, tmp_path: Path) -> None:
    env, registry_uri = lifecycle
    name = Settings().model_name
    with local_model_server(env=env, log_dir=tmp_path) as server:
        version, versions, p50_v1 = served(server)
        assert (version, versions) == ("0001", ["0001"])

        # Rollout: the deploy step promotes 0002 to production; a reload serves it without a restart.
        steps.deploy_local("0002", registry_uri, Settings(model_name=name))
        assert reload(server).status_code == 200
        version, versions, p50_v2 = served(server)
        assert (version, versions) == ("0002", ["0002"])
        assert not np.allclose(p50_v1, p50_v2), "0002 has different weights: its forecast must differ"
        assert model_info(server) == {"0001": 0.0, "0002": 1.0}

        # A broken version never replaces the one being served: the reload fails, 0002 keeps serving.
        broken = tmp_path / "broken"
        shutil.copytree(registry.version_uri(registry_uri, name, "0002"), broken)
        (broken / WEIGHTS_FILE).write_bytes(b"not a torch file")
        registry.set_alias(registry_uri, name, "production", registry.register(broken, registry_uri, name, {}, "x"))
        failed = reload(server)
        assert failed.status_code >= 400, failed.text
        assert "UnpicklingError" in error_message(failed) or "load" in error_message(failed).lower()
        assert served(server)[0] == "0002"
        assert requests.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT).status_code == 200

    # Rollback: production goes back to what it held before (0002), then 0001; a restart serves it.
    assert registry.rollback(registry_uri, name) == "0002"
    registry.set_alias(registry_uri, name, "production", "0001")
    with local_model_server(env=env, log_dir=tmp_path) as restarted:
        version, versions, p50 = served(restarted)
        assert (version, versions) == ("0001", ["0001"])
        np.testing.assert_allclose(p50, p50_v1, rtol=1e-5)
        assert model_info(restarted) == {"0001": 1.0}


def test_promote_then_rollback_with_restarts(lifecycle, tmp_path: Path) -> None:
    """The plain path: promote 0002, restart -> 0002; ``registry.rollback`` -> 0001, restart -> 0001."""
    env, registry_uri = lifecycle
    name = Settings().model_name
    steps.deploy_local("0002", registry_uri, Settings(model_name=name))
    with local_model_server(env=env, log_dir=tmp_path) as server:
        assert served(server)[:2] == ("0002", ["0002"])
    assert registry.rollback(registry_uri, name) == "0001"
    with local_model_server(env=env, log_dir=tmp_path) as server:
        assert served(server)[:2] == ("0001", ["0001"])


def test_not_ready_without_a_model(trained_workdir: Path, tmp_path: Path) -> None:
    """No production model: the server never becomes ready (the readiness probe keeps traffic away)."""
    env = {"CITYSCALE_WORKDIR": str(trained_workdir), "CITYSCALE_REGISTRY_URI": str(tmp_path / "empty")}
    with (
        pytest.raises(RuntimeError, match="no model is registered as cityscale:production"),
        local_model_server(env=env, log_dir=tmp_path, timeout_s=60),
    ):
        pass


def test_grpc_on_its_own_loop_serves_both_protocols_and_drains(trained_workdir: Path, tmp_path: Path) -> None:
    """``CITYSCALE_SERVING_GRPC_OWN_LOOP``: same answers over REST and gRPC, and SIGTERM still stops the process."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    from tests.test_serving import START, assert_same_forecast, grpc_outputs, grpc_request, rest_outputs

    env = {"CITYSCALE_WORKDIR": str(trained_workdir), "CITYSCALE_SERVING_GRPC_OWN_LOOP": "true"}
    inputs = v2_inputs(["FliS_T", "Bou283_T"], START)
    with local_model_server(env=env, log_dir=tmp_path) as server:
        via_rest = rest_outputs(rest_infer(server, inputs))
        with grpc.insecure_channel(server.grpc_target) as channel:
            via_grpc = grpc_outputs(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(pb, inputs)))
        assert_same_forecast(via_rest, via_grpc)
        server.process.terminate()
        assert server.process.wait(timeout=20) == 0, server.log_path.read_text()[-3000:]

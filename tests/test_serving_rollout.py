"""Deploying the InferenceService against ``FakeKubernetesApi`` (tests/fake_kserve_api.py), a stand-in for the
Kubernetes API server and the KServe controller. ``KServeClient`` talks to it through ``config_dict=`` (a
kubeconfig whose server is the fake)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityscale import registry
from cityscale.config import Settings
from serving.inference_service import (
    LAST_APPLIED_ANNOTATION,
    InferenceServiceDeployer,
    InferenceServiceError,
    ServingOptions,
    build_inference_service,
)
from tests.fake_kserve_api import ALLOWED_NAMESPACE, PREFIX, FakeKubernetesApi


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture()
def fake_api() -> Iterator[FakeKubernetesApi]:
    with FakeKubernetesApi() as api:
        yield api


@pytest.fixture()
def kserve_client(fake_api: FakeKubernetesApi):
    from kserve import KServeClient

    return KServeClient(config_dict=fake_api.kubeconfig(ALLOWED_NAMESPACE))


def isvc(image: str = "reg/cityscale:v1", model: str = "0001", **overrides: Any):
    return build_inference_service(ServingOptions.from_settings(Settings(), model, image=image, **overrides))


def deployer(kserve_client, timeout_s: float = 10.0) -> InferenceServiceDeployer:
    return InferenceServiceDeployer(kserve_client, timeout_s=timeout_s, poll_s=0.02)


def spec_of(api: FakeKubernetesApi) -> dict[str, Any]:
    return api.objects[("cityscale", "cityscale")]["spec"]


def assert_rbac_respected(api: FakeKubernetesApi) -> None:
    assert {r["method"] for r in api.requests} <= {"GET", "POST", "PATCH"}, "only get/create/patch are allowed"
    assert all(r["path"].startswith(PREFIX + "cityscale/inferenceservices") for r in api.requests)


# --- tests ------------------------------------------------------------------------------------
def test_create_then_wait_ready(fake_api, kserve_client) -> None:
    result = deployer(kserve_client).deploy(isvc())
    assert (result.action, result.generation) == ("created", 1)
    assert result.url == "http://cityscale.cityscale.example.com"
    create = next(r for r in fake_api.requests if r["method"] == "POST")
    assert create["content_type"].startswith("application/json")
    assert create["body"]["spec"]["predictor"]["containers"][0]["image"] == "reg/cityscale:v1"
    applied = json.loads(create["body"]["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])
    assert applied["spec"] == create["body"]["spec"]
    assert sum(r["method"] == "GET" for r in fake_api.requests) >= 3  # 404, then polls until Ready
    assert_rbac_respected(fake_api)


def test_patch_rolls_out_a_new_version_and_removes_dropped_fields(fake_api, kserve_client) -> None:
    deployer(kserve_client).deploy(isvc(transformer=True))
    assert "transformer" in spec_of(fake_api)
    fake_api.requests.clear()
    result = deployer(kserve_client).deploy(isvc(image="reg/cityscale:v2", model="0002"))
    assert (result.action, result.generation) == ("patched", 2)
    (patch,) = [r for r in fake_api.requests if r["method"] == "PATCH"]
    assert patch["content_type"] == "application/merge-patch+json"
    body = patch["body"]
    # Only what changed, and an explicit null for the transformer the new spec no longer has.
    assert body["spec"]["transformer"] is None
    assert body["spec"]["predictor"]["containers"][0]["image"] == "reg/cityscale:v2"
    assert "minReplicas" not in body["spec"]["predictor"]
    assert body["metadata"]["labels"] == {"cityscale.io/model-version": "0002"}
    spec = spec_of(fake_api)
    assert "transformer" not in spec
    assert spec["predictor"]["containers"][0]["command"][-1] == "0002"
    assert_rbac_respected(fake_api)


def test_unchanged_spec_sends_no_patch(fake_api, kserve_client) -> None:
    deployer(kserve_client).deploy(isvc())
    fake_api.requests.clear()
    assert deployer(kserve_client).deploy(isvc()).action == "unchanged"
    assert [r["method"] for r in fake_api.requests if r["method"] != "GET"] == []


@pytest.mark.parametrize(
    ("image", "pattern"), [("reg/broken:v2", "BlockedByFailedLoad"), ("reg/stuck:v2", "not Ready")]
)
def test_failed_rollout_rolls_back_to_the_previous_spec(fake_api, kserve_client, image, pattern) -> None:
    deployer(kserve_client).deploy(isvc(model="0001"))
    before = copy.deepcopy(spec_of(fake_api))
    fake_api.requests.clear()
    with pytest.raises(InferenceServiceError, match=f"{pattern}.*rolled back to the previous spec"):
        deployer(kserve_client, timeout_s=0.5).deploy(isvc(image=image, model="0002", max_replicas=5))
    patches = [r for r in fake_api.requests if r["method"] == "PATCH"]
    assert len(patches) == 2, "the rollout, then the rollback"
    assert all(p["content_type"] == "application/merge-patch+json" for p in patches)
    assert spec_of(fake_api) == before
    obj = fake_api.objects[("cityscale", "cityscale")]
    assert obj["metadata"]["generation"] == 3
    assert obj["metadata"]["labels"]["cityscale.io/model-version"] == "0001"
    assert json.loads(obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])["spec"] == before
    assert obj["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert_rbac_respected(fake_api)


def test_failed_create_has_nothing_to_roll_back(fake_api, kserve_client) -> None:
    with pytest.raises(InferenceServiceError, match="no previous spec to roll back to"):
        deployer(kserve_client).deploy(isvc(image="reg/broken:v1"))
    assert [r["method"] for r in fake_api.requests if r["method"] != "GET"] == ["POST"]


def test_mode_switch_is_refused_before_any_write(fake_api, kserve_client) -> None:
    deployer(kserve_client).deploy(isvc())
    fake_api.requests.clear()
    knative = isvc(deployment_mode="Knative", scale_metric="concurrency")
    with pytest.raises(InferenceServiceError, match="runs in Standard mode"):
        deployer(kserve_client).deploy(knative)
    assert {r["method"] for r in fake_api.requests} == {"GET"}


def test_other_namespace_is_forbidden(fake_api, kserve_client) -> None:
    with pytest.raises(InferenceServiceError, match="403"):
        deployer(kserve_client).deploy(isvc(namespace="default"))


def test_deploy_to_kserve_promotes_production_only_when_ready(
    fake_api, kserve_client, trained_workdir, tmp_path
) -> None:
    import shutil

    from serving.rollout import deploy_to_kserve

    registry_uri = str(tmp_path / "registry")
    shutil.copytree(Settings(workdir=trained_workdir).resolved_registry_uri, registry_uri)
    name = Settings().model_name
    registry.register(Path(registry.version_uri(registry_uri, name, "0001")), registry_uri, name, {}, "v2")
    settings = Settings(workdir=tmp_path, serving_ready_timeout_s=5, serving_ready_poll_s=0.02)

    uri = deploy_to_kserve("0002", registry_uri, settings, kserve_client, image="reg/cityscale:v2")
    assert uri == registry.version_uri(registry_uri, name, "0002")
    assert registry.get_alias(registry_uri, name, "production")["version"] == "0002"
    env = {e["name"]: e["value"] for e in spec_of(fake_api)["predictor"]["containers"][0]["env"]}
    assert env["CITYSCALE_REGISTRY_URI"] == registry_uri

    with pytest.raises(InferenceServiceError, match="rolled back"):
        deploy_to_kserve("0001", registry_uri, settings, kserve_client, image="reg/broken:v3")
    assert registry.get_alias(registry_uri, name, "production")["version"] == "0002"  # not moved


def test_dry_run_writes_manifests(tmp_path) -> None:
    from typer.testing import CliRunner

    from cityscale.cli.main import app

    args = ["deploy-serving", "--dry-run", "--version", "0003", "--out", str(tmp_path), "--transformer"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("*.yaml"))}
    assert sorted(docs) == ["inference-service-cpu.yaml", "inference-service-gpu.yaml", "inference-service.yaml"]
    gpu = docs["inference-service-gpu.yaml"]["spec"]["predictor"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "transformer" in docs["inference-service.yaml"]["spec"]


def test_component_kserve_target_uses_the_deployer(fake_api, kserve_client, trained_workdir, tmp_path, monkeypatch):
    """components/deploy.py's ``kserve`` target: same function, client from the (fake) kubeconfig."""
    import shutil

    import kserve

    from components.deploy import deploy

    registry_uri = str(tmp_path / "registry")
    shutil.copytree(Settings(workdir=trained_workdir).resolved_registry_uri, registry_uri)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(fake_api.kubeconfig(ALLOWED_NAMESPACE)))
    # kubernetes reads $KUBECONFIG once, at import: point its default location at the fake's kubeconfig.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setenv("CITYSCALE_SERVING_READY_POLL_S", "0.02")
    monkeypatch.setattr(kserve.api.kserve_client.utils, "is_running_in_k8s", lambda: False)
    uri = deploy.python_func(version="0001", registry_uri=registry_uri, target="kserve")
    assert uri.endswith("/versions/0001")
    assert spec_of(fake_api)["predictor"]["containers"][0]["command"][-1] == "0001"
    with pytest.raises(ValueError, match="not supported"):
        deploy.python_func(version="0001", registry_uri=registry_uri, target="moon")

"""The InferenceService builder: kserve SDK objects validated against the upstream CRD schema, plus the
mode rules the schema cannot express (KServe's webhook and controller: deploymentMode, scale metrics, canary, ports)."""

from __future__ import annotations

from typing import Any

import pytest

from cityscale.config import Settings
from serving.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    InferenceServiceError,
    ServingOptions,
    build_inference_service,
    merge_patch,
    to_manifest,
)
from tests.infra.infra_testlib import crd_openapi_schema


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = crd_openapi_schema("serving.kserve.io_inferenceservices.yaml", "v1beta1")  # KServe v0.20.0, vendored
    return jsonschema.Draft7Validator(schema)


def manifest(**overrides: Any) -> dict[str, Any]:
    return to_manifest(build_inference_service(ServingOptions.from_settings(Settings(), "0007", **overrides)))


VARIANTS = {
    "standard-cpu": {},
    "standard-gpu": {"gpus": 1},
    "standard-gpu-transformer": {"gpus": 2, "transformer": True},
    "knative-canary": {"deployment_mode": "Knative", "scale_metric": "concurrency", "canary_percent": 10},
    "knative-transformer-scale-to-zero": {
        "deployment_mode": "Knative",
        "scale_metric": "rps",
        "min_replicas": 0,
        "transformer": True,
    },
}


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_manifests_validate_against_the_crd(validator, overrides) -> None:
    doc = manifest(**overrides)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["namespace"] == "cityscale"


def test_standard_cpu_defaults() -> None:
    doc = manifest()
    assert doc["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == "Standard"
    predictor = doc["spec"]["predictor"]
    assert "transformer" not in doc["spec"]
    assert "canaryTrafficPercent" not in predictor
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)
    assert predictor["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert predictor["serviceAccountName"] == "cityscale-serving"
    (container,) = predictor["containers"]
    assert container["command"] == ["python", "-m", "serving", "--model", "0007"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", 8080), ("h2c", 8081)]
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "4Gi"},
        "requests": {"cpu": "1", "memory": "2Gi"},
    }
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}


def test_gpu_variant_with_transformer() -> None:
    doc = manifest(gpus=2, transformer=True)
    predictor, transformer = doc["spec"]["predictor"], doc["spec"]["transformer"]
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert predictor["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert predictor["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    # The transformer fetches features: CPU only, gRPC V2 to the predictor's h2c port, same model name.
    (container,) = transformer["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "nodeSelector" not in transformer
    command = container["command"]
    assert command[:3] == ["python", "-m", "serving.transformer"]
    assert command[command.index("--predictor_protocol") + 1] == "grpc-v2"
    assert command[command.index("--predictor_host") + 1] == "cityscale-predictor.cityscale.svc.cluster.local:8081"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CITYSCALE_MODEL_NAME"] == "cityscale"


def test_knative_mode_rules() -> None:
    doc = manifest(deployment_mode="Knative", scale_metric="concurrency", canary_percent=10, transformer=True)
    assert doc["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == "Knative"
    predictor = doc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert "deploymentStrategy" not in predictor  # a Deployment field: Knative manages revisions itself
    assert [p["name"] for p in predictor["containers"][0]["ports"]] == ["http1"]  # Knative: exactly one port
    command = doc["spec"]["transformer"]["containers"][0]["command"]
    assert command[command.index("--predictor_protocol") + 1] == "v2"


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"canary_percent": 20}, "canaryTrafficPercent only works in Knative"),
        ({"deployment_mode": "Serverless"}, "deploymentMode must be one of"),
        ({"scale_metric": "concurrency"}, "'concurrency' is not available in Standard"),
        ({"deployment_mode": "Knative", "scale_metric": "cpu"}, "'cpu' is not available in Knative"),
        ({"min_replicas": 0}, "scale to zero"),
        ({"min_replicas": 4, "max_replicas": 2}, "min_replicas <= max_replicas"),
        ({"deployment_mode": "Knative", "scale_metric": "rps", "canary_percent": 101}, "0-100"),
    ],
)
def test_rule_violations_are_refused_at_build_time(overrides, pattern) -> None:
    with pytest.raises(InferenceServiceError, match=pattern):
        manifest(**overrides)


def test_settings_drive_the_spec() -> None:
    settings = Settings(
        serving_min_replicas=2,
        serving_max_replicas=8,
        serving_scale_target=50,
        serving_gpus=1,
        registry_uri="gs://bucket/registry",
        feature_server_url="http://feast.cityscale:6566",
    )
    doc = to_manifest(
        build_inference_service(ServingOptions.from_settings(settings, "0002", image="reg/cityscale:abc"))
    )
    predictor = doc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleTarget"]) == (2, 8, 50)
    container = predictor["containers"][0]
    assert container["image"] == "reg/cityscale:abc"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CITYSCALE_REGISTRY_URI"] == "gs://bucket/registry"
    assert env["CITYSCALE_FEATURE_SERVER_URL"] == "http://feast.cityscale:6566"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_cpu_pods_run_the_serving_image_and_a_gpu_predictor_the_pipeline_image() -> None:
    """The slim serving image has CPU torch only (Dockerfile.serving); a GPU predictor needs the CUDA build."""
    settings = Settings(image="reg/cityscale:abc", serving_image="reg/cityscale-serving:abc")

    def images(gpus: int, image: str | None = None) -> dict[str, str]:
        options = ServingOptions.from_settings(settings, "0002", image, gpus=gpus, transformer=True)
        spec = to_manifest(build_inference_service(options))["spec"]
        return {c: spec[c]["containers"][0]["image"] for c in ("predictor", "transformer")}

    assert images(0) == {"predictor": "reg/cityscale-serving:abc", "transformer": "reg/cityscale-serving:abc"}
    assert images(1) == {"predictor": "reg/cityscale:abc", "transformer": "reg/cityscale-serving:abc"}
    explicit = "reg/custom:1"  # deploy-serving --image: that image everywhere
    assert images(0, explicit) == images(1, explicit) == {"predictor": explicit, "transformer": explicit}


def test_merge_patch_nulls_removed_fields_and_replaces_lists() -> None:
    old = {"spec": {"predictor": {"minReplicas": 1, "containers": [{"a": 1}]}, "transformer": {"x": 1}}}
    new = {"spec": {"predictor": {"minReplicas": 2, "containers": [{"a": 2}]}}}
    assert merge_patch(old, new) == {
        "spec": {"predictor": {"minReplicas": 2, "containers": [{"a": 2}]}, "transformer": None}
    }
    assert merge_patch(new, new) == {}

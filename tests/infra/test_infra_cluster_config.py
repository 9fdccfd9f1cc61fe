"""One source of cluster configuration: Terraform outputs -> the platform chart's ``cityscale-config`` ConfigMap
-> every compiled pipeline task's environment -> ``Settings()`` inside the pod."""

from __future__ import annotations

import pytest
import yaml
from infra_testlib import REPO, SAMPLE_TAG, find, fixture_values, load_docs

from cityscale.config import Settings
from pipelines.cluster import CONFIG_KEYS, CONFIG_MAP

COMPILED = sorted((REPO / "pipelines" / "compiled").glob("*.yaml"))
# Values that may be empty: the Tecton workspace in the default (Feast) environment.
MAY_BE_EMPTY = {"CITYSCALE_TECTON_URL", "CITYSCALE_TECTON_WORKSPACE"}


def config_map(rendered, env: str) -> dict[str, str]:
    (doc,) = find(load_docs(rendered / env / "cityscale-platform.yaml"), "ConfigMap", CONFIG_MAP)
    return doc["data"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_chart_renders_every_key_from_the_terraform_outputs(rendered, env: str) -> None:
    data = config_map(rendered, env)
    assert set(data) == set(CONFIG_KEYS)
    assert all(data[k] for k in set(CONFIG_KEYS) - MAY_BE_EMPTY), data
    tf = fixture_values(env)
    assert data["CITYSCALE_IMAGE"] == f"{tf['registry']}/cityscale:{SAMPLE_TAG}"  # immutable: the git SHA
    assert data["CITYSCALE_SERVING_IMAGE"] == f"{tf['registry']}/cityscale-serving:{SAMPLE_TAG}"  # same tag
    assert data["CITYSCALE_STORE_URI"] == f"gs://{tf['buckets']['raw']}"
    assert data["CITYSCALE_REGISTRY_URI"] == f"gs://{tf['buckets']['models']}"
    assert data["CITYSCALE_FEATURE_SERVER_URL"].startswith("http://feast-feature-server.")


def test_every_key_sets_its_settings_field_in_the_pod(rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod whose only configuration is the ConfigMap gets each value in the Settings field of that name."""
    import os

    for key in [k for k in os.environ if k.startswith("CITYSCALE_")]:
        monkeypatch.delenv(key)
    data = config_map(rendered, "dev")
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in data.items():
        field = key.removeprefix("CITYSCALE_").lower()
        assert field in Settings.model_fields, f"{key} names no Settings field"
        assert str(getattr(settings, field)) == value, key
    assert settings.image != Settings.model_fields["image"].default
    assert settings.serving_image != Settings.model_fields["serving_image"].default


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: p.stem)
def test_every_compiled_task_reads_the_config_map(path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    executors = set(spec["deploymentSpec"]["executors"])
    kubernetes = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    for name in executors:
        envs = [
            (ref.get("configMapName"), item["configMapKey"], item["envVar"])
            for ref in kubernetes.get(name, {}).get("configMapAsEnv", [])
            for item in ref.get("keyToEnv", [])
        ]
        assert {(CONFIG_MAP, k, k) for k in CONFIG_KEYS} <= set(envs), f"{path.name}: {name} lacks {CONFIG_MAP}"


def test_the_inference_service_containers_load_the_config_map() -> None:
    from serving.inference_service import ServingOptions, build_inference_service, to_manifest

    options = ServingOptions.from_settings(Settings(), "production", transformer=True)
    spec = to_manifest(build_inference_service(options))["spec"]
    for component in ("predictor", "transformer"):
        (container,) = spec[component]["containers"]
        assert {"configMapRef": {"name": CONFIG_MAP, "optional": True}} in container["envFrom"], component

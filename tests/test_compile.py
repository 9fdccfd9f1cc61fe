"""The compiled pipeline: strict protobuf parse, GPU settings, gate, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.compile import compile_all


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict, str]:
    out = tmp_path_factory.mktemp("compiled")
    (path,) = [p for p in compile_all(out) if p.name == "training.yaml"]
    text = path.read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return spec, platform, text


def test_pipeline_spec_parses_strictly(compiled) -> None:
    spec, platform, _ = compiled
    spec = dict(spec)
    deployment = spec.pop("deploymentSpec")
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(deployment, pipeline_spec_pb2.PipelineDeploymentConfig())
    platform_spec = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    for executor in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        json_format.ParseDict(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
    assert parsed.pipeline_info.name == "cityscale-training"
    assert "kubernetes" in platform_spec.platforms


def test_train_task_requests_a_gpu_on_the_gpu_pool(compiled) -> None:
    spec, platform, _ = compiled
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(train["resources"]["accelerator"]["resourceCount"]) >= 1
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["nodeSelector"]["labels"]["cloud.google.com/gke-accelerator"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]


def test_train_task_passes_its_gpu_placement_through_to_the_trainjob(compiled) -> None:
    """trainjob mode: the task's GPU request, node selector and tolerations go to the TrainJob, not the launcher."""
    spec, _, _ = compiled
    component = spec["components"]["comp-train"]
    passthroughs = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
    assert passthroughs == {
        "RESOURCES": False,
        "KUBERNETES_NODE_SELECTOR": False,
        "KUBERNETES_TOLERATIONS": False,
        "ENV": True,
    }
    assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    for param, pipeline_param in (("mode", "train_mode"), ("num_nodes", "train_num_nodes")):
        assert inputs[param]["componentInputParameter"] == pipeline_param
    assert spec["root"]["inputDefinitions"]["parameters"]["train_mode"]["defaultValue"] == "local"


def test_every_task_uses_the_project_image_and_installs_nothing(compiled) -> None:
    spec, _, _ = compiled
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == "cityscale:dev", name
        assert "pip install" not in " ".join(container["command"]), name


def test_register_and_deploy_are_gated_by_evaluate(compiled) -> None:
    spec, _, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert "evaluate" in str(tasks["condition-1"]["inputs"]) and "== true" in condition
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"register", "deploy"}
    assert tasks["ingest"]["cachingOptions"] == {} or not tasks["ingest"]["cachingOptions"].get("enableCache")


def test_every_task_and_parameter_is_described(compiled) -> None:
    spec, _, _ = compiled
    for name, component in spec["components"].items():
        if name.startswith("comp-condition"):
            continue
        for param, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
            assert definition.get("description"), f"{name}.{param} has no description"
    for name, task in spec["root"]["dag"]["tasks"].items():
        if not name.startswith("condition"):
            assert task["taskInfo"]["name"] != name, f"task {name} has no display name"


def test_compilation_is_deterministic_and_committed_yaml_is_current(tmp_path, compiled) -> None:
    _, _, text = compiled
    (again,) = [p for p in compile_all(tmp_path) if p.name == "training.yaml"]
    assert again.read_text() == text
    committed = Path(__file__).resolve().parents[1] / "pipelines" / "compiled" / "training.yaml"
    assert committed.read_text() == text, "pipelines/compiled/training.yaml is stale: run `make compile`"


def test_every_pipeline_is_compiled_and_committed(tmp_path) -> None:
    """Each pipeline in PIPELINES compiles to <key>.yaml, strictly parses and matches the committed file."""
    committed_dir = Path(__file__).resolve().parents[1] / "pipelines" / "compiled"
    for path in compile_all(tmp_path):
        spec = yaml.safe_load_all(path.read_text()).__next__()
        spec.pop("deploymentSpec")
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        committed = committed_dir / path.name
        assert committed.is_file() and committed.read_text() == path.read_text(), (
            f"{committed} is stale: run make compile"
        )


def test_ingestion_pipeline_reuses_the_ingest_component_uncached(tmp_path) -> None:
    (path,) = [p for p in compile_all(tmp_path) if p.name == "ingestion.yaml"]
    spec = next(yaml.safe_load_all(path.read_text()))
    assert spec["pipelineInfo"]["name"] == "cityscale-ingestion"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"ingest"}
    assert not tasks["ingest"].get("cachingOptions", {}).get("enableCache")
    assert spec["root"]["inputDefinitions"]["parameters"]["store_uri"].get("isOptional") is not True

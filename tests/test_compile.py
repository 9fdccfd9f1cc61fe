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


def by_display_name(spec: dict, name: str) -> tuple[str, dict]:
    """(component name, DAG task) of the task shown as ``name``, searched in every DAG of the pipeline."""
    dags = [spec["root"]["dag"], *(c["dag"] for c in spec["components"].values() if "dag" in c)]
    for dag in dags:
        for task in dag["tasks"].values():
            if task["taskInfo"]["name"] == name:
                return task["componentRef"]["name"], task
    raise KeyError(name)


def test_train_in_task_holds_the_gpu_and_its_requests(compiled) -> None:
    """train_mode=local on the cluster: the train pod itself gets CPU/memory requests, a GPU and the GPU pool."""
    spec, platform, _ = compiled
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(resources["accelerator"]["resourceCount"]) >= 1
    assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"]
    assert resources["resourceCpuLimit"] and resources["resourceMemoryLimit"]
    assert "taskConfigPassthroughs" not in spec["components"]["comp-train"]  # applied to the pod, not passed on
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in ("exec-train", "exec-train-on-trainjob"):
        assert k8s[executor]["nodeSelector"]["labels"]["cloud.google.com/gke-accelerator"], executor
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[executor]["tolerations"]


def test_trainjob_task_passes_its_gpu_placement_through_to_the_trainjob(compiled) -> None:
    """trainjob mode: the task's GPU request, node selector and tolerations go to the TrainJob, not the launcher."""
    spec, _, _ = compiled
    component = spec["components"]["comp-train-on-trainjob"]
    passthroughs = {p["field"]: p.get("applyToTask", False) for p in component["taskConfigPassthroughs"]}
    assert passthroughs == {
        "RESOURCES": False,
        "KUBERNETES_NODE_SELECTOR": False,
        "KUBERNETES_TOLERATIONS": False,
        "ENV": True,
    }
    assert component["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    resources = spec["deploymentSpec"]["executors"]["exec-train-on-trainjob"]["container"]["resources"]
    assert int(resources["accelerator"]["resourceCount"]) >= 1  # handed to the TrainJob's nodes
    assert spec["root"]["inputDefinitions"]["parameters"]["train_mode"]["defaultValue"] == "local"


def test_train_mode_picks_exactly_one_branch_and_each_gates_its_own_model(compiled) -> None:
    spec, _, _ = compiled
    in_task_component, in_task = by_display_name(spec, "train-in-task")
    trainjob_component, on_trainjob = by_display_name(spec, "train-on-trainjob")
    assert (
        in_task["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--train_mode'] != 'trainjob'"
    )
    assert on_trainjob["triggerPolicy"]["condition"] == f"!({in_task['triggerPolicy']['condition']})"
    for component, trainer in ((in_task_component, "train"), (trainjob_component, "train-on-trainjob")):
        tasks = spec["components"][component]["dag"]["tasks"]
        assert tasks[trainer]["componentRef"]["name"] == f"comp-{trainer}"
        (gate,) = [t for t in tasks.values() if t["taskInfo"]["name"] == "Gate and deploy"]
        assert gate["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == trainer


def test_every_task_uses_the_project_image_and_installs_nothing(compiled) -> None:
    spec, _, _ = compiled
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == "cityscale:dev", name
        assert "pip install" not in " ".join(container["command"]), name


def test_register_and_deploy_are_gated_by_evaluate(compiled) -> None:
    spec, _, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    for sub_pipeline in ("comp-cityscale-gate-and-deploy", "comp-cityscale-gate-and-deploy-2"):
        (gate,) = [t for t in spec["components"][sub_pipeline]["dag"]["tasks"].values() if "triggerPolicy" in t]
        assert gate["taskInfo"]["name"] == "model-beats-baselines"
        assert "evaluate" in str(gate["inputs"]) and "== true" in gate["triggerPolicy"]["condition"]
        inner = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
        assert {t["componentRef"]["name"].removesuffix("-2") for t in inner.values()} == {
            "comp-register",
            "comp-deploy",
        }
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

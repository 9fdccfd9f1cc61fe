"""The kfp SDK that compiles the pipelines and the KFP backend that helmfile installs agree.

Three sources are tied together here:

- the SDK version: the installed ``kfp`` (and ``kfp-kubernetes``, ``kfp-pipeline-spec``), the pins in
  ``pyproject.toml`` and both locks, and the ``sdkVersion`` the compiled YAML records;
- the backend version: the ``?ref=`` of the Kubeflow Pipelines kustomize overlays that
  ``helmfile.d/10-kubeflow-pipelines.yaml`` installs;
- ``IR_FIELD_MIN_BACKEND``: every IR field (and enum value) the compiled YAML may use, with the first KFP
  backend release known to understand it.

The compiled YAML is walked field by field against the SDK's own protobuf descriptors. The pin fails if it is
older than any field used, and an IR field missing from the table fails too: a future SDK upgrade that makes
the compiler emit something new forces someone to look up which backend understands it. Why this matters: KFP
backends since 2.5.0 ignore IR fields they do not know (#11662), so a mismatch would not fail loudly.

How the minimum versions were established (offline, December 2026):

- Each field's first appearance in the protos: the ``kfp-pipeline-spec`` and ``kfp-kubernetes`` wheels 2.14.3,
  2.15.0, 2.16.0, 2.17.0 from PyPI compared with the installed 2.17.3 (``pipeline_spec_pb2`` /
  ``kubernetes_executor_config_pb2`` descriptors). SDK, protos and backend are released from one tag
  (``docs/release/versioning-policy.md`` upstream), and the proto changes below came with "sdk/backend" PRs.
- The backend changelog of kubeflow/pipelines (``CHANGELOG.md``, releases 2.1.0 to 2.14.3; 2.15.0 dated
  2025-11-21).
- A version in the table is the earliest release for which such evidence was found: an upper bound of the true
  minimum for the old fields. Not established offline: the backend Go code at tag 2.15.0 itself (the TaskConfig
  passthrough minimum rests on the protos and PR #12185 touching SDK and backend together), which is why the pin
  follows the SDK's release line (``test_the_backend_is_not_older_than_the_sdk_release_line``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

REPO = Path(__file__).resolve().parents[1]
COMPILED = sorted((REPO / "pipelines" / "compiled").glob("*.yaml"))
HELMFILE = REPO / "helmfile.d" / "10-kubeflow-pipelines.yaml"
OVERLAYS = sorted((REPO / "helmfile.d" / "kustomize" / "kubeflow-pipelines").glob("*/kustomization.yaml"))
KFP_MANIFESTS = "github.com/kubeflow/pipelines//manifests/kustomize/"

# Sources, quoted in the comments below:
#   [GA]     KFP 2.0.0: the v2 IR (schemaVersion 2.1.0), docstring descriptions (#9156), cpu/memory requests
#            (#9121), pipeline description (#9153), platform specs via extension libraries (#8940); SDK RELEASE.md.
#   [2.1.0]  backend CHANGELOG 2.1.0: "kfp backend and kubernetes sdk to support tolerations" (#10471), "ConfigMaps
#            as volumes and as env variables" (#10483); the earliest release found that lists Kubernetes platform
#            config (node selectors shipped with kfp-kubernetes 1.0 beside KFP 2.0.x).
#   [2.4.0]  backend CHANGELOG 2.4.0: "sdk/backend: Add support for placeholders in resource limits" (#11501),
#            which added the string resource fields (resourceCpuLimit, accelerator resourceType/resourceCount).
#   [2.5.0]  backend CHANGELOG 2.5.0: "backend/sdk: Add input parameterization for various k8s resources" (#11770,
#            SDK side #11621): configMapNameParameter.
#   [2.14.0] backend CHANGELOG 2.14.0: "support for optional input parameters in nested pipelines" (#11980; the
#            monitoring pipeline nests the training pipeline with optional inputs) and "parameterize retryStrategy
#            input in Argo workflow" (#11861, the backoff fields; task retries first honoured on Argo in 2.5.0,
#            #11673).
#   [2.15.0] first in the 2.15.0 protos (absent from 2.14.3): ComponentSpec.task_config_passthroughs,
#            TaskConfigPassthrough, ParameterType TASK_CONFIG (PR #12185 "feat(sdk/backend): Support forwarding task
#            configuration to external workloads"), kfp-kubernetes ConfigMapAsEnv.optional.
IR_FIELD_MIN_BACKEND: dict[str, str] = {
    # --- PipelineSpec: the pipeline, its components and DAGs [GA]
    "PipelineSpec.components": "2.0.0",
    "PipelineSpec.deploymentSpec": "2.0.0",
    "PipelineSpec.pipelineInfo": "2.0.0",
    "PipelineSpec.root": "2.0.0",
    "PipelineSpec.schemaVersion": "2.0.0",
    "PipelineSpec.sdkVersion": "2.0.0",
    "PipelineInfo.name": "2.0.0",
    "PipelineInfo.description": "2.0.0",
    "ComponentSpec.dag": "2.0.0",
    "ComponentSpec.executorLabel": "2.0.0",
    "ComponentSpec.inputDefinitions": "2.0.0",
    "ComponentSpec.outputDefinitions": "2.0.0",
    "ComponentInputsSpec.artifacts": "2.0.0",
    "ComponentInputsSpec.parameters": "2.0.0",
    "ComponentInputsSpec.ArtifactSpec.artifactType": "2.0.0",
    "ComponentInputsSpec.ArtifactSpec.description": "2.0.0",
    "ComponentInputsSpec.ParameterSpec.defaultValue": "2.0.0",
    "ComponentInputsSpec.ParameterSpec.description": "2.0.0",
    "ComponentInputsSpec.ParameterSpec.parameterType": "2.0.0",
    "ComponentInputsSpec.ParameterSpec.isOptional": "2.14.0",  # [2.14.0] optional inputs of a nested pipeline
    "ComponentOutputsSpec.artifacts": "2.0.0",
    "ComponentOutputsSpec.parameters": "2.0.0",
    "ComponentOutputsSpec.ArtifactSpec.artifactType": "2.0.0",
    "ComponentOutputsSpec.ParameterSpec.parameterType": "2.0.0",
    "ArtifactTypeSchema.schemaTitle": "2.0.0",
    "ArtifactTypeSchema.schemaVersion": "2.0.0",
    "ParameterType.ParameterTypeEnum.BOOLEAN": "2.0.0",
    "ParameterType.ParameterTypeEnum.NUMBER_DOUBLE": "2.0.0",
    "ParameterType.ParameterTypeEnum.NUMBER_INTEGER": "2.0.0",
    "ParameterType.ParameterTypeEnum.STRING": "2.0.0",
    "DagSpec.tasks": "2.0.0",
    "ComponentRef.name": "2.0.0",
    "PipelineTaskInfo.name": "2.0.0",
    "PipelineTaskSpec.cachingOptions": "2.0.0",
    "PipelineTaskSpec.CachingOptions.enableCache": "2.0.0",
    "PipelineTaskSpec.componentRef": "2.0.0",
    "PipelineTaskSpec.dependentTasks": "2.0.0",
    "PipelineTaskSpec.inputs": "2.0.0",
    "PipelineTaskSpec.taskInfo": "2.0.0",
    "PipelineTaskSpec.triggerPolicy": "2.0.0",
    "PipelineTaskSpec.TriggerPolicy.condition": "2.0.0",
    "TaskInputsSpec.artifacts": "2.0.0",
    "TaskInputsSpec.parameters": "2.0.0",
    "TaskInputsSpec.InputArtifactSpec.componentInputArtifact": "2.0.0",
    "TaskInputsSpec.InputArtifactSpec.taskOutputArtifact": "2.0.0",
    "TaskInputsSpec.InputArtifactSpec.TaskOutputArtifactSpec.outputArtifactKey": "2.0.0",
    "TaskInputsSpec.InputArtifactSpec.TaskOutputArtifactSpec.producerTask": "2.0.0",
    "TaskInputsSpec.InputParameterSpec.componentInputParameter": "2.0.0",
    "TaskInputsSpec.InputParameterSpec.runtimeValue": "2.0.0",
    "TaskInputsSpec.InputParameterSpec.taskOutputParameter": "2.0.0",
    "TaskInputsSpec.InputParameterSpec.TaskOutputParameterSpec.outputParameterKey": "2.0.0",
    "TaskInputsSpec.InputParameterSpec.TaskOutputParameterSpec.producerTask": "2.0.0",
    "ValueOrRuntimeParameter.constant": "2.0.0",
    # --- task retries (set_retry): ingest and features [2.14.0]
    "PipelineTaskSpec.retryPolicy": "2.14.0",
    "PipelineTaskSpec.RetryPolicy.maxRetryCount": "2.14.0",
    "PipelineTaskSpec.RetryPolicy.backoffDuration": "2.14.0",
    "PipelineTaskSpec.RetryPolicy.backoffFactor": "2.14.0",
    "PipelineTaskSpec.RetryPolicy.backoffMaxDuration": "2.14.0",
    # --- TaskConfig passthrough: comp-train-on-trainjob hands its GPU placement to the TrainJob [2.15.0]
    "ComponentSpec.taskConfigPassthroughs": "2.15.0",
    "TaskConfigPassthrough.field": "2.15.0",
    "TaskConfigPassthrough.applyToTask": "2.15.0",
    "TaskConfigPassthroughType.TaskConfigPassthroughTypeEnum.RESOURCES": "2.15.0",
    "TaskConfigPassthroughType.TaskConfigPassthroughTypeEnum.ENV": "2.15.0",
    "TaskConfigPassthroughType.TaskConfigPassthroughTypeEnum.KUBERNETES_NODE_SELECTOR": "2.15.0",
    "TaskConfigPassthroughType.TaskConfigPassthroughTypeEnum.KUBERNETES_TOLERATIONS": "2.15.0",
    "ParameterType.ParameterTypeEnum.TASK_CONFIG": "2.15.0",
    # --- PipelineDeploymentConfig: executors and their containers [GA]
    "PipelineDeploymentConfig.executors": "2.0.0",
    "PipelineDeploymentConfig.ExecutorSpec.container": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.args": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.command": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.image": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.resources": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.accelerator": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.cpuLimit": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.cpuRequest": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.memoryLimit": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.memoryRequest": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.AcceleratorConfig.count": "2.0.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.AcceleratorConfig.type": "2.0.0",
    # string resources (the SDK writes both forms so older backends still read the numbers) [2.4.0]
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.resourceCpuLimit": "2.4.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.resourceCpuRequest": "2.4.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.resourceMemoryLimit": "2.4.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.resourceMemoryRequest": "2.4.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.AcceleratorConfig.resourceCount": "2.4.0",
    "PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec.AcceleratorConfig.resourceType": "2.4.0",
    # --- PlatformSpec (second YAML document) and kfp-kubernetes executor config
    "PlatformSpec.platforms": "2.0.0",  # [GA]
    "SinglePlatformSpec.deploymentSpec": "2.0.0",  # [GA]
    "PlatformDeploymentConfig.executors": "2.0.0",  # [GA]
    "KubernetesExecutorConfig.nodeSelector": "2.1.0",  # [2.1.0]
    "NodeSelector.labels": "2.1.0",  # [2.1.0]
    "KubernetesExecutorConfig.tolerations": "2.1.0",  # [2.1.0] #10471
    "Toleration.key": "2.1.0",
    "Toleration.operator": "2.1.0",
    "Toleration.effect": "2.1.0",
    "KubernetesExecutorConfig.configMapAsEnv": "2.1.0",  # [2.1.0] #10483: the cityscale-config ConfigMap
    "ConfigMapAsEnv.configMapName": "2.1.0",
    "ConfigMapAsEnv.keyToEnv": "2.1.0",
    "ConfigMapAsEnv.ConfigMapKeyToEnvMap.configMapKey": "2.1.0",
    "ConfigMapAsEnv.ConfigMapKeyToEnvMap.envVar": "2.1.0",
    "ConfigMapAsEnv.configMapNameParameter": "2.5.0",  # [2.5.0] #11770
    "ConfigMapAsEnv.optional": "2.15.0",  # [2.15.0] kfp-kubernetes proto
}


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# --- The SDK and backend versions -------------------------------------------------------------------------------


def pinned(text: str, package: str) -> set[str]:
    """The versions ``package==X`` pins in a requirements/lock text or dependency list."""
    return set(re.findall(rf"^\s*\"?{re.escape(package)}==([0-9.]+)", text, re.MULTILINE))


def sdk_versions() -> dict[str, set[str]]:
    """Every place that states the kfp SDK version, by where it is stated."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dependencies = "\n".join(pyproject["project"]["dependencies"])
    found = {
        "installed kfp": {version("kfp")},
        "installed kfp-kubernetes": {version("kfp-kubernetes")},
        "installed kfp-pipeline-spec": {version("kfp-pipeline-spec")},
        "pyproject.toml kfp": pinned(dependencies, "kfp"),
        "pyproject.toml kfp-kubernetes": pinned(dependencies, "kfp-kubernetes"),
    }
    for lock in ("requirements/dev.lock", "requirements/app.lock"):
        text = (REPO / lock).read_text()
        for package in ("kfp", "kfp-kubernetes", "kfp-pipeline-spec", "kfp-server-api"):
            found[f"{lock} {package}"] = pinned(text, package)
    for path in COMPILED:
        spec = next(yaml.safe_load_all(path.read_text()))
        found[f"{path.name} sdkVersion"] = {spec["sdkVersion"].removeprefix("kfp-")}
    return found


def backend_refs() -> dict[str, set[str]]:
    """The KFP release each kustomize overlay pulls its manifests from (``?ref=``), by overlay."""
    refs = {}
    for path in OVERLAYS:
        resources = yaml.safe_load(path.read_text())["resources"]
        refs[str(path.relative_to(REPO))] = {r.split("?ref=")[1] for r in resources if KFP_MANIFESTS in r}
    return refs


def backend_version() -> str:
    (only,) = set().union(*backend_refs().values())
    return only


# --- The IR fields the compiled YAML uses -----------------------------------------------------------------------


def _short(full_name: str) -> str:
    """``ml_pipelines.PipelineTaskSpec.RetryPolicy`` -> ``PipelineTaskSpec.RetryPolicy`` (the table's names)."""
    return full_name.split(".", 1)[1]


def _opaque(descriptor: Descriptor | None) -> bool:
    """Scalars and well-known types (Struct, Value, Duration): nothing inside them is an IR field."""
    return descriptor is None or descriptor.full_name.startswith("google.protobuf.")


def _walk(data: dict[str, Any], descriptor: Descriptor, used: set[str]) -> None:
    """Add every field (and enum value) present in ``data`` to ``used``, as it appears in the YAML text.

    The YAML is walked, not the parsed message: a field set to its default (``optional: false``) is still a
    field the backend must understand, and proto3 parsing would drop it.
    """
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    for key, value in data.items():
        field = fields[key]  # the strict parse before the walk guarantees the key is known
        used.add(f"{_short(descriptor.full_name)}.{field.json_name}")
        if field.enum_type is not None:
            for item in value if isinstance(value, list) else [value]:
                name = item if isinstance(item, str) else field.enum_type.values_by_number[item].name
                used.add(f"{_short(field.enum_type.full_name)}.{name}")
        message = field.message_type
        if _opaque(message):
            continue
        if message.GetOptions().map_entry:
            value_type = message.fields_by_name["value"].message_type
            if not _opaque(value_type):
                for item in value.values():
                    _walk(item, value_type, used)
        elif isinstance(value, list):
            for item in value:
                _walk(item, message, used)
        else:
            _walk(value, message, used)


def ir_fields(path: Path) -> set[str]:
    """The IR fields one compiled pipeline uses: PipelineSpec, its deploymentSpec, the platform document."""
    spec, *platforms = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    spec = dict(spec)
    deployment = spec.pop("deploymentSpec", {})
    used = {"PipelineSpec.deploymentSpec"} if deployment else set()
    # Strict parses first (an unknown key is an error), then the walk of what the text holds.
    for data, message in (
        (spec, pipeline_spec_pb2.PipelineSpec),
        (deployment, pipeline_spec_pb2.PipelineDeploymentConfig),
        *((platform, pipeline_spec_pb2.PlatformSpec) for platform in platforms),
    ):
        json_format.ParseDict(data, message())
        _walk(data, message.DESCRIPTOR, used)
    for platform in platforms:
        for single in platform.get("platforms", {}).values():
            for executor in single.get("deploymentSpec", {}).get("executors", {}).values():
                json_format.ParseDict(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
                _walk(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig.DESCRIPTOR, used)
    return used


def used_ir_fields(paths: Iterable[Path]) -> dict[str, list[str]]:
    """IR field -> the compiled files that use it."""
    used: dict[str, list[str]] = {}
    for path in paths:
        for name in ir_fields(path):
            used.setdefault(name, []).append(path.name)
    return used


def compatibility_problems(backend: str, used: dict[str, list[str]], table: dict[str, str]) -> list[str]:
    """Why ``backend`` may not run IR that uses ``used`` (empty: it can)."""
    problems = []
    for name, files in sorted(used.items()):
        if name not in table:
            problems.append(
                f"{name} (in {', '.join(files)}) is not in IR_FIELD_MIN_BACKEND: find the first KFP backend release "
                "that understands it (KFP CHANGELOG, the protos of kfp-pipeline-spec/kfp-kubernetes) and add it"
            )
        elif parse_version(backend) < parse_version(table[name]):
            problems.append(
                f"{name} (in {', '.join(files)}) needs KFP backend >= {table[name]}, helmfile pins {backend}: raise "
                "the ?ref= of helmfile.d/kustomize/kubeflow-pipelines/*/kustomization.yaml"
            )
    return problems


@pytest.fixture(scope="module")
def used() -> dict[str, list[str]]:
    return used_ir_fields(COMPILED)


# --- Tests ------------------------------------------------------------------------------------------------------


def test_every_place_states_the_same_sdk_version() -> None:
    versions = sdk_versions()
    assert all(len(v) == 1 for v in versions.values()), {k: v for k, v in versions.items() if len(v) != 1}
    assert len(set().union(*versions.values())) == 1, versions


def test_helmfile_installs_one_kfp_release() -> None:
    refs = backend_refs()
    assert len(refs) == 2 and all(refs.values()), refs  # cluster-scoped and platform, both from kubeflow/pipelines
    assert len(set().union(*refs.values())) == 1, refs
    pin = backend_version()
    for path in (HELMFILE, *OVERLAYS):
        text = path.read_text()
        stated = set(re.findall(r"(?:KFP|Kubeflow Pipelines standalone) (\d+\.\d+\.\d+)", text))
        assert stated == {pin}, f"{path.relative_to(REPO)} says KFP {stated}, its overlays pull {pin}"


def test_the_backend_understands_every_ir_field_the_compiled_pipelines_use(used) -> None:
    assert COMPILED and "ComponentSpec.taskConfigPassthroughs" in used  # the walk sees the newest field
    assert compatibility_problems(backend_version(), used, IR_FIELD_MIN_BACKEND) == []


def test_the_backend_is_not_older_than_the_sdk_release_line() -> None:
    """The pin follows the SDK's major.minor: the SDK's own release is what upstream tests the IR against."""
    (sdk,) = set().union(*sdk_versions().values())
    backend = backend_version()
    assert parse_version(backend)[:2] >= parse_version(sdk)[:2], f"kfp SDK {sdk} compiles the IR, backend is {backend}"


def test_every_table_entry_names_a_real_field() -> None:
    """A typo in the table would let a real field look unknown, or a stale entry linger unnoticed."""
    known: set[str] = set()
    for module in (pipeline_spec_pb2, kubernetes_executor_config_pb2):
        stack = list(module.DESCRIPTOR.message_types_by_name.values())
        while stack:
            message = stack.pop()
            stack += message.nested_types
            known |= {f"{_short(message.full_name)}.{f.json_name}" for f in message.fields}
            for enum in message.enum_types:
                known |= {f"{_short(enum.full_name)}.{v.name}" for v in enum.values}
    assert set(IR_FIELD_MIN_BACKEND) - known == set()
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in IR_FIELD_MIN_BACKEND.values())


def test_an_older_backend_fails_the_check(used) -> None:
    """2.14.3 (the last release before TaskConfig passthrough) must be refused, naming what it lacks."""
    problems = compatibility_problems("2.14.3", used, IR_FIELD_MIN_BACKEND)
    assert problems and all("needs KFP backend >= 2.15.0" in p for p in problems)
    passthrough = "ComponentSpec.taskConfigPassthroughs (in monitoring.yaml, training.yaml) "
    assert any(p.startswith(passthrough) for p in problems)
    assert any(p.startswith("ConfigMapAsEnv.optional ") for p in problems)
    assert len(compatibility_problems("2.4.1", used, IR_FIELD_MIN_BACKEND)) > len(problems)  # more, the older


def test_an_ir_field_missing_from_the_table_fails_the_check(used) -> None:
    table = dict(IR_FIELD_MIN_BACKEND)
    del table["PipelineTaskSpec.RetryPolicy.backoffFactor"]
    (problem,) = compatibility_problems(backend_version(), used, table)
    assert problem.startswith("PipelineTaskSpec.RetryPolicy.backoffFactor ")
    assert "not in IR_FIELD_MIN_BACKEND" in problem


def test_the_walk_sees_fields_set_to_their_default(tmp_path) -> None:
    """``optional: false`` on configMapAsEnv is a default value: still a field the backend has to know."""
    (training,) = [p for p in COMPILED if p.name == "training.yaml"]
    assert "optional: false" in training.read_text()
    assert "ConfigMapAsEnv.optional" in ir_fields(training)

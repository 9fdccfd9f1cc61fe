"""The train step's TrainJob mode against ``FakeTrainerApi``, a loopback stand-in for the Kubernetes API server.

There is no Kubernetes API server here. ``FakeTrainerApi`` answers the routes the ``kubeflow`` SDK (0.5.0) and
the launcher use (ClusterTrainingRuntimes, TrainJobs, pods, pod logs, events) and enforces the pipeline runner's
RBAC as written in ``helmfile.d/charts/cityscale-platform/templates/rbac.yaml``: any other verb, resource or
namespace is answered 403 and recorded. Its "controller" either really runs the command the TrainJob asks for
(``torchrun --module cityscale.training.train ...`` on CPU, one node, env from the TrainJob) and reports its outcome
and log, or plays back a scripted status sequence (a failure with reasons, a job that never finishes).
The created TrainJob and the runtime it references are validated against the upstream CRDs vendored in
``tests/infra/schemas/`` (Kubeflow Trainer v2.3.0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import jsonschema
import pytest
import yaml

from cityscale.config import TRAINING_FIELDS, Settings
from cityscale.model.contract import ModelContract
from cityscale.training import trainjob
from tests.conftest import sample_examples
from tests.fake_trainer_api import GROUP, NAMESPACE, ROOT, TORCH_DISTRIBUTED, FakeTrainerApi, forbidden
from tests.infra.infra_testlib import crd_openapi_schema


def crd_schema(file: str) -> dict[str, Any]:
    return crd_openapi_schema(file, "v1alpha1")


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def examples_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two sensors of the bundled sample, Jan-Apr 2022, daily origins: a real, small Dataset (as a file:// URI)."""
    work = tmp_path_factory.mktemp("trainjob")
    settings = Settings(workdir=work)
    examples = sample_examples(settings, "2022-01-01", "2022-05-01", 12, n_sensors=4)
    path = work / "examples.npz"
    examples.save(path)
    return f"file://{path}"


def cpu_request(examples_uri: str, output_uri: str, name: str = "cityscale-train-test") -> trainjob.TrainJobRequest:
    settings = Settings(hidden_size=32, batch_size=128, max_epochs=1)
    return trainjob.request_from_settings(
        settings,
        name=name,
        examples_uri=examples_uri,
        output_uri=output_uri,
        num_nodes=1,
        gpus_per_node=0,
    )


def gpu_request(settings: Settings | None = None, **overrides: Any) -> trainjob.TrainJobRequest:
    kwargs: dict[str, Any] = dict(
        name="cityscale-train-gpu",
        examples_uri="gs://bucket/run/features/examples",
        output_uri="gs://bucket/run/train/model-trainjob",
        num_nodes=4,
        gpus_per_node=2,
    )
    kwargs.update(overrides)
    settings = (settings or Settings()).model_copy(update={"gpu_node_type": "nvidia-h100-80gb"})
    return trainjob.request_from_settings(settings, **kwargs)


def submitted(api: FakeTrainerApi) -> dict[str, Any]:
    (post,) = [r for r in api.requests if r["method"] == "POST"]
    return post["body"]


# --- rendering and schemas --------------------------------------------------------------------
def test_runtime_fixture_matches_the_cluster_training_runtime_schema() -> None:
    jsonschema.validate(TORCH_DISTRIBUTED, crd_schema("trainer.kubeflow.org_clustertrainingruntimes.yaml"))


def test_gpu_trainjob_rendered_by_the_sdk_matches_the_schema() -> None:
    """4 nodes x 2 GPUs: the SDK's TrainJob carries nodes, GPUs, the entry point's cluster flags, placement."""
    with FakeTrainerApi(scenario="stuck") as api:
        name = api.client().train(**trainjob.sdk_arguments(gpu_request()))
        job = submitted(api)
    assert name == "cityscale-train-gpu"
    jsonschema.validate(job, crd_schema("trainer.kubeflow.org_trainjobs.yaml"))
    spec = job["spec"]
    assert spec["runtimeRef"] == {"kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4 and trainer["command"] == ["torchrun"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] in (2, "2")
    args = trainer["args"]
    flags = dict(zip(args[3::2], args[4::2], strict=False))
    assert args[:3] == ["--nproc-per-node=2", "--module", "cityscale.training.train"]
    assert flags["--accelerator"] == "gpu" and flags["--devices"] == "2" and flags["--num-nodes"] == "4"
    assert flags["--precision"] == "bf16-mixed" and flags["--strategy"] == "ddp"
    assert flags["--examples"] == "gs://bucket/run/features/examples"
    assert flags["--out"] == "gs://bucket/run/train/model-trainjob/model"
    assert flags["--ckpt-dir"] == "gs://bucket/run/train/model-trainjob/checkpoints"
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["CITYSCALE_SEED"] == "42" and env["CITYSCALE_BATCH_SIZE"] == "512"
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["serviceAccountName"] == "cityscale-trainer"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["activeDeadlineSeconds"] == Settings().trainjob_timeout_s


def test_task_config_passthrough_overrides_placement_and_resources() -> None:
    """What KFP passes through from the task (dsl.TaskConfig) wins over the settings' defaults."""
    from kfp import dsl

    config = dsl.TaskConfig(
        resources={"limits": {"cpu": "12", "memory": "48G", "nvidia.com/gpu": "1"}},
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "train"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "train", "effect": "NoSchedule"}],
        env=[{"name": "CITYSCALE_SEED", "value": "7"}],
    )
    request = gpu_request(task_config=config)
    assert request.resources_per_node == {"cpu": "12", "memory": "48G", "gpu": 2}
    assert request.node_selector["pool"] == "train" and request.tolerations[0]["key"] == "dedicated"
    assert request.env["CITYSCALE_SEED"] == "7"


# A valid value other than the default for every field training reads (test_training_settings.py checks the list).
NON_DEFAULT_TRAINING: dict[str, Any] = {
    "seed": 7,
    "max_epochs": 3,
    "batch_size": 96,
    "learning_rate": 0.0123,
    "hidden_size": 48,
    "dropout": 0.25,
    "volume_weighted_loss": True,
    "quantiles": (0.05, 0.5, 0.95),
    "model_members": ("mlp",),
    "gbm_rounds": 17,
    "gbm_num_leaves": 15,
    "gbm_learning_rate": 0.07,
    "gbm_steps_per_example": 5,
    "gbm_band_steps_per_example": 3,
    "gbm_early_stopping_rounds": 7,
    "gbm_volume_weighted": False,
    "gbm_max_bin": 127,
    "gbm_bagging_fraction": 0.8,
    "gbm_feature_fraction": 0.6,
    "validation_days": 9,
    "calibrate_band": False,
}


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings()`` as a pod builds it: no CITYSCALE_* variable of this process, only the job's env."""
    for var in list(os.environ):
        if var.upper().startswith("CITYSCALE_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return Settings()


def non_default_request() -> tuple[Settings, trainjob.TrainJobRequest]:
    assert set(NON_DEFAULT_TRAINING) == set(TRAINING_FIELDS), "give every training field a non-default value here"
    settings = Settings(**NON_DEFAULT_TRAINING)
    assert all(getattr(settings, f) != Settings.model_fields[f].default for f in TRAINING_FIELDS)
    return settings, gpu_request(settings=settings)


def test_every_training_setting_reaches_the_pod_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's settings -> the request's env -> ``Settings()`` in the pod: equal on every training field."""
    settings, request = non_default_request()
    assert {f"CITYSCALE_{f.upper()}" for f in TRAINING_FIELDS} <= set(request.env)
    pod = settings_from_env(request.env, monkeypatch)
    assert {f: getattr(pod, f) for f in TRAINING_FIELDS} == {f: getattr(settings, f) for f in TRAINING_FIELDS}


def test_the_submitted_trainjob_carries_every_training_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TrainJob the SDK sends to the API server: its trainer env holds each training field, parseable back."""
    settings, request = non_default_request()
    with FakeTrainerApi(scenario="stuck") as api:
        api.client().train(**trainjob.sdk_arguments(request))
        job = submitted(api)
    env = {e["name"]: e["value"] for e in job["spec"]["trainer"]["env"]}
    for field_name in TRAINING_FIELDS:
        var = f"CITYSCALE_{field_name.upper()}"
        assert var in env and env[var] == request.env.get(var), var
    assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    pod = settings_from_env(env, monkeypatch)
    assert {f: getattr(pod, f) for f in TRAINING_FIELDS} == {f: getattr(settings, f) for f in TRAINING_FIELDS}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"num_nodes": 0}, "num_nodes"), ({"gpus_per_node": -1}, "gpus_per_node"), ({"name": "Bad_Name"}, "DNS")],
)
def test_bad_requests_are_refused_before_anything_is_sent(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gpu_request(**overrides)


# --- the launcher -----------------------------------------------------------------------------
def test_launcher_runs_the_job_command_streams_its_log_and_returns_the_model(examples_uri: str, tmp_path) -> None:
    """The fake runs the TrainJob's own torchrun command; the launcher follows its log and finds the model."""
    lines: list[str] = []
    output_uri = f"file://{tmp_path}/train-output"
    with FakeTrainerApi(scenario="run") as api:
        launcher = trainjob.TrainJobLauncher(api.client(), timeout_s=180, poll_s=1, log_line=lines.append)
        model_uri = launcher.run(cpu_request(examples_uri, output_uri))
        assert not forbidden(api), api.forbidden
        assert api.procs["cityscale-train-test"]["proc"].returncode == 0
    jsonschema.validate(submitted(api), crd_schema("trainer.kubeflow.org_trainjobs.yaml"))
    assert model_uri == f"{output_uri}/model"
    contract = ModelContract.load(tmp_path / "train-output" / "model")
    assert contract.hidden_size == 32 and contract.val_loss > 0  # the TrainJob's env reached the trainer
    assert (tmp_path / "train-output" / "checkpoints" / "last.ckpt").is_file()
    result = [line for line in lines if line.startswith("CITYSCALE_TRAIN_RESULT ")]
    assert len(result) == 1, lines[-20:]
    assert json.loads(result[0].split(" ", 1)[1])["world_size"] == 1
    assert any("world_size=1 (num_nodes=1 x devices=1)" in line and "DDPStrategy" in line for line in lines)


def test_failed_job_surfaces_conditions_container_states_and_events() -> None:
    with FakeTrainerApi(scenario="fail") as api:
        launcher = trainjob.TrainJobLauncher(api.client(), timeout_s=30, poll_s=1, log_line=lambda line: None)
        with pytest.raises(trainjob.TrainJobFailed) as err:
            launcher.run(gpu_request())
        assert not forbidden(api), api.forbidden
    message = str(err.value)
    assert "cityscale-train-gpu failed" in message
    assert "BackoffLimitExceeded" in message and "has failed" in message  # condition + event
    assert "OOMKilled (exit 137)" in message  # the node container's state
    assert "Started container" not in message  # normal events are left out


def test_job_that_never_finishes_is_deleted_at_the_timeout() -> None:
    with FakeTrainerApi(scenario="stuck") as api:
        launcher = trainjob.TrainJobLauncher(api.client(), timeout_s=2, poll_s=1, log_line=lambda line: None)
        started = time.monotonic()
        with pytest.raises(trainjob.TrainJobTimeout, match="did not finish within 2 s"):
            launcher.run(gpu_request())
        assert time.monotonic() - started < 15
        assert api.deleted == ["cityscale-train-gpu"]
        assert not forbidden(api), api.forbidden


def test_sigterm_while_waiting_deletes_the_job() -> None:
    """KFP stops a task with SIGTERM: the launcher deletes its TrainJob before it exits."""
    with FakeTrainerApi(scenario="stuck") as api:
        launcher = trainjob.TrainJobLauncher(api.client(), timeout_s=60, poll_s=1, log_line=lambda line: None)
        timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            with pytest.raises(trainjob.TrainJobCancelled, match="cancelled"):
                launcher.run(gpu_request())
        finally:
            timer.cancel()
        assert api.deleted == ["cityscale-train-gpu"]
    assert signal.getsignal(signal.SIGTERM) is not trainjob._raise_cancelled  # the previous handler is back


def test_rbac_denies_what_the_role_does_not_grant() -> None:
    """The fake enforces the chart's Role: a TrainJob in another namespace is refused, and so is a secret read."""
    with FakeTrainerApi(scenario="stuck") as api:
        from kubernetes import client

        other = trainjob.make_client("kube-system", client.Configuration(host=api.url))
        with pytest.raises(RuntimeError, match="kube-system"):
            other.train(**trainjob.sdk_arguments(gpu_request()))
        assert not api.jobs and any("/namespaces/kube-system/" in f for f in api.forbidden)
        assert not api._allowed("POST", f"/apis/{GROUP}/v1alpha1/namespaces/kube-system/trainjobs")
        assert not api._allowed("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/x")
        assert api._allowed("DELETE", f"/apis/{GROUP}/v1alpha1/namespaces/{NAMESPACE}/trainjobs/x")


def test_component_trainjob_mode_emits_the_model_the_job_wrote(examples_uri: str, tmp_path, monkeypatch) -> None:
    """components/train_on_trainjob.py: client from the (fake) kubeconfig, model copied into the artifact."""
    from kfp import dsl

    from components.train import train
    from components.train_on_trainjob import train_on_trainjob

    lines: list[str] = []
    monkeypatch.setenv("CITYSCALE_TRAINJOB_POLL_S", "1")
    monkeypatch.setenv("CITYSCALE_HIDDEN_SIZE", "32")
    monkeypatch.setattr(trainjob, "job_name", lambda: "cityscale-train-component")
    with FakeTrainerApi(scenario="run") as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(api.kubeconfig(NAMESPACE)))
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        monkeypatch.setattr("kubeflow.common.utils.is_running_in_k8s", lambda: False)
        monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        model = dsl.Model(uri=str(tmp_path / "artifact" / "model"))
        examples = dsl.Dataset(uri=examples_uri)
        val_loss = train_on_trainjob.python_func(
            examples=examples,
            max_epochs=1,
            model=model,
            task_config=dsl.TaskConfig(),
            num_nodes=1,
            gpus_per_node=0,
        )
        assert not forbidden(api), api.forbidden
    contract = ModelContract.load(model.path)
    assert val_loss == pytest.approx(contract.val_loss) and model.metadata["val_loss"] == val_loss
    assert (tmp_path / "artifact" / "model-trainjob" / "model" / "model.pt").is_file()
    with pytest.raises(ValueError, match="not supported"):
        train.python_func(examples=examples, max_epochs=1, model=model, mode="moon")  # a typo never trains


# --- the compiled pipeline ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled_training() -> dict[str, Any]:
    text = (ROOT / "pipelines" / "compiled" / "training.yaml").read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return {"spec": spec, "platform": platform}


def test_pipeline_exposes_train_mode_nodes_and_gpus_defaulting_to_local(compiled_training) -> None:
    spec = compiled_training["spec"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_mode"]["defaultValue"] == "local"
    assert params["train_num_nodes"]["defaultValue"] == 1 and params["train_gpus_per_node"]["defaultValue"] == 1
    (trainjob_branch,) = [
        c["dag"]["tasks"]["train-on-trainjob"]
        for c in spec["components"].values()
        if "train-on-trainjob" in c.get("dag", {}).get("tasks", {})
    ]
    inputs = trainjob_branch["inputs"]["parameters"]
    assert inputs["num_nodes"]["componentInputParameter"] == "pipelinechannel--train_num_nodes"
    assert inputs["gpus_per_node"]["componentInputParameter"] == "pipelinechannel--train_gpus_per_node"


# --- the GPU check, smoke-sized on CPU -----------------------------------------------------------
def test_gpu_check_smoke_runs_on_cpu_and_writes_its_report(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--smoke",
            "--target-val-loss",
            "1.0",
            "--out",
            str(out),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["precision"] == "32-true"
    assert report["samples_per_s"] > 0 and report["n_train_samples"] > 0
    assert report["epochs"] >= 1 and len(report["val_loss_by_epoch"]) == report["epochs"]
    assert report["target_val_loss"] == 1.0 and report["val_loss_by_epoch"][0] <= 1.0  # pinball loss of scaled counts
    assert 0 < report["time_to_target_s"] <= report["fit_seconds"] + 1.0
    assert report["peak_gpu_memory_mib"] is None  # CPU: no GPU figures are made up

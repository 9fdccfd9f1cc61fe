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

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import yaml

from cityscale.config import TRAINING_FIELDS, Settings
from cityscale.model.contract import ModelContract
from cityscale.training import trainjob
from tests.conftest import sample_examples
from tests.fake_kubernetes_server import FakeKubernetesServer
from tests.infra.infra_testlib import crd_openapi_schema

ROOT = Path(__file__).resolve().parents[1]
RBAC = ROOT / "helmfile.d" / "charts" / "cityscale-platform" / "templates" / "rbac.yaml"
NAMESPACE = "cityscale"
GROUP = "trainer.kubeflow.org"
TORCHRUN = Path(sys.executable).with_name("torchrun")
# /api/v1/... or /apis/<group>/<version>/..., optionally namespaced, then resource[/name[/subresource]].
ROUTE = re.compile(r"^/apis?/(?:([^/]+)/)?v1(?:alpha1)?/(?:namespaces/([^/]+)/)?([^/]+)(?:/([^/]+))?(?:/([^/]+))?$")
CREATED = "2026-01-01T00:00:00Z"

# The upstream torch-distributed ClusterTrainingRuntime (kubeflow/trainer v2.3.0 manifests), as the fake serves it.
TORCH_DISTRIBUTED = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1",
    "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {
        "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
        "template": {
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "node",
                        "template": {
                            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                            "spec": {
                                "template": {
                                    "spec": {
                                        "containers": [
                                            {
                                                "name": "node",
                                                "image": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
                                                "command": ["/bin/bash", "-c", "echo 'Torch Distributed Runtime'"],
                                            }
                                        ]
                                    }
                                }
                            },
                        },
                    }
                ]
            }
        },
    },
}


def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": CREATED}


def forbidden(api: FakeTrainerApi) -> list[str]:
    """Refused requests, less the SDK's version probe of kubeflow-system (it only warns; no grant is needed)."""
    return [f for f in api.forbidden if "/kubeflow-system/configmaps/" not in f]


def crd_schema(file: str) -> dict[str, Any]:
    return crd_openapi_schema(file, "v1alpha1")


def rbac_rules() -> tuple[dict[tuple[str, str], set[str]], dict[tuple[str, str], set[str]]]:
    """(namespaced, cluster) grants of the chart's Role and ClusterRole, keyed by (apiGroup, resource)."""
    text = re.sub(r"\{\{-?[^}]*\}\}", "templated", RBAC.read_text())
    grants: dict[str, dict[tuple[str, str], set[str]]] = {"Role": {}, "ClusterRole": {}}
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] in grants:
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for res in rule["resources"]:
                        grants[doc["kind"]].setdefault((group, res), set()).update(rule["verbs"])
    return grants["Role"], grants["ClusterRole"]


class FakeTrainerApi(FakeKubernetesServer):
    """Stand-in for the API server + Trainer controller: TrainJobs, runtimes, pods, logs, events (see module doc)."""

    def __init__(self, scenario: str = "run"):
        super().__init__()
        self.scenario = scenario  # "run" (execute the job's command), "fail", "stuck"
        self.jobs: dict[str, dict[str, Any]] = {}
        self.forbidden: list[str] = []
        self.deleted: list[str] = []
        self.polls: dict[str, int] = {}
        self.procs: dict[str, dict[str, Any]] = {}
        self.role, self.cluster_role = rbac_rules()

    def serve(self, handler: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        url = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append({"method": method, "path": url.path, "query": query, "body": body})
        if url.path.endswith("/log") and self._allowed(method, url.path):
            self._stream_log(handler, url.path.split("/")[-2])
            return
        with self._lock:
            code, answer = self.handle(method, url.path, query, body)
        self.reply(handler, code, answer)

    def _stream_log(self, handler: BaseHTTPRequestHandler, pod: str) -> None:
        """Follow a pod's log: write lines as the process prints them, close when it exits."""
        job = pod.rsplit("-node-", 1)[0]
        handler.send_response(200)
        handler.send_header("content-type", "text/plain")
        handler.end_headers()
        sent = 0
        while True:
            state = self.procs.get(job, {"lines": [f"{job}: scripted log line"], "done": True})
            lines, done = list(state["lines"]), state["done"]
            for line in lines[sent:]:
                handler.wfile.write((line + "\n").encode())
            handler.wfile.flush()
            sent = len(lines)
            if done:
                return
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        for state in self.procs.values():
            if state["proc"].poll() is None:
                state["proc"].kill()
            state["proc"].wait(timeout=10)
        super().__exit__(*exc)

    def client(self) -> Any:
        from kubernetes import client

        return trainjob.make_client(NAMESPACE, client.Configuration(host=self.url))

    # -- authorization: the chart's Role (namespace cityscale) and ClusterRole --
    def _allowed(self, method: str, path: str) -> bool:
        verb = {"GET": "get", "POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}[method]
        m = ROUTE.match(path)
        if not m:
            return False
        group, namespace, resource, name, sub = m.groups()
        group = group if path.startswith("/apis/") else ""
        if verb == "get" and name is None:
            verb = "list"
        resource = f"{resource}/{sub}" if sub else resource
        grants = self.role if namespace else self.cluster_role
        ok = (namespace in (None, NAMESPACE)) and verb in grants.get((group, resource), set())
        if not ok:
            self.forbidden.append(f"{method} {path}")
        return ok

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if not self._allowed(method, path):
            return self._status(403, "Forbidden", f"{method} {path} is forbidden for pipeline-runner")
        ns_trainer = f"/apis/{GROUP}/v1alpha1/namespaces/{NAMESPACE}/"
        if path == f"/apis/{GROUP}/v1alpha1/clustertrainingruntimes/torch-distributed":
            return 200, TORCH_DISTRIBUTED
        if path.startswith(ns_trainer + "trainingruntimes/"):
            return self._status(404, "NotFound", "no namespaced TrainingRuntime")
        if path == ns_trainer + "trainjobs" and method == "POST":
            name = body["metadata"]["name"]
            if name in self.jobs:
                return self._status(409, "AlreadyExists", f'trainjobs "{name}" already exists')
            job = copy.deepcopy(body)
            job["metadata"].update(namespace=NAMESPACE, creationTimestamp=CREATED, uid=f"uid-{name}")
            self.jobs[name] = job
            if self.scenario == "run":
                self._start(name, job)
            return 201, job
        if path.startswith(ns_trainer + "trainjobs/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.jobs:
                return self._status(404, "NotFound", f'trainjobs "{name}" not found')
            if method == "DELETE":
                self.deleted.append(name)
                return 200, {"kind": "Status", "status": "Success"}
            self.polls[name] = self.polls.get(name, 0) + 1
            return 200, self._with_status(name)
        if path == f"/api/v1/namespaces/{NAMESPACE}/pods":
            selected = re.search(r"jobset-name=([a-z0-9-]+)", query.get("labelSelector", ""))
            name = selected.group(1) if selected else ""
            return 200, {"apiVersion": "v1", "kind": "PodList", "items": self._pods(name) if name in self.jobs else []}
        if path == f"/api/v1/namespaces/{NAMESPACE}/events":
            return 200, {"apiVersion": "v1", "kind": "EventList", "items": self._events()}
        return self._status(404, "NotFound", f"no route {path}")

    # -- the controller --
    def _start(self, name: str, job: dict[str, Any]) -> None:
        """Run the TrainJob's trainer command on this machine as node 0 of 1, with the TrainJob's env."""
        trainer = job["spec"]["trainer"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.update({e["name"]: e["value"] for e in trainer.get("env", [])})
        env.update(PET_NNODES="1", PET_NODE_RANK="0")  # the runtime's torch plugin sets these (and the master)
        command = [str(TORCHRUN) if trainer["command"] == ["torchrun"] else trainer["command"][0]]
        proc = subprocess.Popen(
            [*command, "--standalone", *trainer["args"]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        state = {"proc": proc, "lines": [], "done": False}

        def pump() -> None:
            for line in proc.stdout:
                state["lines"].append(line.rstrip("\n"))
            proc.wait()
            state["done"] = True

        self.procs[name] = state
        threading.Thread(target=pump, daemon=True).start()

    def _phase(self, name: str) -> str:
        if self.scenario == "run":
            state = self.procs[name]
            if not state["done"]:
                return "Running"
            return "Succeeded" if state["proc"].returncode == 0 else "Failed"
        if self.scenario == "stuck":
            return "Running"
        return ["Pending", "Running", "Failed"][min(self.polls.get(name, 0), 3) - 1 if self.polls.get(name) else 0]

    def _with_status(self, name: str) -> dict[str, Any]:
        job = copy.deepcopy(self.jobs[name])
        phase = self._phase(name)
        if phase == "Succeeded":
            job["status"] = {"conditions": [condition("Complete", "JobsCompleted", f"jobset {name} completed")]}
        elif phase == "Failed":
            message = f"jobset {name}: job {name}-node-0 has failed (BackoffLimitExceeded)"
            job["status"] = {"conditions": [condition("Failed", "Failed", message)]}
        return job

    def _pods(self, name: str) -> list[dict[str, Any]]:
        phase = self._phase(name)
        trainer = self.jobs[name]["spec"]["trainer"]
        resources = trainer["resourcesPerNode"]
        container_status: dict[str, Any] = {"name": "node", "ready": phase == "Running", "restartCount": 0}
        container_status["image"] = container_status["imageID"] = trainer["image"]
        if phase == "Failed":
            container_status["state"] = {
                "terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "memory limit 32G exceeded"}
            }
        return [
            {
                "metadata": {
                    "name": f"{name}-node-0-0-abcde",
                    "namespace": NAMESPACE,
                    "creationTimestamp": CREATED,
                    "labels": {
                        "jobset.sigs.k8s.io/jobset-name": name,
                        "jobset.sigs.k8s.io/replicatedjob-name": "node",
                        "batch.kubernetes.io/job-completion-index": "0",
                    },
                },
                "spec": {"containers": [{"name": "node", "image": trainer["image"], "resources": resources}]},
                "status": {"phase": phase, "containerStatuses": [container_status]},
            }
        ]

    def _events(self) -> list[dict[str, Any]]:
        if self.scenario != "fail":
            return []
        name = next(iter(self.jobs))
        return [
            {
                "metadata": {"name": "e1", "namespace": NAMESPACE},
                "involvedObject": {"kind": "Pod", "name": f"{name}-node-0-0-abcde"},
                "reason": "Started",
                "message": "Started container node",
                "firstTimestamp": CREATED,
            },
            {
                "metadata": {"name": "e2", "namespace": NAMESPACE},
                "involvedObject": {"kind": "Job", "name": f"{name}-node-0"},
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "firstTimestamp": CREATED,
            },
        ]


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
    settings = Settings(hidden_size=32, batch_size=128)
    return trainjob.request_from_settings(
        settings,
        name=name,
        examples_uri=examples_uri,
        output_uri=output_uri,
        num_nodes=1,
        gpus_per_node=0,
        max_epochs=1,
    )


def gpu_request(settings: Settings | None = None, **overrides: Any) -> trainjob.TrainJobRequest:
    kwargs: dict[str, Any] = dict(
        name="cityscale-train-gpu",
        examples_uri="gs://bucket/run/features/examples",
        output_uri="gs://bucket/run/train/model-trainjob",
        num_nodes=4,
        gpus_per_node=2,
        max_epochs=8,
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
    "gbm_max_examples": 1234,
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
    return settings, gpu_request(settings=settings, max_epochs=settings.max_epochs)


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
    """components/train.py in trainjob mode: client from the (fake) kubeconfig, model copied into the artifact."""
    from kfp import dsl

    from components.train import train

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
        val_loss = train.python_func(
            examples=examples,
            max_epochs=1,
            model=model,
            task_config=dsl.TaskConfig(),
            mode="trainjob",
            num_nodes=1,
            gpus_per_node=0,
        )
        assert not forbidden(api), api.forbidden
    contract = ModelContract.load(model.path)
    assert val_loss == pytest.approx(contract.val_loss) and model.metadata["val_loss"] == val_loss
    assert (tmp_path / "artifact" / "model-trainjob" / "model" / "model.pt").is_file()
    with pytest.raises(ValueError, match="not supported"):
        train.python_func(examples=examples, max_epochs=1, model=model, task_config=dsl.TaskConfig(), mode="moon")


# --- the compiled pipeline ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled_training() -> dict[str, Any]:
    text = (ROOT / "pipelines" / "compiled" / "training.yaml").read_text()
    spec, platform = list(yaml.safe_load_all(text))
    return {"spec": spec, "platform": platform}


def test_pipeline_exposes_train_mode_nodes_and_gpus_defaulting_to_local(compiled_training) -> None:
    params = compiled_training["spec"]["root"]["inputDefinitions"]["parameters"]
    assert params["train_mode"]["defaultValue"] == "local"
    assert params["train_num_nodes"]["defaultValue"] == 1 and params["train_gpus_per_node"]["defaultValue"] == 1
    inputs = compiled_training["spec"]["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert inputs["mode"]["componentInputParameter"] == "train_mode"
    assert inputs["num_nodes"]["componentInputParameter"] == "train_num_nodes"
    assert inputs["gpus_per_node"]["componentInputParameter"] == "train_gpus_per_node"


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

"""FakeTrainerApi: a loopback stand-in for the Kubernetes API server + Kubeflow Trainer controller (a fake: no API
server can run here). Shared by the TrainJob tests and the cluster-contract test.

It answers the routes the ``kubeflow`` SDK (0.5.0) and the launcher use (ClusterTrainingRuntimes, TrainJobs, pods,
pod logs, events) and enforces the pipeline runner's RBAC as written in
``helmfile.d/charts/cityscale-platform/templates/rbac.yaml``: any other verb, resource or namespace is answered
403 and recorded. Its "controller" either really runs the command the TrainJob asks for
(``torchrun --module cityscale.training.train ...`` on CPU, one node, env from the TrainJob on top of
``node_env``) and reports its outcome and log, or plays back a scripted status sequence (a failure with reasons,
a job that never finishes).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from cityscale.training import trainjob
from tests.fake_kubernetes_server import FakeKubernetesServer

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

    def __init__(self, scenario: str = "run", node_env: Mapping[str, str] | None = None):
        super().__init__()
        self.scenario = scenario  # "run" (execute the job's command), "fail", "stuck"
        # What a training node has before the TrainJob's own env: the image's environment (default: this process's).
        self.node_env = dict(os.environ if node_env is None else node_env)
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
        env = {**self.node_env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
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

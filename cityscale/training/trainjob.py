"""Cluster training as a Kubeflow Trainer v2 ``TrainJob`` (the train step's ``trainjob`` mode).

The training code is the same in every mode: each node of the TrainJob runs ``python -m cityscale.training.train``
under ``torchrun`` (``--module``), which the ``torch-distributed`` ClusterTrainingRuntime configures per node
(``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PORT``); Lightning sees the torchelastic environment
and runs DDP over NCCL with bf16 mixed precision. This module only describes and drives that job through the
``kubeflow`` SDK (``TrainerClient``, ``CustomTrainerContainer``, ``kubeflow.trainer.options``): build the
request, submit it, stream node 0's log, wait with a timeout (deleting the job when time runs out), turn a
failure into a message that says why (the TrainJob's conditions, the pods' container states, warning events),
and fetch the model the job wrote. The job reads the features step's Dataset and writes the model artifact and
its checkpoints under a URI (``gs://`` in the cluster) through fsspec; a retried step reuses the same output
URI, so the new TrainJob resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cityscale import storage
from cityscale.config import TRAINING_FIELDS, Settings
from cityscale.model.contract import CONTRACT_FILE, ModelContract

log = logging.getLogger("cityscale.training.trainjob")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # the label Trainer puts on every pod of a TrainJob
NODE_CONTAINER = "node"  # the trainer container of the torch-distributed runtime
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Event reasons that describe normal progress; every other event reason is reported with a failure.
_NORMAL_EVENTS = {"Scheduled", "Pulling", "Pulled", "Created", "Started", "SuccessfulCreate", "Completed"}


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed (or completed without a model); the message lists the reasons found."""


class TrainJobTimeout(TimeoutError):
    """The TrainJob did not finish in time; it has been deleted."""


class TrainJobCancelled(BaseException):
    """The launcher got SIGTERM (the KFP task was stopped or timed out); the TrainJob has been deleted.

    A ``BaseException`` like ``KeyboardInterrupt``: the SDK's ``except Exception`` blocks must not turn it into
    an ordinary error while a request is in flight.
    """


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise TrainJobCancelled(f"received signal {signum}")


@dataclass(frozen=True)
class TrainJobRequest:
    """Everything that decides one TrainJob: what runs, on how many nodes and GPUs, where, reading what."""

    name: str
    image: str
    examples_uri: str  # the features step's Dataset (.npz), gs:// in the cluster
    output_uri: str  # the job writes <output_uri>/model and <output_uri>/checkpoints
    num_nodes: int = 1
    gpus_per_node: int = 1
    cpu: str = "8"
    memory: str = "32G"
    max_epochs: int = 8
    precision: str = "bf16-mixed"
    runtime: str = "torch-distributed"
    service_account: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    deadline_s: int | None = None

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name) or len(self.name) > 40:
            raise ValueError(f"TrainJob name {self.name!r} must be a DNS label of at most 40 characters")
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if not self.examples_uri or not self.output_uri:
            raise ValueError("examples_uri and output_uri are required")

    @property
    def model_uri(self) -> str:
        return storage.join(self.output_uri, "model")

    @property
    def checkpoint_uri(self) -> str:
        return storage.join(self.output_uri, "checkpoints")

    @property
    def resources_per_node(self) -> dict[str, Any]:
        resources: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_node:
            resources["gpu"] = self.gpus_per_node
        return resources

    def train_args(self) -> list[str]:
        """torchrun's arguments: one process per GPU (one on CPU nodes), then the training entry point's flags."""
        devices = max(self.gpus_per_node, 1)
        on_gpu = self.gpus_per_node > 0
        return [
            f"--nproc-per-node={devices}",
            "--module",
            "cityscale.training.train",
            "--examples",
            self.examples_uri,
            "--out",
            self.model_uri,
            "--ckpt-dir",
            self.checkpoint_uri,
            "--accelerator",
            "gpu" if on_gpu else "cpu",
            "--devices",
            str(devices),
            "--num-nodes",
            str(self.num_nodes),
            "--strategy",
            "ddp",
            "--precision",
            self.precision if on_gpu else "32",
            "--max-epochs",
            str(self.max_epochs),
        ]


def job_name(prefix: str = "cityscale-train") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def request_from_settings(
    settings: Settings,
    *,
    name: str,
    examples_uri: str,
    output_uri: str,
    num_nodes: int,
    gpus_per_node: int,
    task_config: Any = None,
) -> TrainJobRequest:
    """A request from the settings, overridden by a KFP ``dsl.TaskConfig`` where the task set one.

    ``task_config`` carries the train task's resources, node selector, tolerations and env when the
    component declares ``task_config_passthroughs`` (empty under kfp.local). GPUs per node always come from
    the pipeline parameter; CPU and memory from the task's limits, else the settings.
    """
    limits = ((getattr(task_config, "resources", None) or {}).get("limits")) or {}
    node_selector = getattr(task_config, "node_selector", None) or {}
    tolerations = getattr(task_config, "tolerations", None) or []
    if gpus_per_node and not node_selector:
        node_selector = {GPU_NODE_LABEL: settings.gpu_node_type}
    if gpus_per_node and not tolerations:
        tolerations = [GPU_TOLERATION]
    # The pods build their own Settings() from the environment: every field training reads goes with the job.
    env = settings.as_env(TRAINING_FIELDS)
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    env.update({e["name"]: e["value"] for e in getattr(task_config, "env", None) or [] if "value" in e})
    return TrainJobRequest(
        name=name,
        image=settings.image,
        examples_uri=examples_uri,
        output_uri=output_uri,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        cpu=str(limits.get("cpu", settings.train_cpu_limit)),
        memory=str(limits.get("memory", settings.train_memory_limit)),
        max_epochs=settings.max_epochs,
        precision=settings.trainjob_precision,
        runtime=settings.trainjob_runtime,
        service_account=settings.trainjob_service_account,
        node_selector=dict(node_selector),
        tolerations=list(tolerations),
        env=env,
        deadline_s=settings.trainjob_timeout_s,
    )


def sdk_arguments(request: TrainJobRequest) -> dict[str, Any]:
    """The ``TrainerClient.train`` arguments: the SDK renders the TrainJob from these objects."""
    from kubeflow.trainer import CustomTrainerContainer
    from kubeflow.trainer import options as opt

    trainer = CustomTrainerContainer(
        image=request.image,
        num_nodes=request.num_nodes,
        resources_per_node=request.resources_per_node,
        env=request.env,
    )
    pod_spec = opt.PodSpecPatch(
        service_account_name=request.service_account or None,
        node_selector=request.node_selector or None,
        tolerations=request.tolerations or None,
    )
    options: list[Any] = [
        opt.Name(name=request.name),
        opt.Labels(labels={"app.kubernetes.io/part-of": "cityscale", "app.kubernetes.io/component": "train"}),
        opt.TrainerCommand(command=["torchrun"]),
        opt.TrainerArgs(args=request.train_args()),
        opt.RuntimePatch(
            training_runtime_spec=opt.TrainingRuntimeSpecPatch(
                template=opt.JobSetTemplatePatch(
                    spec=opt.JobSetSpecPatch(
                        replicated_jobs=[
                            opt.ReplicatedJobPatch(
                                name=NODE_CONTAINER,
                                template=opt.JobTemplatePatch(
                                    spec=opt.JobSpecPatch(template=opt.PodTemplatePatch(spec=pod_spec))
                                ),
                            )
                        ]
                    )
                )
            )
        ),
    ]
    if request.deadline_s:
        options.append(opt.ActiveDeadlineSeconds(seconds=int(request.deadline_s)))
    return {"runtime": request.runtime, "trainer": trainer, "options": options}


def make_client(namespace: str, client_configuration: Any = None) -> Any:
    """A ``TrainerClient`` on the Kubernetes backend: in-cluster config in a pod, else the kubeconfig."""
    from kubeflow.common.types import KubernetesBackendConfig
    from kubeflow.trainer import TrainerClient

    return TrainerClient(KubernetesBackendConfig(namespace=namespace, client_configuration=client_configuration))


class TrainJobLauncher:
    """Submits a TrainJob, streams node 0's log, waits for it and explains a failure."""

    def __init__(self, client: Any, *, timeout_s: int, poll_s: int, log_line: Callable[[str], None] | None = None):
        if not 0 < poll_s < timeout_s:
            raise ValueError(f"need 0 < poll_s ({poll_s}) < timeout_s ({timeout_s})")
        self.client = client
        self.timeout_s = int(timeout_s)
        self.poll_s = int(poll_s)
        self.log_line = log_line or (lambda line: print(line, flush=True))
        self._log_thread: threading.Thread | None = None

    def run(self, request: TrainJobRequest) -> str:
        """Submit, wait, and return the URI of the model the job wrote."""
        name = self.client.train(**sdk_arguments(request))
        log.info("TrainJob %s submitted: %d node(s) x %d GPU(s)", name, request.num_nodes, request.gpus_per_node)
        self.wait(name)
        if not storage.exists(storage.join(request.model_uri, CONTRACT_FILE)):
            raise TrainJobFailed(f"TrainJob {name} completed but wrote no model at {request.model_uri}")
        return request.model_uri

    def wait(self, name: str) -> None:
        """Wait for Complete; raise ``TrainJobFailed`` with the reasons, or delete the job on timeout or SIGTERM.

        KFP stops a task with SIGTERM; the job is deleted then too, so no GPU node keeps training for nobody.
        """
        from kubeflow.trainer.constants import constants

        self._log_thread = None
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_cancelled) if in_main else None
        try:
            job = self.client.wait_for_job_status(
                name,
                status={constants.TRAINJOB_COMPLETE, constants.TRAINJOB_FAILED},
                timeout=self.timeout_s,
                polling_interval=self.poll_s,
                callbacks=[self._follow_logs],
            )
        except TimeoutError as exc:
            self.client.delete_job(name)
            raise TrainJobTimeout(f"TrainJob {name} did not finish within {self.timeout_s} s; deleted it") from exc
        except TrainJobCancelled as exc:
            self.client.delete_job(name)
            raise TrainJobCancelled(f"TrainJob {name} cancelled ({exc}); deleted it") from exc
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            if self._log_thread is not None:
                self._log_thread.join(timeout=30)
        if job.status == constants.TRAINJOB_FAILED:
            reasons = self.failure_reasons(name)
            raise TrainJobFailed(f"TrainJob {name} failed: " + ("; ".join(reasons) or "no reason reported"))
        log.info("TrainJob %s complete", name)

    def _follow_logs(self, job: Any) -> None:
        """Called at every poll: once node 0 runs, follow its log in a thread (logs never fail the step)."""
        if self._log_thread is not None:
            return
        if not any(s.name == f"{NODE_CONTAINER}-0" and s.status not in (None, "Pending") for s in job.steps):
            return

        def follow() -> None:
            try:
                for line in self.client.get_job_logs(job.name, follow=True):
                    self.log_line(line.rstrip("\n"))
            except Exception as exc:  # noqa: BLE001 - log streaming is best effort
                log.warning("stopped following the log of %s: %s", job.name, exc)

        self._log_thread = threading.Thread(target=follow, name=f"logs-{job.name}", daemon=True)
        self._log_thread.start()

    def failure_reasons(self, name: str) -> list[str]:
        """Why the job failed: Failed conditions, failed/waiting containers and unusual events, each best effort."""
        from kubeflow.trainer.constants import constants

        backend = self.client.backend
        reasons: list[str] = []
        try:
            cr = backend.custom_api.get_namespaced_custom_object(
                constants.GROUP, constants.VERSION, backend.namespace, constants.TRAINJOB_PLURAL, name
            )
            for cond in (cr.get("status") or {}).get("conditions") or []:
                if cond.get("type") == constants.TRAINJOB_FAILED and cond.get("status") == "True":
                    reasons.append(f"condition Failed ({cond.get('reason', '')}): {cond.get('message', '')}")
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"could not read the TrainJob: {exc}")
        try:
            pods = backend.core_api.list_namespaced_pod(backend.namespace, label_selector=f"{JOBSET_NAME_LABEL}={name}")
            for pod in pods.items:
                reasons.extend(_pod_reasons(pod))
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"could not list the TrainJob's pods: {exc}")
        try:
            for event in self.client.get_job_events(name):
                if event.reason not in _NORMAL_EVENTS:
                    reasons.append(
                        f"event {event.reason} on {event.involved_object_kind}/{event.involved_object_name}: "
                        f"{event.message}"
                    )
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"could not list events: {exc}")
        return reasons


def _pod_reasons(pod: Any) -> list[str]:
    status = pod.status
    name = pod.metadata.name
    out = [f"pod {name}: {status.reason}: {status.message or ''}"] if status and status.reason else []
    for cs in (status.init_container_statuses or []) + (status.container_statuses or []) if status else []:
        term = cs.state.terminated if cs.state else None
        term = term or (cs.last_state.terminated if cs.last_state else None)
        if term is not None and term.exit_code:
            out.append(f"pod {name} container {cs.name}: {term.reason} (exit {term.exit_code}) {term.message or ''}")
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
            out.append(f"pod {name} container {cs.name}: {waiting.reason} {waiting.message or ''}")
    return [line.strip() for line in out]


def train_on_cluster(
    examples_uri: str,
    model_dir: str | Path,
    settings: Settings,
    *,
    output_uri: str,
    num_nodes: int,
    gpus_per_node: int,
    task_config: Any = None,
    client: Any = None,
) -> ModelContract:
    """Train as a TrainJob and copy the model it wrote into ``model_dir`` (the step's Model artifact)."""
    request = request_from_settings(
        settings,
        name=job_name(),
        examples_uri=examples_uri,
        output_uri=output_uri,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        task_config=task_config,
    )
    launcher = TrainJobLauncher(
        client or make_client(settings.trainjob_namespace),
        timeout_s=settings.trainjob_timeout_s,
        poll_s=settings.trainjob_poll_s,
    )
    model_uri = launcher.run(request)
    storage.download_dir(model_uri, model_dir)
    return ModelContract.load(model_dir)

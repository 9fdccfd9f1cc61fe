"""The CityScale ``InferenceService``: build it with the kserve SDK, then create-or-patch it and wait for Ready.

Build (:func:`build_inference_service`): a ``V1beta1InferenceService`` running the predictor
(``python -m serving --model <registry version>``) and, optionally, the feature-fetching transformer in
front of it (``python -m serving.transformer``, gRPC V2 to the predictor). CPU and GPU variants; replicas,
scale metric and resources from :class:`cityscale.config.Settings`. Images: the slim serving image
(``serving_image``, Dockerfile.serving, CPU torch) for the CPU predictor and the transformer; a GPU predictor
runs the pipeline image (``image``, Dockerfile), whose torch is the CUDA build. Mode rules the CRD schema cannot
express but KServe's webhook and controller apply are checked here, at build time:

- ``serving.kserve.io/deploymentMode`` is ``Standard`` (the default: Deployment + HPA) or ``Knative``;
- scale metrics: ``cpu``/``memory`` in Standard (HPA), ``concurrency``/``rps`` in Knative (KPA);
- ``canaryTrafficPercent`` only in Knative mode (Standard ignores it silently, kserve#5335): Standard
  rolls out with a surge-only rolling update (``maxUnavailable: 0``) instead;
- Knative allows one container port (``http1``); Standard also exposes gRPC (``h2c``).

Deploy (:class:`InferenceServiceDeployer`): the pipeline runner may only get/list/watch/create/patch
InferenceServices in its namespace (``helmfile.d/charts/cityscale-platform`` RBAC), so no replace and no
delete. Like ``kubectl apply``, the spec we applied last is kept in an annotation; the next deploy sends an
RFC 7386 merge patch from it (fields we dropped become ``null``, fields KServe's webhook defaulted are left
alone), waits until the controller has observed the new generation and reports Ready, and on a failed load
or a timeout patches the previous spec back.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kserve import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1PredictorSpec,
    V1beta1TransformerSpec,
    constants,
)
from kubernetes import client as k8s

from cityscale.config import CLUSTER_CONFIG_MAP, Settings

logger = logging.getLogger(__name__)

API_VERSION = f"{constants.KSERVE_GROUP}/{constants.KSERVE_V1BETA1_VERSION}"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
LAST_APPLIED_ANNOTATION = "cityscale.io/last-applied"
MODES = {"Standard": ("cpu", "memory"), "Knative": ("concurrency", "rps")}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "cloud.google.com/gke-accelerator"
HTTP_PORT, GRPC_PORT = 8080, 8081
RUN_AS_USER = 10001  # the images' cityscale user (Dockerfile, Dockerfile.serving)
SCRATCH_VOLUME = "scratch"  # emptyDir at /tmp: the one writable path under a read-only root filesystem
FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


class InferenceServiceError(RuntimeError):
    """A spec that breaks KServe's rules, or a rollout that did not become Ready."""


@dataclass(frozen=True)
class ServingOptions:
    """Everything that shapes the InferenceService; :meth:`from_settings` fills it from ``Settings``."""

    image: str  # CPU predictor and transformer: the serving image (CPU torch)
    model: str  # registry alias or version the predictor serves (``--model``)
    name: str = "cityscale"
    namespace: str = "cityscale"
    service_account: str = "cityscale-serving"
    deployment_mode: str = "Standard"
    min_replicas: int = 1
    max_replicas: int = 3
    scale_metric: str = "cpu"
    scale_target: int = 70
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"
    gpus: int = 0
    gpu_node_type: str = "nvidia-l4"
    transformer: bool = False
    canary_percent: int = 0
    env: dict[str, str] = field(default_factory=dict)  # CITYSCALE_* for predictor and transformer
    gpu_image: str = ""  # a predictor with GPUs: an image with CUDA torch (the pipeline image); empty: ``image``

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str, image: str | None = None, **overrides: Any
    ) -> ServingOptions:
        env = {"CITYSCALE_MODEL_NAME": settings.model_name}
        if settings.registry_uri:
            env["CITYSCALE_REGISTRY_URI"] = settings.registry_uri
        if settings.store_uri:
            env["CITYSCALE_STORE_URI"] = settings.store_uri
        if settings.feature_server_url:
            env["CITYSCALE_FEATURE_SERVER_URL"] = settings.feature_server_url
        values: dict[str, Any] = {
            # An explicit image (deploy-serving --image) serves either way; else CPU pods get the serving image and
            # a GPU predictor the pipeline image, the one with CUDA torch.
            "image": image or settings.serving_image,
            "gpu_image": image or settings.image,
            "model": model,
            "name": settings.model_name,
            "namespace": settings.serving_namespace,
            "service_account": settings.serving_service_account,
            "deployment_mode": settings.serving_deployment_mode,
            "min_replicas": settings.serving_min_replicas,
            "max_replicas": settings.serving_max_replicas,
            "scale_metric": settings.serving_scale_metric,
            "scale_target": settings.serving_scale_target,
            "cpu_request": settings.serving_cpu_request,
            "cpu_limit": settings.serving_cpu_limit,
            "memory_request": settings.serving_memory_request,
            "memory_limit": settings.serving_memory_limit,
            "gpus": settings.serving_gpus,
            "gpu_node_type": settings.gpu_node_type,
            "transformer": settings.serving_transformer,
            "canary_percent": settings.serving_canary_percent,
            "env": env,
        }
        values.update(overrides)
        return cls(**values)


def check_mode_rules(options: ServingOptions) -> None:
    """Raise :class:`InferenceServiceError` for what KServe's webhook/controller would reject or ignore."""
    mode = options.deployment_mode
    if mode not in MODES:
        raise InferenceServiceError(f"deploymentMode must be one of {sorted(MODES)}, got {mode!r}")
    if options.scale_metric not in MODES[mode]:
        raise InferenceServiceError(
            f"scale metric {options.scale_metric!r} is not available in {mode} mode (use one of {MODES[mode]})"
        )
    if options.canary_percent and mode != "Knative":
        raise InferenceServiceError(
            "canaryTrafficPercent only works in Knative mode; Standard ignores it (kserve#5335) and rolls out "
            "with a rolling update: set serving_canary_percent=0 or serving_deployment_mode=Knative"
        )
    if not 0 <= options.canary_percent <= 100:
        raise InferenceServiceError(f"canary percent must be 0-100, got {options.canary_percent}")
    if not 0 <= options.min_replicas <= options.max_replicas or options.max_replicas < 1:
        raise InferenceServiceError(f"need 0 <= min_replicas <= max_replicas >= 1, got {options}")
    if options.min_replicas == 0 and mode == "Standard":
        raise InferenceServiceError("scale to zero (min_replicas=0) needs Knative mode; Standard keeps >= 1 pod")


def _resources(options: ServingOptions, gpus: int) -> k8s.V1ResourceRequirements:
    limits = {"cpu": options.cpu_limit, "memory": options.memory_limit}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    return k8s.V1ResourceRequirements(
        requests={"cpu": options.cpu_request, "memory": options.memory_request}, limits=limits
    )


def _ports(options: ServingOptions) -> list[k8s.V1ContainerPort]:
    ports = [k8s.V1ContainerPort(name="http1", container_port=HTTP_PORT, protocol="TCP")]
    if options.deployment_mode == "Standard":  # Knative allows exactly one port
        ports.append(k8s.V1ContainerPort(name="h2c", container_port=GRPC_PORT, protocol="TCP"))
    return ports


def _env(options: ServingOptions) -> list[k8s.V1EnvVar]:
    base = {"HTTP_PORT": str(HTTP_PORT), "GRPC_PORT": str(GRPC_PORT), "HOME": "/tmp", **options.env}
    return [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(base.items())]


def _probe() -> k8s.V1Probe:
    return k8s.V1Probe(
        http_get=k8s.V1HTTPGetAction(path="/v2/health/ready", port=HTTP_PORT),
        period_seconds=5,
        failure_threshold=3,
        timeout_seconds=2,
    )


def _container(options: ServingOptions, name: str, command: list[str], gpus: int) -> k8s.V1Container:
    return k8s.V1Container(
        name=name,
        image=(options.gpu_image or options.image) if gpus else options.image,
        command=command,
        env=_env(options),
        # The cluster's configuration (image, buckets, feature server); the explicit env above takes precedence.
        env_from=[k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=CLUSTER_CONFIG_MAP, optional=True))],
        ports=_ports(options),
        resources=_resources(options, gpus),
        readiness_probe=_probe(),
        # Read-only root filesystem: the only writable path is the /tmp emptyDir (CITYSCALE_WORKDIR, HOME, caches).
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path="/tmp")],
    )


def _component_kwargs(options: ServingOptions, gpus: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "min_replicas": options.min_replicas,
        "max_replicas": options.max_replicas,
        "scale_metric": options.scale_metric,
        "scale_target": options.scale_target,
        "service_account_name": options.service_account,
        "volumes": [k8s.V1Volume(name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi"))],
    }
    if options.deployment_mode == "Standard":
        kwargs["deployment_strategy"] = k8s.V1DeploymentStrategy(
            type="RollingUpdate",
            rolling_update=k8s.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
        )
    if gpus:
        kwargs["node_selector"] = {GPU_NODE_LABEL: options.gpu_node_type}
        kwargs["tolerations"] = [k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]
    return kwargs


def build_inference_service(options: ServingOptions) -> V1beta1InferenceService:
    """The InferenceService for ``options`` (mode rules checked first)."""
    check_mode_rules(options)
    predictor = V1beta1PredictorSpec(
        containers=[
            _container(options, "kserve-container", ["python", "-m", "serving", "--model", options.model], options.gpus)
        ],
        **_component_kwargs(options, options.gpus),
    )
    if options.canary_percent:
        predictor.canary_traffic_percent = options.canary_percent
    transformer = None
    if options.transformer:
        # The transformer does feature I/O only: never on a GPU node. Standard: the predictor's gRPC port
        # (h2c); Knative exposes one port per container, so there it calls the predictor's REST V2 route.
        service = f"{options.name}-predictor.{options.namespace}.svc.cluster.local"
        if options.deployment_mode == "Standard":
            host, protocol = f"{service}:{GRPC_PORT}", "grpc-v2"
        else:
            host, protocol = service, "v2"
        command = ["python", "-m", "serving.transformer", "--predictor_host", host, "--predictor_protocol", protocol]
        transformer = V1beta1TransformerSpec(
            containers=[_container(options, "kserve-container", command, 0)], **_component_kwargs(options, 0)
        )
    annotations = {DEPLOYMENT_MODE_ANNOTATION: options.deployment_mode}
    labels = {
        "app.kubernetes.io/name": options.name,
        "app.kubernetes.io/part-of": "cityscale",
        "cityscale.io/model-version": options.model,
    }
    return V1beta1InferenceService(
        api_version=API_VERSION,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=k8s.V1ObjectMeta(
            name=options.name, namespace=options.namespace, annotations=annotations, labels=labels
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor, transformer=transformer),
    )


def to_manifest(isvc: V1beta1InferenceService) -> dict[str, Any]:
    """The JSON-ready dict the API server receives (camelCase, no ``None`` fields)."""
    return k8s.ApiClient().sanitize_for_serialization(isvc)


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning ``old`` into ``new``: changed keys, ``None`` for removed ones, lists whole."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return copy.deepcopy(new)
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = copy.deepcopy(value)
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value) if isinstance(value, dict) else copy.deepcopy(value)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


# --- deploy ---------------------------------------------------------------------------------------
@dataclass
class DeployResult:
    name: str
    namespace: str
    action: str  # created | patched | unchanged
    generation: int
    url: str = ""


def _applied_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """What we own in the object: spec, our labels and annotations (without the last-applied record)."""
    meta = manifest.get("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED_ANNOTATION}
    return {
        "metadata": {"labels": dict(meta.get("labels") or {}), "annotations": annotations},
        "spec": manifest["spec"],
    }


class InferenceServiceDeployer:
    """Create-or-patch an InferenceService with ``KServeClient`` and wait for it; roll back on failure."""

    def __init__(self, kserve_client: Any, timeout_s: float = 600.0, poll_s: float = 5.0):
        self.client = kserve_client
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    # -- API calls (only get/create/patch: the runner's RBAC) --
    def _get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.client.api_instance.get_namespaced_custom_object(
                constants.KSERVE_GROUP,
                constants.KSERVE_V1BETA1_VERSION,
                namespace,
                constants.KSERVE_PLURAL_INFERENCESERVICE,
                name,
            )
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise InferenceServiceError(
                f"cannot read InferenceService {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc

    def _patch(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        # KServeClient.patch sends a V1beta1InferenceService, whose serialization drops None: it cannot
        # remove a field. The same CustomObjectsApi call with a dict sends the nulls (merge-patch+json).
        try:
            return self.client.api_instance.patch_namespaced_custom_object(
                constants.KSERVE_GROUP,
                constants.KSERVE_V1BETA1_VERSION,
                namespace,
                constants.KSERVE_PLURAL_INFERENCESERVICE,
                name,
                body,
            )
        except k8s.ApiException as exc:
            raise InferenceServiceError(f"patch of {namespace}/{name} refused: {exc.status} {exc.body}") from exc

    # -- the rollout --
    def deploy(self, isvc: V1beta1InferenceService) -> DeployResult:
        """Create or patch ``isvc``, wait until Ready; on failure restore the previous spec and raise."""
        manifest = to_manifest(isvc)
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        desired = _applied_view(manifest)
        record = json.dumps(desired, sort_keys=True, separators=(",", ":"))
        manifest["metadata"].setdefault("annotations", {})[LAST_APPLIED_ANNOTATION] = record
        isvc.metadata.annotations = manifest["metadata"]["annotations"]

        current = self._get(name, namespace)
        if current is None:
            created = self.client.create(isvc, namespace=namespace)
            generation = int(created["metadata"].get("generation", 1))
            try:
                status = self._wait_ready(name, namespace, generation)
            except InferenceServiceError as exc:
                raise InferenceServiceError(
                    f"{exc}; it was new, so there is no previous spec to roll back to (and the runner may not "
                    "delete): fix the spec and deploy again"
                ) from exc
            return DeployResult(name, namespace, "created", generation, status.get("url", ""))

        current_annotations = current["metadata"].get("annotations") or {}
        current_mode = current_annotations.get(DEPLOYMENT_MODE_ANNOTATION, "Standard")
        new_mode = desired["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION]
        if current_mode != new_mode:
            raise InferenceServiceError(
                f"{namespace}/{name} runs in {current_mode} mode; KServe does not switch a live InferenceService "
                f"to {new_mode}: create it under another name"
            )
        previous_record = current_annotations.get(LAST_APPLIED_ANNOTATION)
        previous = json.loads(previous_record) if previous_record else _applied_view(current)
        patch = merge_patch(previous, desired)
        if not patch:
            status = self._wait_ready(name, namespace, int(current["metadata"].get("generation", 1)))
            return DeployResult(name, namespace, "unchanged", int(current["metadata"].get("generation", 1)))
        patch.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED_ANNOTATION] = record
        patched = self._patch(name, namespace, patch)
        generation = int(patched["metadata"].get("generation", 1))
        try:
            status = self._wait_ready(name, namespace, generation)
        except InferenceServiceError as exc:
            self._roll_back(name, namespace, desired, previous, previous_record)
            raise InferenceServiceError(f"{exc}; rolled back to the previous spec") from exc
        return DeployResult(name, namespace, "patched", generation, status.get("url", ""))

    def _roll_back(
        self, name: str, namespace: str, failed: dict[str, Any], previous: dict[str, Any], previous_record: str | None
    ) -> None:
        back = merge_patch(failed, previous)
        back.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED_ANNOTATION] = previous_record
        patched = self._patch(name, namespace, back)
        generation = int(patched["metadata"].get("generation", 1))
        logger.warning("rolled %s/%s back to its previous spec (generation %d)", namespace, name, generation)
        try:
            self._wait_ready(name, namespace, generation)
        except InferenceServiceError as exc:  # the rollback itself is best effort: report, keep the first error
            logger.error("the rolled-back %s/%s is not Ready either: %s", namespace, name, exc)

    def _wait_ready(self, name: str, namespace: str, generation: int) -> dict[str, Any]:
        """Poll until the controller observed ``generation`` and Ready is True; fail fast on a failed load."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            obj = self._get(name, namespace) or {}
            status = obj.get("status") or {}
            observed = int(status.get("observedGeneration", 0))
            conditions = {c.get("type"): c for c in status.get("conditions", [])}
            ready = conditions.get("Ready", {})
            if observed >= generation:
                if str(ready.get("status", "")).lower() == "true":
                    return status
                transition = (status.get("modelStatus") or {}).get("transitionStatus")
                if transition in FAILED_TRANSITIONS:
                    info = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
                    raise InferenceServiceError(
                        f"{namespace}/{name} generation {generation} failed: {transition} "
                        f"{info.get('reason', '')} {info.get('message', ready.get('message', ''))}".strip()
                    )
            if time.monotonic() >= deadline:
                raise InferenceServiceError(
                    f"{namespace}/{name} generation {generation} not Ready after {self.timeout_s:.0f} s "
                    f"(observed {observed}, Ready={ready.get('status', 'Unknown')}: {ready.get('message', '')})"
                )
            time.sleep(self.poll_s)

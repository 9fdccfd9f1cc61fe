"""FakeKubernetesApi: a loopback stand-in for the Kubernetes API server + KServe controller, InferenceServices only
(a fake: no API server can run here). Shared by the rollout tests and the cluster-contract test.

It answers the few routes the deployer uses, the way the API server and the KServe controller would, and checks
every request's shape: the path and namespace, the content type (create = JSON, patch =
``application/merge-patch+json``), the body's apiVersion/kind/name, and the verbs the pipeline runner's RBAC
allows (get/list/watch/create/patch in namespace ``cityscale``; a PUT (replace) or DELETE is answered 403). The
"controller" marks a generation Ready after a few polls, or failed (``BlockedByFailedLoad``) when its predictor
image contains ``broken``, or never Ready when it contains ``stuck``.
"""

from __future__ import annotations

import copy
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fake_kubernetes_server import FakeKubernetesServer

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
ALLOWED_NAMESPACE = "cityscale"


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class FakeKubernetesApi(FakeKubernetesServer):
    """Stand-in for the Kubernetes API server + KServe controller (InferenceServices only), on loopback."""

    def __init__(self, ready_after_polls: int = 2):
        super().__init__()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.ready_after_polls = ready_after_polls
        self._polls: dict[tuple[str, str, int], int] = {}

    def serve(self, handler: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        record = {
            "method": method,
            "path": handler.path,
            "content_type": handler.headers.get("content-type", ""),
            "body": body if method in ("POST", "PATCH", "PUT") else None,
        }
        with self._lock:
            self.requests.append(record)
            code, answer = self.handle(method, handler.path, record["content_type"], record["body"])
        self.reply(handler, code, answer)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}

    # -- the API server --
    def handle(self, method: str, path: str, content_type: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not path.startswith(PREFIX):
            return self._status(404, "NotFound", f"no route {path}")
        parts = path[len(PREFIX) :].split("?")[0].split("/")
        namespace, plural, name = parts[0], parts[1], (parts[2] if len(parts) > 2 else None)
        if plural != "inferenceservices":
            return self._status(404, "NotFound", f"unknown resource {plural}")
        if namespace != ALLOWED_NAMESPACE or method in ("PUT", "DELETE"):
            return self._status(403, "Forbidden", f"{method} inferenceservices in {namespace} is not allowed")
        key = (namespace, name or "")
        if method == "GET":
            if key not in self.objects:
                return self._status(404, "NotFound", f'inferenceservices "{name}" not found')
            self._reconcile(key)
            return 200, self.objects[key]
        if method == "POST":
            if name is not None or not content_type.startswith("application/json"):
                return self._status(400, "BadRequest", f"create: bad path or content type {content_type}")
            if body.get("apiVersion") != "serving.kserve.io/v1beta1" or body.get("kind") != "InferenceService":
                return self._status(400, "BadRequest", "not a serving.kserve.io/v1beta1 InferenceService")
            meta = body.get("metadata", {})
            if meta.get("namespace", namespace) != namespace or not meta.get("name") or "predictor" not in body["spec"]:
                return self._status(400, "BadRequest", "metadata.name/namespace or spec.predictor missing")
            key = (namespace, meta["name"])
            if key in self.objects:
                return self._status(409, "AlreadyExists", f'inferenceservices "{meta["name"]}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"].update(generation=1, uid=f"uid-{len(self.objects)}", resourceVersion="1")
            self.objects[key] = obj
            return 201, obj
        if method == "PATCH":
            if content_type != "application/merge-patch+json":
                return self._status(415, "UnsupportedMediaType", f"patch content type {content_type}")
            if key not in self.objects:
                return self._status(404, "NotFound", f'inferenceservices "{name}" not found')
            obj = self.objects[key]
            patched = apply_merge_patch(obj, body)
            if patched.get("spec") != obj.get("spec"):
                patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            patched["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
            self.objects[key] = patched
            return 200, patched
        return self._status(405, "MethodNotAllowed", method)

    # -- the KServe controller --
    def _reconcile(self, key: tuple[str, str]) -> None:
        obj = self.objects[key]
        generation = obj["metadata"]["generation"]
        image = obj["spec"]["predictor"]["containers"][0]["image"]
        polls = self._polls.get((*key, generation), 0) + 1
        self._polls[(*key, generation)] = polls
        status: dict[str, Any] = {"observedGeneration": generation}
        if "broken" in image:
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "RevisionFailed"}]
            status["modelStatus"] = {
                "transitionStatus": "BlockedByFailedLoad",
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "predictor exited with 1"},
            }
        elif "stuck" in image or polls < self.ready_after_polls:
            status["observedGeneration"] = generation - 1 if polls < self.ready_after_polls else generation
            status["conditions"] = [{"type": "Ready", "status": "Unknown"}]
        else:
            status["conditions"] = [{"type": "Ready", "status": "True"}]
            status["url"] = f"http://{key[1]}.{key[0]}.example.com"
        obj["status"] = status

"""Start a ``kserve.ModelServer`` that reports the served model version and can reload it in place.

kserve 0.21's ``DataPlane.model_metadata`` leaves out the optional ``versions`` field of the V2 metadata
response (its code says "model versioning is not supported yet"), and its gRPC servicer copies only
name/platform/inputs/outputs. CityScale serves exactly one registry version per process and clients,
dashboards and the rollout checks want to see which: a model exposing ``versions`` (a list of strings)
and ``platform`` gets them into ``GET /v2/models/<name>`` and gRPC ``ModelMetadata``. Everything else is
kserve's own server, unchanged.

Reload: kserve's base ``ModelRepository.load`` does nothing, so ``POST /v2/repository/models/<name>/load``
(the V2 model-repository extension) would report success without reloading. :class:`ReloadingRepository`
calls the model's ``load()`` again: the predictor re-resolves its registry alias (``production``), so a
promotion or ``registry.rollback`` takes effect without a restart. The old version serves until the new one
is loaded (the predictor swaps model and version together at the end of ``load``).
"""

from __future__ import annotations

from typing import Any

import kserve
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import server as grpc_server_module
from kserve.protocol.grpc.servicer import InferenceServicer


class ReloadingRepository(ModelRepository):
    """A model repository whose ``load(name)`` reloads an already registered model (see the module docstring)."""

    def load(self, name: str) -> bool:
        model = self.get_model(name)
        if model is None:
            raise KeyError(f"model {name!r} is not served here; only registered models can be reloaded")
        return bool(model.load())


class VersionedDataPlane(DataPlane):
    """``DataPlane`` whose model metadata carries the model's ``versions`` and ``platform`` when it has them."""

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        versions = getattr(model, "versions", None)
        if versions:
            metadata["versions"] = [str(v) for v in versions]
        platform = getattr(model, "platform", None)
        if platform:
            metadata["platform"] = str(platform)
        return metadata


class VersionedInferenceServicer(InferenceServicer):
    """gRPC ``ModelMetadata`` that also fills ``versions`` from the data plane's metadata."""

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:  # noqa: N802
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions", []),
            platform=metadata["platform"],
            inputs=metadata["inputs"],
            outputs=metadata["outputs"],
        )


def start(models: list[kserve.Model], http_port: int, grpc_port: int, workers: int = 1) -> None:
    """Serve ``models`` over REST and gRPC until SIGTERM (blocks)."""
    # GRPCServer.start builds its servicer from this module-level name; point it at the subclass above.
    grpc_server_module.InferenceServicer = VersionedInferenceServicer
    server = kserve.ModelServer(
        http_port=http_port, grpc_port=grpc_port, workers=workers, registered_models=ReloadingRepository()
    )
    server.dataplane = VersionedDataPlane(model_registry=server.registered_models)
    server.start(models)

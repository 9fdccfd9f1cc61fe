"""Start a ``kserve.ModelServer`` that reports the served model version and can reload it in place.

kserve 0.21's ``DataPlane.model_metadata`` leaves out the optional ``versions`` field of the V2 metadata
response (its code says "model versioning is not supported yet"), and its gRPC servicer copies only
name/platform/inputs/outputs. CityScale serves exactly one registry version per process and clients,
dashboards and the rollout checks want to see which: a model exposing ``versions`` (a list of strings)
and ``platform`` gets them into ``GET /v2/models/<name>`` and gRPC ``ModelMetadata``.

JSON answers of V2 ``infer`` are serialised by pydantic instead of FastAPI's ``jsonable_encoder``
(:class:`JSONV2Endpoints`: the same bytes, a twentieth of the time). Everything else is kserve's own server.

Reload: kserve's base ``ModelRepository.load`` does nothing, so ``POST /v2/repository/models/<name>/load``
(the V2 model-repository extension) would report success without reloading. :class:`ReloadingRepository`
calls the model's ``load()`` again: the predictor re-resolves its registry alias (``production``), so a
promotion or ``registry.rollback`` takes effect without a restart. The old version serves until the new one
is loaded (the predictor swaps model and version together at the end of ``load``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import kserve
import kserve.model_server
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import HandlerCallDetails, RpcMethodHandler
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import server as grpc_server_module
from kserve.protocol.grpc.interceptors import LoggingInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from kserve.protocol.rest.v2_endpoints import V2Endpoints


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

    def decode_inference_request(self, body: bytes | Any, headers: dict, model_name: str) -> InferRequest:
        """A malformed binary-extension request is the client's error (400), not an internal one.

        kserve parses ``inference-header-content-length`` with a bare ``int()`` and indexes the JSON header
        without checks, so a non-numeric length or a header without ``inputs`` answered 500 (found by
        tests/reliability/test_reliability_fuzz.py).
        """
        if isinstance(body, bytes):
            length = str(headers.get(INFERENCE_CONTENT_LENGTH_HEADER, ""))
            if not length.isdigit() or int(length) > len(body):
                raise InvalidInput(
                    f"{INFERENCE_CONTENT_LENGTH_HEADER} must be the byte length of the JSON header "
                    f"(0..{len(body)}), got {length!r}"
                )
            try:
                return super().decode_inference_request(body, headers, model_name)
            except InvalidInput:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise InvalidInput(f"malformed binary inference request: {exc!r}") from exc
        return super().decode_inference_request(body, headers, model_name)


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


class JSONV2Endpoints(V2Endpoints):
    """kserve's V2 REST ``infer``, its JSON answer serialised by pydantic instead of FastAPI's generic encoder.

    kserve returns its ``InferenceResponse`` model and FastAPI turns it into JSON with ``jsonable_encoder``, a
    recursive Python walk over every value: 1.1 ms of a 12-sensor forecast's answer, more than the model's
    Python side. ``model_dump_json`` writes the same bytes (fields, order, number text) in ~50 us, which
    tests/test_serving_fast_path.py checks. Decoding, errors, binary bodies and headers stay kserve's ``infer``.
    """

    async def infer(
        self,
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        request_body: InferenceRequest | bytes,
        model_version: str | None = None,
    ) -> InferenceResponse | Response:
        result = await super().infer(raw_request, raw_response, model_name, request_body, model_version)
        if not isinstance(result, InferenceResponse):
            return result  # kserve's binary body (the raw_response itself)
        response = Response(result.model_dump_json(), raw_response.status_code or 200, media_type="application/json")
        response.headers.raw.extend(raw_response.headers.raw)  # what FastAPI merges from raw_response otherwise
        return response


def register_json_infer(server: kserve.ModelServer) -> None:
    """Route V2 ``infer`` to :class:`JSONV2Endpoints`: added before kserve registers its own routes, so it wins."""
    endpoints = JSONV2Endpoints(server.dataplane, server.model_repository_extension)
    for path in ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"):
        kserve.model_server.app.add_api_route(
            path, endpoints.infer, response_model=None, methods=["POST"], include_in_schema=False
        )


V2_PREFIX = "/v2/"


def _describe_error(error: dict[str, Any]) -> str:
    """``body.inputs.0.shape: Input should be a valid integer`` (or, for unparsable JSON, the parser's reason)."""
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", ""))
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and reason:
        message = f"{message}: {reason}"
    return f"{where}: {message}"


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request body FastAPI could not parse or validate, answered without echoing the invalid input back.

    On the V2 routes (``/v2/...``) the Open Inference Protocol's error response: HTTP 400 with
    ``{"error": "<message>"}``, for malformed JSON, a body that is not an object, missing or mistyped fields.
    FastAPI's default there was 422 with ``{"detail": [...]}``, which V2 clients do not read. Elsewhere (only
    kserve's own V1 and root routes, none of which declares a body model) 422 with ``error`` and ``detail``.

    FastAPI's default handler also echoes the offending input with ``json.dumps``, which raises on ``Infinity``
    (e.g. ``"shape": Infinity``) and answered 500 (found by tests/reliability/test_reliability_fuzz.py).
    """
    errors = exc.errors()
    summary = "; ".join(_describe_error(e) for e in errors) or "the request body is not valid"
    if request.url.path.startswith(V2_PREFIX):
        return JSONResponse(status_code=400, content={"error": f"invalid inference request: {summary}"})
    detail = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]
    return JSONResponse(status_code=422, content={"error": f"invalid request: {summary}", "detail": detail})


def _start_grpc_thread(server: kserve.ModelServer) -> tuple[grpc_server_module.GRPCServer, asyncio.AbstractEventLoop]:
    """kserve's gRPC server on its own event loop in a thread, beside the REST server's loop.

    With both on one loop and forecasts computed on it, every loop turn serves all ready REST connections but
    advances each gRPC call by one completion-queue step, so under mixed load gRPC starved: 21 req/s against
    REST's 289 at concurrency 8 each, p99 628 ms (benchmarks/bench_soak.py). On two loops the GIL is shared by
    time slices instead (REST 144 / gRPC 128 req/s), but gRPC alone is slower than on kserve's loop
    (bench_serving c8: 772 req/s against the bare model's 3,132), so it is opt-in:
    ``CITYSCALE_SERVING_GRPC_OWN_LOOP``. The default now fixes the starvation differently: forecasts run in a
    thread pool (``serving_predict_threads``, serving/predictor.py), so loop turns are short for both protocols.
    The predictor is safe to call from both loops (its caches are locked; model and history are read-only
    between reloads).
    """
    grpc = grpc_server_module.GRPCServer(
        server.grpc_port,
        server.dataplane,
        server.model_repository_extension,
        kwargs=vars(kserve.model_server.args),
        grace_period=server.grace_period,
    )
    loop = asyncio.new_event_loop()

    def serve() -> None:  # run_forever, not run_until_complete(start): stop() must still run after start returns
        asyncio.set_event_loop(loop)
        loop.create_task(grpc.start(server.max_threads))
        loop.run_forever()

    threading.Thread(target=serve, name="grpc-server", daemon=True).start()
    return grpc, loop


def _stop_grpc_thread(grpc: grpc_server_module.GRPCServer, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
    """Drain the gRPC server (its grace period), then stop its loop."""
    try:
        asyncio.run_coroutine_threadsafe(grpc.stop(), loop).result(timeout=timeout_s)
    finally:
        loop.call_soon_threadsafe(loop.stop)


class QuietLoggingInterceptor(LoggingInterceptor):
    """kserve's gRPC logging interceptor without its INFO line per call.

    kserve logs ``grpc method: ...`` for every gRPC request (REST requests log nothing by default): 40,000 lines
    a minute under the soak, ~3 % of the server's CPU (py-spy), and as many log entries billed per pod.
    """

    async def intercept_service(
        self,
        continuation: Callable[[HandlerCallDetails], Awaitable[RpcMethodHandler]],
        handler_call_details: HandlerCallDetails,
    ) -> RpcMethodHandler:
        return await continuation(handler_call_details)


def start(
    models: list[kserve.Model],
    http_port: int,
    grpc_port: int,
    workers: int = 1,
    grpc_own_loop: bool = False,
    log_grpc_calls: bool = False,
) -> None:
    """Serve ``models`` over REST and gRPC until SIGTERM (blocks).

    ``grpc_own_loop`` runs gRPC on its own event loop (see :func:`_start_grpc_thread`): right for a model whose
    ``predict`` computes on the loop (the predictor), wrong for one holding loop-bound clients (the
    transformer's gRPC channel to the predictor). ``log_grpc_calls`` keeps kserve's log line per gRPC call.
    """
    kserve.model_server.app.add_exception_handler(RequestValidationError, validation_error_handler)
    # GRPCServer.start builds its servicer and interceptors from these module-level names.
    grpc_server_module.InferenceServicer = VersionedInferenceServicer
    grpc_server_module.LoggingInterceptor = LoggingInterceptor if log_grpc_calls else QuietLoggingInterceptor
    server = kserve.ModelServer(
        http_port=http_port,
        grpc_port=grpc_port,
        workers=workers,
        registered_models=ReloadingRepository(),
        enable_grpc=not grpc_own_loop,
    )
    server.dataplane = VersionedDataPlane(model_registry=server.registered_models)
    register_json_infer(server)
    if not grpc_own_loop:
        server.start(models)
        return
    grpc, grpc_loop = _start_grpc_thread(server)
    try:
        server.start(models)  # REST; returns after SIGTERM/SIGINT once REST has drained
    finally:
        _stop_grpc_thread(grpc, grpc_loop, server.grace_period + 5)

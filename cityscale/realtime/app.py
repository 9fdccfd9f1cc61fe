"""The push gateway's HTTP API (FastAPI under uvicorn).

- ``POST /v1/push`` ``{"records": [{city, sensor_id, hour, count, sensor_name?, event_id?}, ...]}`` ->
  200 ``{accepted, unchanged, online_rows, latest_hour}`` once the counts are durable and online;
  422 (schema: one entry per bad record, with its index and reason), 409 (a sensor id of another city),
  413 (too many records) with nothing written; 503 when the feature server refused the rows (the counts
  are journaled: retrying is safe and idempotent).
- ``POST /v1/commit``: commit the journal into the raw zone now (``{"rows": n}``).
- ``GET /v1/stats``, ``GET /health``.

With ``realtime_token`` set, every request but ``GET /health`` (the kubelet's probe) must carry
``Authorization: Bearer <token>``, else a 401 ``{"error"}`` and nothing runs: the gateway writes the raw zone
and the online store, so in a cluster it must not take counts from whoever can reach its Service.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cityscale.config import Settings
from cityscale.realtime.gateway import Gateway, OnlineStoreUnavailable, PushRejected
from cityscale.realtime.records import PushRequest, to_rows

OPEN_PATHS = frozenset({"/health"})  # probed by the kubelet, which sends no token


def bearer_token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>``; compared in constant time (no timing oracle)."""
    scheme, _, value = (header or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _problems(exc: RequestValidationError) -> list[dict]:
    """Pydantic's errors as one entry per bad record: its index, the field and the reason."""
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "body"]
        record = loc[1] if len(loc) > 1 and loc[0] == "records" and isinstance(loc[1], int) else None
        field = ".".join(str(p) for p in (loc[2:] if record is not None else loc)) or "body"
        out.append({"record": record, "field": field, "error": err.get("msg", "invalid")})
    return out


def create_app(settings: Settings) -> FastAPI:
    holder: dict[str, Gateway] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(settings)
        gateway.start()
        holder["gateway"] = gateway
        try:
            yield
        finally:
            gateway.close()

    app = FastAPI(title="CityScale push gateway", lifespan=lifespan)

    if settings.realtime_token:

        @app.middleware("http")
        async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            # Before routing and body validation: an unauthenticated caller learns nothing about the API.
            if request.url.path in OPEN_PATHS or bearer_token_matches(
                request.headers.get("authorization"), settings.realtime_token
            ):
                return await call_next(request)
            return JSONResponse(
                {"error": "missing or invalid bearer token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _problems(exc)
        return JSONResponse({"error": "invalid push, nothing written", "problems": problems}, status_code=422)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/push")
    async def push(body: PushRequest) -> JSONResponse:
        if len(body.records) > settings.realtime_max_records:
            return JSONResponse(
                {"error": f"{len(body.records)} records exceed the limit of {settings.realtime_max_records} per push"},
                status_code=413,
            )
        rows, problems = to_rows(body)
        if problems:
            return JSONResponse({"error": "invalid push, nothing written", "problems": problems}, status_code=422)
        try:
            result = await run_in_threadpool(holder["gateway"].push, rows)
        except PushRejected as exc:
            return JSONResponse(
                {"error": "push refused, nothing written", "problems": exc.problems}, status_code=exc.status
            )
        except OnlineStoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(result.__dict__)

    @app.post("/v1/commit")
    async def commit() -> dict:
        return {"rows": await run_in_threadpool(holder["gateway"].commit)}

    @app.get("/v1/stats")
    def stats() -> dict:
        return holder["gateway"].stats()

    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Block serving the gateway; SIGTERM/SIGINT commit the journal before exiting."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)

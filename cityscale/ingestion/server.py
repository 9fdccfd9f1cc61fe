"""Airbyte-server mode: trigger a sync through ``airbyte-api``, wait for it, read what landed in GCS.

Production runs the connectors on an Airbyte server (self-hosted or Cloud) that writes Parquet to a
GCS landing area; the pipeline's ingest step then only has to (1) start the connection's sync job,
(2) poll it with backoff until it ends — cancelling it on timeout, so a retried step never races a
job left running (the orchestrator problem of apache/airflow#36070) — and (3) read the landed files
it has not processed yet into the raw zone. Which files were processed is kept in the ingestion
state next to the raw zone, so a rerun after a crash re-reads, and upserts, the same files.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from tenacity import RetryCallState, Retrying, retry_if_result, wait_exponential

from cityscale import storage
from cityscale.config import Settings

TERMINAL = {"succeeded", "failed", "cancelled"}


class AirbyteJobError(RuntimeError):
    """The sync job failed, was cancelled or timed out; the message carries what the server said."""


def make_client(settings: Settings) -> Any:
    """An ``airbyte_api.AirbyteAPI`` for a self-hosted server (client credentials) or Airbyte Cloud.

    The token URL must be absolute for self-hosted servers: the SDK's relative default resolves
    against the wrong base and the server answers 404.
    """
    import airbyte_api
    from airbyte_api import models

    if not settings.airbyte_server_url:
        raise ValueError("CITYSCALE_AIRBYTE_SERVER_URL is not set (OSS: http://HOST:8000/api/public/v1)")
    server_url = settings.airbyte_server_url.rstrip("/")
    security = None
    if settings.airbyte_client_id:
        security = models.Security(
            client_credentials=models.SchemeClientCredentials(
                client_id=settings.airbyte_client_id,
                client_secret=settings.airbyte_client_secret,
                token_url=settings.airbyte_token_url or f"{server_url}/applications/token",
            )
        )
    return airbyte_api.AirbyteAPI(server_url=server_url, security=security)


def paged(fetch: Callable[[int, int], Any], page: int = 100) -> Iterator[Any]:
    """Every item of a list endpoint (``fetch(limit, offset)`` returns a response with ``.data``)."""
    offset = 0
    while True:
        response = fetch(page, offset)
        items = list(response.data or []) if response is not None else []
        yield from items
        if len(items) < page or not getattr(response, "next", None):
            return
        offset += page


def find_connection(client: Any, workspace_id: str, name: str) -> str:
    from airbyte_api import api

    def fetch(limit: int, offset: int) -> Any:
        request = api.ListConnectionsRequest(workspace_ids=[workspace_id], limit=limit, offset=offset)
        return client.connections.list_connections(request=request).connections_response

    for conn in paged(fetch):
        if conn.name == name:
            return conn.connection_id
    raise AirbyteJobError(f"no Airbyte connection named {name!r} in workspace {workspace_id}: run make airbyte-apply")


def _describe(response: Any) -> str:
    job = response.job_response
    known = {"jobId", "status", "jobType", "connectionId", "startTime", "lastUpdatedAt", "duration"}
    try:  # anything the server says beyond the SDK's model (failure reasons on newer servers)
        extra = {k: v for k, v in response.raw_response.json().items() if k not in known}
    except ValueError:
        extra = {}
    parts = [f"job {job.job_id} {job.status.value}"]
    if job.duration:
        parts.append(f"after {job.duration}")
    parts += [f"{k}={v}" for k, v in extra.items() if v not in (None, "", [])]
    return ", ".join(parts)


@dataclass
class SyncJob:
    job_id: int
    status: str
    rows_synced: int | None
    polls: int
    seconds: float


def run_sync(
    client: Any,
    connection_id: str,
    timeout_s: float,
    poll_initial_s: float = 5.0,
    poll_max_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncJob:
    """Start a sync job and poll it (exponential backoff) until it ends; raise unless it succeeded."""
    from airbyte_api import api, models

    started = time.monotonic()
    created = client.jobs.create_job(
        request=models.JobCreateRequest(connection_id=connection_id, job_type=models.JobTypeEnum.SYNC)
    )
    job_id = created.job_response.job_id

    def running(response: Any) -> bool:
        return response.job_response.status.value not in TERMINAL

    def next_poll_past_deadline(state: RetryCallState) -> bool:
        return time.monotonic() - started + state.upcoming_sleep > timeout_s

    def cancel(state: RetryCallState) -> None:
        status = state.outcome.result().job_response.status.value
        client.jobs.cancel_job(request=api.CancelJobRequest(job_id=job_id))
        raise AirbyteJobError(f"Airbyte job {job_id} still {status} after {timeout_s:.0f} s: cancelled")

    poll = Retrying(
        retry=retry_if_result(running),
        wait=wait_exponential(multiplier=poll_initial_s, max=poll_max_s),
        stop=next_poll_past_deadline,
        retry_error_callback=cancel,
        sleep=sleep,
    )
    response = poll(lambda: client.jobs.get_job(request=api.GetJobRequest(job_id=job_id)))
    job = response.job_response
    if job.status.value != "succeeded":
        raise AirbyteJobError(f"Airbyte sync of connection {connection_id} failed: {_describe(response)}")
    polls = poll.statistics["attempt_number"]
    return SyncJob(job_id, job.status.value, job.rows_synced, polls, time.monotonic() - started)


def landed_files(landing_uri: str, namespace: str, stream: str) -> list[str]:
    """Parquet files the GCS destination wrote for a stream (``<landing>/<namespace>/<stream>/``), as URIs."""
    fs, root = storage.filesystem(storage.join(landing_uri, namespace, stream))
    if not fs.exists(root):
        return []
    return sorted(fs.unstrip_protocol(p) for p in fs.find(root) if p.endswith(".parquet"))


def read_landed(uris: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """Landed Parquet files -> records: Airbyte's ``_airbyte_*`` columns dropped, additional properties expanded.

    The destination writes declared fields as columns and undeclared ones (Auckland's per-sensor
    properties) into ``_airbyte_additional_properties``, a map column.
    """
    frames = []
    for uri in uris:
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as fh:
            table = pq.read_table(fh)
        df = table.to_pandas()
        extra = df.pop("_airbyte_additional_properties") if "_airbyte_additional_properties" in df else None
        if extra is not None and extra.notna().any():
            expanded = pd.DataFrame([dict(m) if m is not None else {} for m in extra], index=df.index)
            df = df.join(expanded)
        df = df.drop(columns=[c for c in df.columns if c.startswith("_airbyte_")])
        frames.append(df[columns] if columns else df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def unvalidated(model: Any, **fields: Any) -> Any:
    """Build an SDK request model without validation, keeping a custom source's configuration verbatim.

    airbyte-api 1.0.1 types a source configuration as a union of ~400 built-in connector models;
    validating a declarative source's configuration against it silently turns it into whichever
    built-in model it happens to fit (``{"start_date": ...}`` becomes ``SourceRkiCovid`` and loses
    every other field). Serialising the unvalidated model sends the dict as it is (pydantic warns
    once per union member: call the SDK inside ``quiet()``).
    """
    return model.model_construct(**fields)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydantic's serialisation warnings for ``unvalidated`` request models."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

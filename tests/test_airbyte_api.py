"""airbyte-api calls (apply, sync job, failure) against a loopback STAND-IN of the Airbyte public API.

The stand-in (tests/fixtures/airbyte/airbyte_api_standin.py) validates every request body with
the SDK's own models, so a field the real server would reject fails here too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.ingestion import apply as airbyte_apply
from cityscale.ingestion import connectors, server
from cityscale.ingestion.quality import clean_and_check
from cityscale.ingestion.run import ingest
from cityscale.schema import RAW_KEY
from tests.fixtures import melbourne_portal as replay
from tests.fixtures.airbyte.airbyte_api_standin import AirbyteStandIn, serve

ENV = {
    "CITYSCALE_LANDING_BUCKET": "cityscale-landing",
    "CITYSCALE_GCS_HMAC_KEY_ID": "GOOG1EXAMPLE",
    "CITYSCALE_GCS_HMAC_SECRET": "not-a-real-secret",
}


@pytest.fixture()
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    api = AirbyteStandIn()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    with serve(api) as url:
        settings = Settings(
            workdir=tmp_path,
            airbyte_server_url=url,
            airbyte_client_id=api.client_id,
            airbyte_client_secret=api.client_secret,
            airbyte_workspace_id="ws-1",
            airbyte_landing_uri=str(tmp_path / "landing"),
            airbyte_poll_initial_s=0.01,
            airbyte_poll_max_s=0.02,
        )
        yield api, settings


def test_apply_creates_then_updates_idempotently(standin) -> None:
    api, settings = standin
    first = airbyte_apply.apply(settings)
    assert api.rejected == []
    created = {(a.kind, a.action) for a in first}
    assert created == {
        ("definition", "created"),
        ("destination", "created"),
        ("source", "created"),
        ("connection", "created"),
    }
    assert (len(api.definitions), len(api.destinations), len(api.sources), len(api.connections)) == (2, 1, 2, 2)

    # The source configuration arrives verbatim (the SDK's union model would have rewritten it).
    melbourne = next(s for s in api.sources.values() if s["name"] == "cityscale-melbourne-pcs")
    expected = connectors.source_config(connectors.load_connection("melbourne", settings))
    assert melbourne["configuration"] == expected
    assert melbourne["configuration"]["dataset_id"] == "pedestrian-counting-system-monthly-counts-per-hour"
    conn = next(c for c in api.connections.values() if c["name"] == "cityscale-melbourne-pedestrian-counts")
    streams = {s["name"]: s for s in conn["configurations"]["streams"]}
    assert streams["hourly_counts"]["syncMode"] == "incremental_append"
    assert streams["hourly_counts"]["cursorField"] == ["timestamp_local"]
    assert conn["schedule"] == {"scheduleType": "cron", "cronExpression": "0 20 * * * ?"}
    assert conn["namespaceFormat"] == "melbourne" and conn["sourceId"] == melbourne["sourceId"]
    destination = next(iter(api.destinations.values()))
    assert destination["configuration"]["format"]["format_type"] == "Parquet"
    assert destination["configuration"]["credential"]["hmac_key_secret"] == ENV["CITYSCALE_GCS_HMAC_SECRET"]

    second = airbyte_apply.apply(settings)
    assert api.rejected == []
    assert (len(api.definitions), len(api.destinations), len(api.sources), len(api.connections)) == (2, 1, 2, 2)
    assert {a.action for a in second if a.kind == "definition"} == {"unchanged"}
    assert {a.id for a in second} == {a.id for a in first}

    # A changed manifest is pushed as an update of the same definition.
    definition = next(d for d in api.definitions.values() if d["name"] == "cityscale-auckland-pedestrian-counts")
    definition["manifest"] = {"stale": True}
    third = airbyte_apply.apply(settings, ["auckland"])
    assert ("definition", "updated") in {(a.kind, a.action) for a in third}
    assert definition["version"] == 2 and definition["manifest"]["type"] == "DeclarativeSource"


def test_missing_secret_is_an_error_not_an_empty_value(standin, monkeypatch: pytest.MonkeyPatch) -> None:
    api, settings = standin
    monkeypatch.delenv("CITYSCALE_GCS_HMAC_SECRET")
    with pytest.raises(KeyError, match="CITYSCALE_GCS_HMAC_SECRET"):
        airbyte_apply.apply(settings)
    assert api.destinations == {}


def test_sync_job_polls_with_backoff_until_it_succeeds(standin) -> None:
    api, settings = standin
    airbyte_apply.apply(settings)
    api.job_scripts.append(
        [
            {"status": "pending"},
            {"status": "running"},
            {"status": "incomplete"},
            {"status": "succeeded", "rowsSynced": 1234},
        ]
    )
    client = server.make_client(settings)
    connection_id = server.find_connection(client, "ws-1", "cityscale-melbourne-pedestrian-counts")
    waits: list[float] = []
    job = server.run_sync(client, connection_id, timeout_s=60, poll_initial_s=1, poll_max_s=3, sleep=waits.append)
    assert (job.status, job.rows_synced, job.polls) == ("succeeded", 1234, 4)
    assert waits == [1, 2, 3]  # exponential, capped
    posted = [body for method, path, body in api.log if (method, path) == ("POST", "/jobs")]
    assert posted == [{"connectionId": connection_id, "jobType": "sync"}]


def test_failed_job_raises_with_the_servers_error(standin) -> None:
    api, settings = standin
    airbyte_apply.apply(settings)
    api.job_scripts.append(
        [
            {"status": "running"},
            {"status": "failed", "duration": "PT2M", "failureReason": "HTTP 503 from data.melbourne.vic.gov.au"},
        ]
    )
    with pytest.raises(server.AirbyteJobError, match=r"job 1 failed, after PT2M.*HTTP 503 from data\.melbourne"):
        ingest("airbyte-server", "melbourne", settings.resolved_store_uri, settings=settings)
    assert raw_zone.read(settings.resolved_store_uri).empty


def test_timeout_cancels_the_job(standin) -> None:
    api, settings = standin
    airbyte_apply.apply(settings)
    api.job_scripts.append([{"status": "running"}] * 50)
    client = server.make_client(settings)
    connection_id = server.find_connection(client, "ws-1", "cityscale-melbourne-pedestrian-counts")
    with pytest.raises(server.AirbyteJobError, match="cancelled"):
        server.run_sync(client, connection_id, timeout_s=0.05, poll_initial_s=0.02, poll_max_s=0.02)
    assert ("DELETE", "/jobs/1") in [(m, p) for m, p, _ in api.log]
    assert api.jobs[1]["status"] == "cancelled"


def _land_like_gcs_destination(landing: Path, namespace: str, stream: str, records: pd.DataFrame, part: int) -> None:
    """Write records as the GCS destination does: Parquet with Airbyte's meta columns, one file per flush."""
    folder = landing / namespace / stream
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(
        records.assign(
            _airbyte_raw_id=[f"id-{i}" for i in range(len(records))], _airbyte_extracted_at=1_700_000_000_000
        ),
        preserve_index=False,
    )
    pq.write_table(table, folder / f"2025_01_01_1700000000{part:03d}_0.parquet")


def test_airbyte_server_mode_reads_what_landed_once(standin, sample_rows: pd.DataFrame) -> None:
    api, settings = standin
    airbyte_apply.apply(settings)
    landing = Path(settings.airbyte_landing_uri)
    week = sample_rows[
        (sample_rows["timestamp_local"] >= "2022-10-01") & (sample_rows["timestamp_local"] < "2022-10-08")
    ]
    records = replay.melbourne_records(week)
    records["timestamp_local"] = pd.to_datetime(records["sensing_date"]) + pd.to_timedelta(records["hourday"], unit="h")
    records["timestamp_local"] = records["timestamp_local"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    batches = iter([records.iloc[: len(records) // 2], records.iloc[len(records) // 2 :]])
    parts = iter(range(100))

    def land(connection: dict) -> None:
        _land_like_gcs_destination(landing, connection["namespaceFormat"], "hourly_counts", next(batches), next(parts))

    api.on_job_created = land
    store = settings.resolved_store_uri
    first = ingest("airbyte-server", "melbourne", store, settings=settings)
    assert api.rejected == []
    assert first.records_read == len(records) // 2
    second = ingest("airbyte-server", "melbourne", store, settings=settings)
    assert second.records_read == len(records) - len(records) // 2  # only the new file
    raw = raw_zone.read(store)
    expected, report = clean_and_check(week.reset_index(drop=True))
    assert report.dst_nonexistent_hours_dropped == 12  # 2022-10-02 02:00 does not exist in Melbourne
    assert len(raw) == len(expected) and not raw.duplicated(RAW_KEY).any()
    assert set(raw["sensor_id"]) == set(week["sensor_id"])

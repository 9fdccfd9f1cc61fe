"""``make deploy`` (pipelines/publish.py) against a local stand-in of the KFP v2beta1 REST API.

``KfpApiStandIn`` serves the endpoints ``kfp.Client`` calls on 127.0.0.1 (free port), keeps pipelines,
versions, experiments and recurring runs in memory, records every request, and builds each request body
into its ``kfp_server_api`` model strictly (unknown fields, wrong types and bad enum values are a 400, as
the real grpc-gateway does), then checks what the real server would reject (unknown experiment or
version, duplicate names, a cron that is not 6 fields). Responses are serialised from the same models.
No traffic leaves the machine; each test starts and stops its own server.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import kfp_server_api
import pytest
import yaml
from typer.testing import CliRunner

from cityscale.cli.main import app
from pipelines.compile import PIPELINES
from pipelines.publish import PublishConfig, PublishError, publish

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "pipelines" / "compiled"
REGISTRY = "us-central1-docker.pkg.dev/cityscale-dev/cityscale"
PIPELINE_CONFIG = {  # the shape of terraform output `pipeline_config` (terraform/modules/cityscale/outputs.tf)
    "project_id": "cityscale-dev",
    "region": "us-central1",
    "namespace": "cityscale",
    "registry": REGISTRY,
    "pipeline_root": "gs://cityscale-dev-pipeline-root",
    "raw_uri": "gs://cityscale-dev-raw",
    "features_uri": "gs://cityscale-dev-features",
    "models_uri": "gs://cityscale-dev-models",
    "trainer_runtime": "torch-distributed",
    "model_name": "cityscale",
    "gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "gpus_per_node": 1,
}


# --- The stand-in ---------------------------------------------------------------------------------


class ShapeError(ValueError):
    """A request body that the real KFP API would reject as malformed."""


def parse_model(type_name: str, data: Any, where: str = "body") -> Any:
    """Build the kfp_server_api model ``type_name`` from JSON ``data``, strictly."""
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise ShapeError(f"{where}: expected a list")
        return [parse_model(type_name[5:-1], v, f"{where}[{i}]") for i, v in enumerate(data)]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise ShapeError(f"{where}: expected an object")
        return data
    if type_name == "object":
        return data
    if type_name == "str":  # int64 fields (max_concurrency) are strings in the swagger; protojson takes numbers too
        if isinstance(data, bool) or not isinstance(data, str | int):
            raise ShapeError(f"{where}: expected a string, got {data!r}")
        return data
    if type_name == "bool":
        if not isinstance(data, bool):
            raise ShapeError(f"{where}: expected a boolean, got {data!r}")
        return data
    if type_name == "int":
        if isinstance(data, bool) or not isinstance(data, int):
            raise ShapeError(f"{where}: expected an integer")
        return data
    if type_name == "datetime":
        datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        return data
    klass = getattr(kfp_server_api.models, type_name)
    if not klass.openapi_types:  # an enum
        if data not in klass.allowable_values:
            raise ShapeError(f"{where}: {data!r} is not one of {klass.allowable_values}")
        return data
    if not isinstance(data, dict):
        raise ShapeError(f"{where}: expected a {type_name} object")
    by_json = {v: k for k, v in klass.attribute_map.items()}
    unknown = set(data) - set(by_json)
    if unknown:
        raise ShapeError(f"{where}: unknown field(s) {sorted(unknown)} for {type_name}")
    return klass(
        **{by_json[k]: parse_model(klass.openapi_types[by_json[k]], v, f"{where}.{k}") for k, v in data.items()}
    )


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class KfpApiStandIn:
    """An in-memory KFP v2beta1 API on 127.0.0.1 that records requests and checks their shapes."""

    pipelines: dict[str, kfp_server_api.V2beta1Pipeline] = field(default_factory=dict)
    versions: dict[str, list[kfp_server_api.V2beta1PipelineVersion]] = field(default_factory=dict)
    experiments: dict[str, kfp_server_api.V2beta1Experiment] = field(default_factory=dict)
    recurring_runs: dict[str, kfp_server_api.V2beta1RecurringRun] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    failures: list[tuple[str, str, int, str]] = field(default_factory=list)  # method, path prefix, status, message
    url: str = ""

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._serializer = kfp_server_api.ApiClient()

    def __enter__(self) -> KfpApiStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                split = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    with standin._lock:
                        status, payload = standin.handle(
                            self.command, split.path, query, body, self.headers.get("Content-Type", "")
                        )
                except ApiError as exc:
                    status, payload = exc.status, {"code": exc.code, "message": exc.message, "details": []}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # Recording helpers for the tests.
    def fail(self, method: str, path_prefix: str, status: int, message: str) -> None:
        """Answer the next matching request with an error, as the real server does."""
        self.failures.append((method, path_prefix, status, message))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)]

    def mark(self) -> int:
        return len(self.requests)

    def writes_since(self, mark: int) -> list[Recorded]:
        return [r for r in self.requests[mark:] if r.method != "GET"]

    # The API.
    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def _now(self) -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    def _out(self, model: Any) -> Any:
        return self._serializer.sanitize_for_serialization(model)

    @staticmethod
    def _filtered(items: list[Any], query: dict[str, str]) -> list[Any]:
        if "filter" not in query:
            return items
        predicates = json.loads(query["filter"]).get("predicates", [])
        for p in predicates:
            if p.get("key") != "display_name" or p.get("operation") not in ("EQUALS", 1):
                raise ApiError(400, f"stand-in supports display_name EQUALS filters only, got {p}")
            value = p.get("stringValue", p.get("string_value"))
            items = [i for i in items if i.display_name == value]
        return items

    def _upload(self, body: bytes, content_type: str) -> tuple[str, dict[str, Any] | None]:
        message = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        files = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }
        if set(files) != {"uploadfile"}:
            raise ApiError(400, f"multipart form must hold exactly 'uploadfile', got {sorted(files)}")
        docs = [d for d in yaml.safe_load_all(files["uploadfile"]) if d is not None]
        if not docs or "pipelineInfo" not in docs[0] or "root" not in docs[0]:
            raise ApiError(400, "uploaded file is not a compiled pipeline spec")
        # Like the real server, a multi-document YAML comes back as {pipeline_spec, platform_spec}.
        spec = {"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0]
        return docs[0]["pipelineInfo"]["name"], spec

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, ctype: str) -> tuple[int, Any]:
        parsed_body = json.loads(body) if body and ctype.startswith("application/json") else None
        self.requests.append(Recorded(method, path, query, parsed_body))
        for i, (m, prefix, status, message) in enumerate(self.failures):
            if m == method and path.startswith(prefix):
                del self.failures[i]
                raise ApiError(status, message, code=13)
        try:
            return self._route(method, path, query, body, ctype, parsed_body)
        except ShapeError as exc:
            raise ApiError(400, f"invalid request body: {exc}") from None

    def _route(
        self, method: str, path: str, query: dict[str, str], body: bytes, ctype: str, data: Any
    ) -> tuple[int, Any]:
        api = "/apis/v2beta1"
        parts = path.removeprefix(api).strip("/").split("/")
        if method == "GET" and path == f"{api}/healthz":
            return 200, self._out(kfp_server_api.V2beta1GetHealthzResponse(multi_user=False, pipeline_store="database"))

        if path == f"{api}/pipelines/upload" and method == "POST":
            name = query.get("name")
            if not name:
                raise ApiError(400, "pipeline name is required")
            if any(p.display_name == name for p in self.pipelines.values()):
                raise ApiError(409, f"pipeline {name} already exists", code=6)
            _, spec = self._upload(body, ctype)
            pipeline = kfp_server_api.V2beta1Pipeline(
                pipeline_id=self._new_id("pipeline"),
                name=name,
                display_name=name,
                description=query.get("description", ""),
                created_at=self._now(),
            )
            self.pipelines[pipeline.pipeline_id] = pipeline
            self.versions[pipeline.pipeline_id] = [  # KFP names the first version after the pipeline
                kfp_server_api.V2beta1PipelineVersion(
                    pipeline_id=pipeline.pipeline_id,
                    pipeline_version_id=self._new_id("version"),
                    name=name,
                    display_name=name,
                    description=pipeline.description,
                    created_at=self._now(),
                    pipeline_spec=spec,
                )
            ]
            return 200, self._out(pipeline)
        if path == f"{api}/pipelines/upload_version" and method == "POST":
            pipeline_id, name = query.get("pipelineid"), query.get("name")
            if pipeline_id not in self.pipelines or not name:
                raise ApiError(400 if not name else 404, f"pipeline {pipeline_id} not found or version name empty")
            if any(v.display_name == name for v in self.versions[pipeline_id]):
                raise ApiError(409, f"version {name} already exists in pipeline {pipeline_id}", code=6)
            _, spec = self._upload(body, ctype)
            version = kfp_server_api.V2beta1PipelineVersion(
                pipeline_id=pipeline_id,
                pipeline_version_id=self._new_id("version"),
                name=name,
                display_name=name,
                description=query.get("description", ""),
                created_at=self._now(),
                pipeline_spec=spec,
            )
            self.versions[pipeline_id].append(version)
            return 200, self._out(version)
        if parts[0] == "pipelines" and method == "GET":
            if len(parts) == 1:
                items = self._filtered(list(self.pipelines.values()), query)
                return 200, self._out(
                    kfp_server_api.V2beta1ListPipelinesResponse(pipelines=items, total_size=len(items))
                )
            if len(parts) == 3 and parts[2] == "versions":
                if parts[1] not in self.versions:
                    raise ApiError(404, f"pipeline {parts[1]} not found", code=5)
                items = self._filtered(list(self.versions[parts[1]]), query)
                if query.get("sort_by") == "created_at desc":
                    items = items[::-1]
                elif query.get("sort_by"):
                    raise ApiError(400, f"unsupported sort_by {query['sort_by']}")
                items = items[: int(query.get("page_size") or 10)]
                return 200, self._out(
                    kfp_server_api.V2beta1ListPipelineVersionsResponse(pipeline_versions=items, total_size=len(items))
                )

        if parts[0] == "experiments":
            if method == "GET" and len(parts) == 1:
                items = self._filtered(list(self.experiments.values()), query)
                return 200, self._out(
                    kfp_server_api.V2beta1ListExperimentsResponse(experiments=items, total_size=len(items))
                )
            if method == "POST" and len(parts) == 1:
                experiment = parse_model("V2beta1Experiment", data)
                if not experiment.display_name:
                    raise ApiError(400, "experiment display_name is required")
                if any(e.display_name == experiment.display_name for e in self.experiments.values()):
                    raise ApiError(409, f"experiment {experiment.display_name} already exists", code=6)
                experiment.experiment_id, experiment.created_at = self._new_id("experiment"), self._now()
                experiment.storage_state = "AVAILABLE"
                self.experiments[experiment.experiment_id] = experiment
                return 200, self._out(experiment)

        if parts[0] == "recurringruns":
            if method == "GET" and len(parts) == 1:
                items = [r for r in self.recurring_runs.values() if r.experiment_id == query.get("experiment_id")]
                items = self._filtered(items, query)
                return 200, self._out(
                    kfp_server_api.V2beta1ListRecurringRunsResponse(recurring_runs=items, total_size=len(items))
                )
            if method == "POST" and len(parts) == 1:
                return 200, self._out(self._create_recurring_run(parse_model("V2beta1RecurringRun", data)))
            if len(parts) == 2:
                run_id, _, verb = parts[1].partition(":")
                if run_id not in self.recurring_runs:
                    raise ApiError(404, f"recurring run {run_id} not found", code=5)
                if method == "POST" and verb == "disable":
                    self.recurring_runs[run_id].mode, self.recurring_runs[run_id].status = "DISABLE", "DISABLED"
                    return 200, {}
                if method == "DELETE" and not verb:
                    del self.recurring_runs[run_id]
                    return 200, {}
        raise ApiError(404, f"stand-in has no route {method} {path}", code=5)

    def _create_recurring_run(self, run: kfp_server_api.V2beta1RecurringRun) -> kfp_server_api.V2beta1RecurringRun:
        if not run.display_name:
            raise ApiError(400, "recurring run display_name is required")
        if run.experiment_id not in self.experiments:
            raise ApiError(404, f"experiment {run.experiment_id} not found", code=5)
        ref = run.pipeline_version_reference
        if ref is None or not any(
            v.pipeline_version_id == ref.pipeline_version_id for v in self.versions.get(ref.pipeline_id, [])
        ):
            raise ApiError(400, f"pipeline_version_reference {ref} does not name an existing version")
        if run.pipeline_spec is not None:
            raise ApiError(400, "pipeline_spec and pipeline_version_reference are exclusive")
        cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
        if len(cron.split()) != 6:
            raise ApiError(400, f"invalid cron {cron!r}: 6 fields expected")
        if run.mode not in ("ENABLE", "DISABLE"):
            raise ApiError(400, f"mode {run.mode!r} must be ENABLE or DISABLE")
        run.recurring_run_id, run.created_at, run.updated_at = self._new_id("recurringrun"), self._now(), self._now()
        run.status = "ENABLED" if run.mode == "ENABLE" else "DISABLED"
        run.max_concurrency = str(run.max_concurrency)  # int64 comes back as a JSON string
        run.service_account = run.service_account or "pipeline-runner"  # the server fills its default runner SA
        self.recurring_runs[run.recurring_run_id] = run
        return run


# --- Fixtures -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads (and may write) ~/.config/kfp/context.json: keep tests away from the user's."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))


@pytest.fixture()
def standin() -> Iterator[KfpApiStandIn]:
    with KfpApiStandIn() as api:
        yield api


def compiled_for(tmp_path: Path, sha: str) -> Path:
    """The committed YAML with the image `make deploy` compiles in (REGISTRY/cityscale:SHA).

    Compiling in-process cannot change the image once ``components`` is imported, and the rewrite is
    exactly what ``--compile`` produces (the image is the only difference).
    """
    out = tmp_path / f"compiled-{sha}"
    out.mkdir()
    for path in COMMITTED.glob("*.yaml"):
        (out / path.name).write_text(
            path.read_text().replace("image: cityscale:dev", f"image: {REGISTRY}/cityscale:{sha}")
        )
    return out


def config_for(tmp_path: Path, host: str, sha: str = "abc123def456", **overrides: Any) -> PublishConfig:
    compiled = tmp_path / f"compiled-{sha}"
    values = dict(
        git_sha=sha,
        compiled_dir=compiled if compiled.is_dir() else compiled_for(tmp_path, sha),
        schedules_path=REPO / "pipelines" / "schedules.yaml",
        pipeline_config=PIPELINE_CONFIG,
        env="dev",
        host=host,
        expected_image=f"{REGISTRY}/cityscale:{sha}",
    )
    values.update(overrides)
    return PublishConfig(**values)


def runs_by_name(api: KfpApiStandIn) -> dict[str, kfp_server_api.V2beta1RecurringRun]:
    return {r.display_name: r for r in api.recurring_runs.values()}


# --- Tests ----------------------------------------------------------------------------------------

PIPELINE_NAMES = {pipeline.name for pipeline in PIPELINES.values()}  # every compiled pipeline is uploaded


def test_first_deploy_uploads_pipelines_and_creates_the_recurring_runs(tmp_path, standin, capsys) -> None:
    result = publish(config_for(tmp_path, standin.url))

    assert {p.display_name for p in standin.pipelines.values()} == PIPELINE_NAMES
    assert len(standin.calls("POST", "/apis/v2beta1/pipelines/upload")) == len(PIPELINE_NAMES)
    assert [e.display_name for e in standin.experiments.values()] == ["cityscale-dev"]
    runs = runs_by_name(standin)
    assert set(runs) == {"cityscale-ingestion-hourly", "cityscale-training-weekly", "cityscale-monitoring-daily"}
    hourly, weekly = runs["cityscale-ingestion-hourly"], runs["cityscale-training-weekly"]
    assert hourly.trigger.cron_schedule.cron == "0 10 * * * *"
    assert hourly.runtime_config.parameters == {
        "store_uri": "gs://cityscale-dev-raw",
        "ingest_mode": "embedded",
        "source": "melbourne",
    }
    assert weekly.runtime_config.parameters["registry_uri"] == "gs://cityscale-dev-models"
    assert weekly.runtime_config.pipeline_root == "gs://cityscale-dev-pipeline-root"
    assert (hourly.mode, hourly.no_catchup, hourly.max_concurrency) == ("ENABLE", True, "1")
    assert weekly.runtime_config.parameters["test_start"] == "last:28d"
    assert runs["cityscale-monitoring-daily"].runtime_config.parameters == {
        "store_uri": "gs://cityscale-dev-raw",
        "registry_uri": "gs://cityscale-dev-models",
        "retrain_test_start": "last:28d",
        "deploy_target": "kserve",
    }
    for name, key in (
        ("cityscale-ingestion-hourly", "ingestion"),
        ("cityscale-training-weekly", "training"),
        ("cityscale-monitoring-daily", "monitoring"),
    ):
        ref = runs[name].pipeline_version_reference
        assert (ref.pipeline_id, ref.pipeline_version_id) == result.pipelines[key]
    # Every request parsed into its kfp_server_api model and passed the server-side checks.
    assert all(r.path.startswith("/apis/v2beta1/") for r in standin.requests)
    created = standin.calls("POST", "/apis/v2beta1/recurringruns")[0].body
    assert set(created) <= set(kfp_server_api.V2beta1RecurringRun.attribute_map.values())
    assert "plan (applying)" in capsys.readouterr().out


def test_a_schedule_whose_pipeline_is_not_compiled_is_skipped(tmp_path, standin, capsys) -> None:
    (compiled_for(tmp_path, "abc123def456") / "monitoring.yaml").unlink()
    result = publish(config_for(tmp_path, standin.url))

    assert set(runs_by_name(standin)) == {"cityscale-ingestion-hourly", "cityscale-training-weekly"}
    out = capsys.readouterr().out
    assert "cityscale-monitoring-daily: SKIPPED" in out and "monitoring.yaml does not exist" in out
    assert "skip recurring-run cityscale-monitoring-daily" in result.actions


def test_second_deploy_of_the_same_commit_changes_nothing(tmp_path, standin) -> None:
    publish(config_for(tmp_path, standin.url))
    before = {rid: r.pipeline_version_reference.pipeline_version_id for rid, r in standin.recurring_runs.items()}
    mark = standin.mark()

    result = publish(config_for(tmp_path, standin.url))

    assert standin.writes_since(mark) == [], "an idempotent deploy only reads"
    assert {
        rid: r.pipeline_version_reference.pipeline_version_id for rid, r in standin.recurring_runs.items()
    } == before
    assert sum(len(v) for v in standin.versions.values()) == len(PIPELINE_NAMES)
    assert sorted(a.split()[0] for a in result.actions if "recurring-run" in a) == ["keep", "keep", "keep"]


def test_a_new_commit_uploads_a_version_named_by_sha_and_repoints_the_runs(tmp_path, standin, capsys) -> None:
    publish(config_for(tmp_path, standin.url, sha="abc123def456"))
    old_ids = set(standin.recurring_runs)
    mark = standin.mark()

    result = publish(config_for(tmp_path, standin.url, sha="0123456789ab"))

    uploads = [r for r in standin.writes_since(mark) if r.path == "/apis/v2beta1/pipelines/upload_version"]
    assert sorted(r.query["name"] for r in uploads) == ["0123456789ab"] * len(PIPELINE_NAMES)
    first_uploads = standin.calls("POST", "/apis/v2beta1/pipelines/upload")[len(PIPELINE_NAMES) :]
    assert not first_uploads, "existing pipelines are not re-created"
    runs = runs_by_name(standin)
    assert len(runs) == 3 and not old_ids & set(standin.recurring_runs)
    for name, key in (("cityscale-ingestion-hourly", "ingestion"), ("cityscale-training-weekly", "training")):
        new_version = [v for v in standin.versions[result.pipelines[key][0]] if v.display_name == "0123456789ab"]
        assert runs[name].pipeline_version_reference.pipeline_version_id == new_version[0].pipeline_version_id
    # Disable before delete, delete before create, for each recreated run.
    writes = [(r.method, r.path.rsplit("/", 1)[-1]) for r in standin.writes_since(mark) if "recurringruns" in r.path]
    for rid in old_ids:
        assert writes.index(("POST", f"{rid}:disable")) < writes.index(("DELETE", rid))
    assert writes[-1] == ("POST", "recurringruns")
    assert "the KFP API cannot update a recurring run" in capsys.readouterr().out


def test_a_changed_schedule_recreates_only_that_run(tmp_path, standin, capsys) -> None:
    publish(config_for(tmp_path, standin.url))
    kept = runs_by_name(standin)["cityscale-training-weekly"].recurring_run_id
    changed = runs_by_name(standin)["cityscale-ingestion-hourly"].recurring_run_id
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        (REPO / "pipelines" / "schedules.yaml").read_text().replace('"0 10 * * * *"', '"0 20 * * * *"')
    )
    mark = standin.mark()

    publish(config_for(tmp_path, standin.url, schedules_path=schedules))

    runs = runs_by_name(standin)
    assert runs["cityscale-training-weekly"].recurring_run_id == kept
    assert runs["cityscale-ingestion-hourly"].recurring_run_id != changed
    assert runs["cityscale-ingestion-hourly"].trigger.cron_schedule.cron == "0 20 * * * *"
    writes = [(r.method, r.path) for r in standin.writes_since(mark)]
    assert writes == [
        ("POST", f"/apis/v2beta1/recurringruns/{changed}:disable"),
        ("DELETE", f"/apis/v2beta1/recurringruns/{changed}"),
        ("POST", "/apis/v2beta1/recurringruns"),
    ]
    assert "cron '0 10 * * * *' -> '0 20 * * * *'" in capsys.readouterr().out


def test_a_run_paused_by_hand_is_re_enabled_by_the_repo_definition(tmp_path, standin) -> None:
    publish(config_for(tmp_path, standin.url))
    run = runs_by_name(standin)["cityscale-training-weekly"]
    run.mode = "DISABLE"

    publish(config_for(tmp_path, standin.url))

    assert runs_by_name(standin)["cityscale-training-weekly"].mode == "ENABLE"


def test_dry_run_against_the_server_only_reads_and_says_what_would_change(tmp_path, standin, capsys) -> None:
    publish(config_for(tmp_path, standin.url))
    mark = standin.mark()

    result = publish(config_for(tmp_path, standin.url, sha="0123456789ab", dry_run=True))

    assert standin.writes_since(mark) == []
    assert "would upload pipeline-version cityscale-training@0123456789ab" in result.actions
    assert "would recreate recurring-run cityscale-training-weekly" in result.actions
    assert "DRY RUN, nothing will change" in capsys.readouterr().out


def test_offline_dry_run_through_the_cli_prints_the_plan(tmp_path, monkeypatch) -> None:
    compiled = compiled_for(tmp_path, "abc123def456")
    config = tmp_path / "dev.pipeline-config.json"
    config.write_text(json.dumps(PIPELINE_CONFIG))
    for name in ("KFP_HOST", "CITYSCALE_KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("GIT_SHA", "abc123def456")
    monkeypatch.setenv("REGISTRY", REGISTRY)

    result = CliRunner().invoke(app, ["deploy", "--compiled-dir", str(compiled), "--pipeline-config", str(config)])

    out = result.stdout
    assert result.exit_code == 0, result.output
    assert "no KFP_HOST: offline plan" in out
    assert "offline dry run (no KFP_HOST)" in out and "uploads version abc123def456" in out
    assert "pipeline cityscale-ingestion <- " in out
    assert "recurring run cityscale-ingestion-hourly: cityscale-ingestion at cron '0 10 * * * *'" in out
    assert '"store_uri": "gs://cityscale-dev-raw"' in out
    assert "recurring run cityscale-monitoring-daily: cityscale-monitoring at cron '0 30 15 * * *'" in out


def test_an_api_error_surfaces_with_a_clear_message(tmp_path, standin, monkeypatch) -> None:
    standin.fail("POST", "/apis/v2beta1/recurringruns", 500, "scheduledworkflow CRD is not installed")
    with pytest.raises(PublishError) as error:
        publish(config_for(tmp_path, standin.url))
    message = str(error.value)
    assert "while creating recurring run cityscale-ingestion-hourly" in message
    assert "HTTP 500" in message and "scheduledworkflow CRD is not installed" in message

    # Through `cityscale deploy`: exit status 1 and the message on stderr, no traceback.
    standin.fail("POST", "/apis/v2beta1/pipelines/upload_version", 403, "user is not authorized to upload")
    config = tmp_path / "dev.pipeline-config.json"
    config.write_text(json.dumps(PIPELINE_CONFIG))
    monkeypatch.setenv("KFP_HOST", standin.url)
    monkeypatch.setenv("GIT_SHA", "fedcba987654")
    monkeypatch.setenv("REGISTRY", REGISTRY)
    monkeypatch.delenv("DRY_RUN", raising=False)
    args = ["--compiled-dir", str(compiled_for(tmp_path, "fedcba987654")), "--pipeline-config", str(config)]
    result = CliRunner().invoke(app, ["deploy", *args])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a clean exit, not an uncaught error
    err = result.stderr
    assert "deploy: ERROR: KFP API error while uploading version fedcba987654 of pipeline cityscale-" in err
    assert "HTTP 403" in err and "user is not authorized to upload" in err


def test_an_unreachable_endpoint_says_how_to_reach_it(tmp_path) -> None:
    with KfpApiStandIn() as api:
        url = api.url  # a loopback port that is closed once the stand-in stops
    with pytest.raises(PublishError, match="not reachable.*port-forward svc/ml-pipeline"):
        publish(config_for(tmp_path, url))


def test_a_version_of_this_commit_with_other_content_is_refused(tmp_path, standin) -> None:
    publish(config_for(tmp_path, standin.url, sha="abc123def456"))
    publish(config_for(tmp_path, standin.url, sha="0123456789ab"))
    (tmp_path / "dirty").mkdir()
    dirty = compiled_for(tmp_path / "dirty", "0123456789ab")
    path = dirty / "ingestion.yaml"
    path.write_text(path.read_text().replace("Ingest counts", "Ingest counts (edited)"))

    with pytest.raises(PublishError, match="already has a version 0123456789ab with a different spec"):
        publish(config_for(tmp_path, standin.url, sha="0123456789ab", compiled_dir=dirty))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('"0 10 * * * *"', '"10 * * * *"'), "must have 6 fields"),
        (("      source: melbourne\n", "      source: melbourne\n      max_epochs: 3\n"), "max_epochs is not an input"),
        (
            ("      store_uri: ${raw_uri}\n      ingest_mode", "      ingest_mode"),
            "required input store_uri is not set",
        ),
        (("${models_uri}", "${model_uri}"), r"uses \$\{model_uri\}, which is not a key of the pipeline config"),
    ],
)
def test_an_invalid_plan_fails_before_any_request(tmp_path, standin, edit, expected) -> None:
    text = (REPO / "pipelines" / "schedules.yaml").read_text()
    assert edit[0] in text
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(PublishError, match=expected):
        publish(config_for(tmp_path, standin.url, schedules_path=schedules))
    assert standin.requests == []


def test_pipelines_compiled_with_another_image_are_refused(tmp_path, standin) -> None:
    with pytest.raises(PublishError, match="runs \\['cityscale:dev'\\]"):
        publish(config_for(tmp_path, standin.url, compiled_dir=COMMITTED))
    assert standin.requests == []


def test_the_stand_in_rejects_malformed_bodies(standin) -> None:
    """The shape checks are real: an unknown field or a bad enum is a 400, like the KFP API."""
    client = kfp_server_api.ApiClient(kfp_server_api.Configuration(host=standin.url))
    with pytest.raises(kfp_server_api.ApiException) as error:
        client.call_api(
            "/apis/v2beta1/experiments",
            "POST",
            body={"display_name": "x", "owner": "me"},
            header_params={"Content-Type": "application/json"},
            _return_http_data_only=True,
        )
    assert error.value.status == 400 and "unknown field(s) ['owner']" in str(error.value.body)
    with pytest.raises(ShapeError, match="not one of"):
        parse_model("V2beta1RecurringRun", {"display_name": "x", "mode": "ON"})

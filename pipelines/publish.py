"""Upload the compiled pipelines to Kubeflow Pipelines and apply the recurring runs (``cityscale deploy``).

``make deploy`` runs it (``python -m pipelines.publish`` runs the same typer command, ``pipelines/cli.py``).

What it does, in this order, printing every decision before it acts:

1. ``--compile``: compile every pipeline into ``--compiled-dir`` (``build/pipelines/``) with the image of
   this commit (``CITYSCALE_IMAGE=$REGISTRY/cityscale:$GIT_SHA``), and check that every task uses it. A
   mutable reference (``:dev``, ``:latest``, no tag) is refused: a recurring run would start whatever was
   pushed last. Without ``REGISTRY`` (dry run only) the image is ``cityscale:$GIT_SHA``.
   ``pipelines/compiled/`` keeps the ``cityscale:dev`` image so its committed-YAML test stays stable.
2. For each ``<key>.yaml`` there: create the pipeline if it is missing (KFP's upload names that first
   version after the pipeline; its description records the commit), else upload a new version named by
   the git SHA. A version that already holds this commit (same name, or the newest one with the identical
   spec) is reused, so running deploy twice uploads nothing new.
3. Find or create the experiment of ``pipelines/schedules.yaml``.
4. For each recurring run there (matched by name inside that experiment): create it if missing, leave it if
   its spec (schedule, parameters, pipeline version, concurrency, catch-up, root, enabled) is unchanged,
   otherwise disable it, delete it and create it again. The KFP v2beta1 API has no update call for
   recurring runs (RecurringRunService offers Create/Get/List/Enable/Disable/Delete only), so recreating
   is the only way to change one. Disabling first means it cannot fire between our decision and the
   delete, and a failed delete leaves it paused rather than running the old spec beside the new one.
   An entry whose pipeline has no compiled YAML (a key that ``pipelines/compile.py`` does not compile) is
   skipped with a message.

``DRY_RUN=1`` prints the plan and changes nothing: with ``KFP_HOST`` set it reads the current state (GET
requests only) and says exactly what would change; without it, it prints the plan offline.

Configuration, all documented in docs/runbook.md: ``KFP_HOST`` (required unless dry run), ``KFP_TOKEN``
and ``KFP_NAMESPACE`` (optional; read through ``cityscale.config.Settings``), ``ENV``, ``GIT_SHA``,
``REGISTRY``, ``DRY_RUN``, and the pipeline parameters from ``build/terraform/$ENV.pipeline-config.json``
(terraform output ``pipeline_config``; ``PIPELINE_CONFIG`` overrides the path).
"""

from __future__ import annotations

import json
import os
import shutil
import string
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kfp_server_api
import urllib3
import yaml

if TYPE_CHECKING:
    import kfp

REPO = Path(__file__).resolve().parents[1]
SCHEDULES_FILE = Path(__file__).parent / "schedules.yaml"
DEFAULT_COMPILED_DIR = REPO / "build" / "pipelines"
PREFIX = "deploy:"
# Tags a later push can move: a recurring run would silently start other code than the version it was deployed with.
MUTABLE_TAGS = frozenset({"dev", "latest"})
Log = Callable[[str], None]

# KFP compiled parameter types -> the Python types a recurring run's parameter may have.
_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "LIST": (list,),
    "STRUCT": (dict,),
}


class PublishError(RuntimeError):
    """A deploy that cannot go on; the message says what failed and what to do about it."""


# --- What the repository defines ------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledPipeline:
    """One compiled pipeline YAML and what deploy needs from it."""

    key: str  # file stem = key of PIPELINES in pipelines/compile.py = `pipeline` in schedules.yaml
    path: Path
    name: str  # pipelineInfo.name: the KFP pipeline's display name
    description: str
    spec: dict[str, Any]  # {"pipeline_spec": ..., "platform_spec": ...}, as the KFP API returns it
    inputs: dict[str, dict[str, Any]]  # root inputDefinitions.parameters
    images: frozenset[str]


@dataclass(frozen=True)
class RecurringRunSpec:
    """One entry of schedules.yaml, with ``${...}`` already substituted."""

    name: str
    pipeline: str
    cron: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int = 1
    no_catchup: bool = True
    pipeline_root: str = ""
    service_account: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class Schedules:
    experiment: str
    runs: tuple[RecurringRunSpec, ...]


@dataclass(frozen=True)
class PublishConfig:
    """Everything one deploy needs; ``from_env`` reads the documented environment variables."""

    git_sha: str
    compiled_dir: Path = DEFAULT_COMPILED_DIR
    schedules_path: Path = SCHEDULES_FILE
    pipeline_config: dict[str, Any] = field(default_factory=dict)
    env: str = "dev"
    host: str = ""
    token: str = field(default="", repr=False)
    namespace: str = ""
    dry_run: bool = False
    expected_image: str | None = None  # every task must run this image (None: not checked)


@dataclass
class PublishResult:
    """What deploy did (or, in a dry run, would do), for callers and tests."""

    pipelines: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # key -> (id, version id)
    experiment_id: str | None = None
    actions: list[str] = field(default_factory=list)  # "<verb> <object>", e.g. "created recurring-run X"


def load_pipeline_config(path: Path, *, required: bool = True) -> dict[str, Any]:
    """The terraform ``pipeline_config`` output written by ``make infra-apply``."""
    if not path.is_file():
        if required:
            raise PublishError(f"missing {path}: run `make infra-apply ENV=...` (or set PIPELINE_CONFIG=<file>)")
        return {}
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise PublishError(f"{path} is not a JSON object (expected `terraform output -json pipeline_config`)")
    return config


def load_schedules(path: Path, context: dict[str, Any], *, strict: bool = True) -> Schedules:
    """Read schedules.yaml and substitute ``${key}`` from the pipeline config, ENV and GIT_SHA.

    ``strict=False`` (dry run without a pipeline config) leaves unknown placeholders as they are.
    """
    values = {k: str(v) for k, v in context.items() if isinstance(v, str | int | float) and not isinstance(v, bool)}

    def render(value: Any, where: str) -> Any:
        if isinstance(value, str):
            template = string.Template(value)
            if not strict:
                return template.safe_substitute(values)
            try:
                return template.substitute(values)
            except KeyError as exc:
                raise PublishError(
                    f"{path}: {where} uses ${{{exc.args[0]}}}, which is not a key of the pipeline config "
                    f"(known: {', '.join(sorted(values))})"
                ) from None
        if isinstance(value, dict):
            return {k: render(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    raw = yaml.safe_load(path.read_text()) or {}
    unknown_top = set(raw) - {"experiment", "defaults", "recurring_runs"}
    if unknown_top or "experiment" not in raw:
        raise PublishError(
            f"{path}: expected keys experiment, defaults, recurring_runs (unknown: {sorted(unknown_top)})"
        )
    defaults = render(raw.get("defaults") or {}, "defaults")
    fields = set(RecurringRunSpec.__dataclass_fields__)
    runs = []
    for i, entry in enumerate(raw.get("recurring_runs") or []):
        merged = {**defaults, **render(entry, f"recurring_runs[{i}]")}
        unknown = set(merged) - fields
        missing = {"name", "pipeline", "cron"} - set(merged)
        if unknown or missing:
            raise PublishError(
                f"{path}: recurring_runs[{i}] has unknown keys {sorted(unknown)} / lacks {sorted(missing)}"
            )
        cron = str(merged["cron"])
        if len(cron.split()) != 6:
            raise PublishError(
                f"{path}: {merged['name']}: cron {cron!r} must have 6 fields (seconds first, as KFP's "
                "robfig/cron expects), e.g. '0 10 * * * *' for 10 past every hour"
            )
        runs.append(RecurringRunSpec(**merged))
    names = [r.name for r in runs]
    if len(names) != len(set(names)):
        raise PublishError(f"{path}: recurring run names must be unique (they are how deploy finds them): {names}")
    return Schedules(experiment=render(raw["experiment"], "experiment"), runs=tuple(runs))


def _normalize(value: Any) -> Any:
    """JSON-equal form: the KFP API returns specs through protobuf Struct, so 1 may come back as 1.0."""
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _spec_from_api(pipeline_spec: Any) -> dict[str, Any] | None:
    """A pipeline version's ``pipeline_spec`` as the API returns it, in CompiledPipeline.spec form."""
    if not isinstance(pipeline_spec, dict):
        return None
    if "pipeline_spec" in pipeline_spec:
        return _normalize(
            {"pipeline_spec": pipeline_spec["pipeline_spec"], "platform_spec": pipeline_spec.get("platform_spec")}
        )
    return _normalize({"pipeline_spec": pipeline_spec, "platform_spec": None})


def load_compiled(compiled_dir: Path) -> dict[str, CompiledPipeline]:
    """Every ``<key>.yaml`` in the compiled folder (what ``--compile`` just wrote)."""
    pipelines = {}
    for path in sorted(compiled_dir.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        spec = docs[0]
        info = spec.get("pipelineInfo", {})
        executors = spec.get("deploymentSpec", {}).get("executors", {})
        pipelines[path.stem] = CompiledPipeline(
            key=path.stem,
            path=path,
            name=info["name"],
            description=info.get("description", ""),
            spec=_normalize({"pipeline_spec": spec, "platform_spec": docs[1] if len(docs) > 1 else None}),
            inputs=spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}),
            images=frozenset(e["container"]["image"] for e in executors.values() if "container" in e),
        )
    return pipelines


def check_parameters(run: RecurringRunSpec, pipeline: CompiledPipeline) -> list[str]:
    """Problems with a recurring run's parameters against the compiled pipeline's inputs (empty = fine)."""
    problems = []
    for name, value in run.parameters.items():
        definition = pipeline.inputs.get(name)
        if definition is None:
            problems.append(f"{name} is not an input of {pipeline.name} (inputs: {', '.join(sorted(pipeline.inputs))})")
            continue
        allowed = _PARAMETER_TYPES.get(definition.get("parameterType", ""), (object,))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            problems.append(f"{name}={value!r} is not a {definition.get('parameterType')}")
    for name, definition in pipeline.inputs.items():
        if not definition.get("isOptional") and "defaultValue" not in definition and name not in run.parameters:
            problems.append(f"required input {name} is not set")
    return problems


def mutable_image_problem(image: str) -> str | None:
    """Why ``image`` is not an immutable reference (None when it is: a digest, or a tag other than dev/latest).

    Deployed pipeline versions and their recurring runs keep naming the image for weeks: only a tag that is never
    pushed twice (the git SHA; the Artifact Registry repository has immutable tags) or a digest pins what runs.
    """
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all ("registry:5000/cityscale" has a port, not a tag)
        return f"image {image!r} has no tag"
    if tag in MUTABLE_TAGS:
        return f"image {image!r} has the mutable tag :{tag}"
    return None


def compile_pipelines(out_dir: Path, image: str) -> list[Path]:
    """Compile every pipeline with ``image`` into a fresh ``out_dir`` (stale YAML would be uploaded too).

    The components read the image once, when ``components`` is first imported, so this must run before
    anything in this process imports them.
    """
    if "components" in sys.modules and image != sys.modules["components"].IMAGE:
        raise PublishError(f"components were imported with image {sys.modules['components'].IMAGE}, not {image}")
    os.environ["CITYSCALE_IMAGE"] = image
    from cityscale.config import get_settings

    get_settings.cache_clear()
    from pipelines.compile import CompileError, compile_all

    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        return compile_all(out_dir)
    except CompileError as exc:
        raise PublishError(str(exc)) from exc


# --- Talking to KFP -------------------------------------------------------------------------------


def _api_message(exc: kfp_server_api.ApiException) -> str:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        parsed = json.loads(body)
        return str(parsed.get("message") or parsed.get("error") or body)
    except (ValueError, AttributeError):
        return body.strip()[:500]


@contextmanager
def _api(what: str) -> Iterator[None]:
    """Turn a failed KFP API call into a PublishError that says which call failed and the server's words."""
    try:
        yield
    except kfp_server_api.ApiException as exc:
        raise PublishError(f"KFP API error while {what}: HTTP {exc.status} {exc.reason}: {_api_message(exc)}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise PublishError(f"cannot reach the KFP API while {what}: {exc}") from exc


def connect(host: str, token: str = "", namespace: str = "", timeout_s: float = 10.0) -> kfp.Client:
    """A ``kfp.Client`` for ``host``, after a quick reachability check.

    Why the check: ``kfp.Client()`` retries its health call 5 times 5 s apart and then raises a bare
    TimeoutError; a wrong KFP_HOST or a missing port-forward deserves an immediate, actionable message.
    """
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 - operator-provided URL
            pass
    except urllib.error.HTTPError as exc:
        hint = " (check KFP_TOKEN)" if exc.code in (401, 403) else ""
        raise PublishError(f"KFP API at {host} answered {url} with HTTP {exc.code} {exc.reason}{hint}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PublishError(
            f"KFP API at {host} is not reachable ({exc}). Start a port-forward, e.g. "
            "`kubectl -n cityscale port-forward svc/ml-pipeline 8888:8888`, and set KFP_HOST=http://localhost:8888"
        ) from exc
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        with _api("connecting"):
            return kfp.Client(host=host, existing_token=token or None, namespace=namespace or "kubeflow")


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _run_fingerprint(run: kfp_server_api.V2beta1RecurringRun) -> dict[str, Any]:
    """The parts of a recurring run that deploy manages, in a comparable form."""
    ref = run.pipeline_version_reference
    trigger = run.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None
    runtime = run.runtime_config
    return {
        "description": run.description or "",
        "pipeline_id": ref.pipeline_id if ref else None,
        "pipeline_version_id": (ref.pipeline_version_id if ref else None) or run.pipeline_version_id,
        "cron": cron,
        "max_concurrency": int(run.max_concurrency or 0),
        "no_catchup": bool(run.no_catchup),
        "parameters": _normalize(dict(runtime.parameters or {})) if runtime else {},
        "pipeline_root": (runtime.pipeline_root or "") if runtime else "",
        "service_account": run.service_account or "",
        "enabled": run.mode == kfp_server_api.RecurringRunMode.ENABLE,
    }


def _desired_fingerprint(spec: RecurringRunSpec, pipeline_id: str | None, version_id: str | None) -> dict[str, Any]:
    return {
        "description": spec.description,
        "pipeline_id": pipeline_id,
        "pipeline_version_id": version_id,
        "cron": spec.cron,
        "max_concurrency": spec.max_concurrency,
        "no_catchup": spec.no_catchup,
        "parameters": _normalize(dict(spec.parameters)),
        "pipeline_root": spec.pipeline_root,
        "service_account": spec.service_account,
        "enabled": spec.enabled,
    }


# Fields the KFP server fills in when a recurring run leaves them empty (the default runner service account,
# the default pipeline root): an empty desired value must not count as a difference, or every deploy would
# recreate the run.
_SERVER_DEFAULTED = frozenset({"service_account", "pipeline_root"})


def _differences(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """The managed fields in which an existing recurring run differs from the repository's definition."""
    return [k for k in desired if current[k] != desired[k] and not (k in _SERVER_DEFAULTED and not desired[k])]


class Publisher:
    """Applies one PublishConfig through a ``kfp.Client`` (None: offline dry run, nothing is contacted)."""

    def __init__(self, config: PublishConfig, client: kfp.Client | None, log: Log = print) -> None:
        self.config = config
        self.client = client
        self.log = log
        self.dry = config.dry_run
        self.result = PublishResult()

    def say(self, message: str) -> None:
        self.log(f"{PREFIX} {message}")

    def act(self, verb: str, obj: str) -> None:
        self.result.actions.append(f"{'would ' if self.dry else ''}{verb} {obj}")

    # Pipelines and versions.

    def ensure_pipeline(self, pipeline: CompiledPipeline) -> tuple[str | None, str | None]:
        """(pipeline id, version id holding this commit); None where a dry run would create it."""
        sha, client = self.config.git_sha, self.client
        label = f"pipeline {pipeline.name}"
        if client is None:  # offline dry run: the plan printed by publish() says it all
            self.act("upload", f"pipeline-version {pipeline.name}@{sha}")
            return None, None
        with _api(f"looking up {label}"):
            pipeline_id = client.get_pipeline_id(pipeline.name)
        if pipeline_id is None:
            self.say(f"{label}: missing -> {'would create' if self.dry else 'creating'} it from {pipeline.path}")
            self.act("create", f"pipeline {pipeline.name}")
            if self.dry:
                return None, None
            with _api(f"uploading {label}"):
                created = client.upload_pipeline(
                    str(pipeline.path),
                    pipeline_name=pipeline.name,
                    description=f"{pipeline.description} (first version: commit {sha})",
                    namespace=self.config.namespace or None,
                )
            latest = self._latest_version(created.pipeline_id)
            if latest is None:
                raise PublishError(f"KFP created {label} ({created.pipeline_id}) but lists no version of it")
            return created.pipeline_id, latest.pipeline_version_id

        with _api(f"listing versions of {label}"):
            named = client.list_pipeline_versions(pipeline_id, page_size=10, filter=_name_filter(sha)).pipeline_versions
        named = [v for v in named or [] if v.display_name == sha]
        if named:
            remote = _spec_from_api(named[0].pipeline_spec)
            if remote is not None and remote != pipeline.spec:
                raise PublishError(
                    f"{label} already has a version {sha} with a different spec: versions are named by commit, "
                    "so commit your change (or set GIT_SHA) and deploy again"
                )
            self.say(f"{label}: version {sha} already uploaded ({named[0].pipeline_version_id}), reusing it")
            self.act("reuse", f"pipeline-version {pipeline.name}@{sha}")
            return pipeline_id, named[0].pipeline_version_id
        latest = self._latest_version(pipeline_id)
        if latest is not None and _spec_from_api(latest.pipeline_spec) == pipeline.spec:
            self.say(f"{label}: newest version {latest.display_name} has this exact spec, reusing it")
            self.act("reuse", f"pipeline-version {pipeline.name}@{latest.display_name}")
            return pipeline_id, latest.pipeline_version_id
        self.say(f"{label}: {'would upload' if self.dry else 'uploading'} version {sha} from {pipeline.path}")
        self.act("upload", f"pipeline-version {pipeline.name}@{sha}")
        if self.dry:
            return pipeline_id, None
        with _api(f"uploading version {sha} of {label}"):
            version = client.upload_pipeline_version(
                str(pipeline.path), pipeline_version_name=sha, pipeline_id=pipeline_id, description=f"commit {sha}"
            )
        return pipeline_id, version.pipeline_version_id

    def _latest_version(self, pipeline_id: str) -> kfp_server_api.V2beta1PipelineVersion | None:
        with _api(f"listing versions of pipeline {pipeline_id}"):
            page = self.client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        return (page.pipeline_versions or [None])[0]

    # Experiment and recurring runs.

    def ensure_experiment(self, name: str) -> str | None:
        if self.client is None:
            return None
        namespace = self.config.namespace or None
        with _api(f"looking up experiment {name}"):
            page = self.client.list_experiments(filter=_name_filter(name), namespace=namespace, page_size=10)
        found = [e for e in page.experiments or [] if e.display_name == name]
        if found:
            self.say(f"experiment {name}: exists ({found[0].experiment_id})")
            return found[0].experiment_id
        self.say(f"experiment {name}: missing -> {'would create' if self.dry else 'creating'} it")
        self.act("create", f"experiment {name}")
        if self.dry:
            return None
        with _api(f"creating experiment {name}"):
            created = self.client.create_experiment(
                name,
                description="Recurring runs applied by `make deploy` (pipelines/schedules.yaml).",
                namespace=namespace,
            )
        return created.experiment_id

    def _find_runs(self, experiment_id: str, name: str) -> list[kfp_server_api.V2beta1RecurringRun]:
        runs, token = [], ""
        while True:
            with _api(f"listing recurring runs named {name}"):
                page = self.client.list_recurring_runs(
                    experiment_id=experiment_id, filter=_name_filter(name), page_size=100, page_token=token
                )
            runs += [r for r in page.recurring_runs or [] if r.display_name == name]
            token = page.next_page_token or ""
            if not token:
                return runs

    def ensure_recurring_run(
        self, spec: RecurringRunSpec, experiment_id: str | None, pipeline_id: str | None, version_id: str | None
    ) -> None:
        label = f"recurring run {spec.name}"
        desired = _desired_fingerprint(spec, pipeline_id, version_id)
        if self.client is None:
            self.act("apply", f"recurring-run {spec.name}")
            return
        existing = self._find_runs(experiment_id, spec.name) if experiment_id else []
        if len(existing) == 1 and not _differences(_run_fingerprint(existing[0]), desired):
            self.say(f"{label}: unchanged ({existing[0].recurring_run_id})")
            self.act("keep", f"recurring-run {spec.name}")
            return
        if existing:
            if len(existing) == 1:
                current = _run_fingerprint(existing[0])
                changes = ", ".join(
                    f"{k} {current[k]!r} -> {desired[k] if desired[k] is not None else '<new version>'!r}"
                    for k in _differences(current, desired)
                )
            else:
                changes = f"{len(existing)} runs share this name"
            verb = "would disable, delete and recreate" if self.dry else "disabling, deleting and recreating"
            self.say(f"{label}: spec differs ({changes}) -> {verb} it (the KFP API cannot update a recurring run)")
            self.act("recreate", f"recurring-run {spec.name}")
            if not self.dry:
                for run in existing:
                    with _api(f"disabling {label} ({run.recurring_run_id})"):
                        self.client.disable_recurring_run(run.recurring_run_id)
                    with _api(f"deleting {label} ({run.recurring_run_id})"):
                        self.client.delete_recurring_run(run.recurring_run_id)
        else:
            self.say(f"{label}: missing -> {'would create' if self.dry else 'creating'} it")
            self.act("create", f"recurring-run {spec.name}")
        if self.dry:
            return
        with _api(f"creating {label}"):
            created = self.client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=spec.name,
                description=spec.description,
                cron_expression=spec.cron,
                max_concurrency=spec.max_concurrency,
                no_catchup=spec.no_catchup,
                params=dict(spec.parameters),
                pipeline_id=pipeline_id,
                version_id=version_id,
                enabled=spec.enabled,
                pipeline_root=spec.pipeline_root or None,
                service_account=spec.service_account or None,
            )
        self.say(f"{label}: created ({created.recurring_run_id})")


def publish(config: PublishConfig, client: kfp.Client | None = None, log: Log = print) -> PublishResult:
    """Print the plan, then upload the pipelines and apply the recurring runs (see the module docstring).

    ``client`` None means: connect to ``config.host``, or, in a dry run without a host, stay offline.
    Raises PublishError with an actionable message; nothing after the failing call is attempted.
    """
    pipelines = load_compiled(config.compiled_dir)
    if not pipelines:
        raise PublishError(f"no compiled pipelines in {config.compiled_dir}: run with --compile (make deploy)")
    context = {**config.pipeline_config, "ENV": config.env, "GIT_SHA": config.git_sha}
    schedules = load_schedules(
        config.schedules_path, context, strict=bool(config.pipeline_config) or not config.dry_run
    )

    # Everything that can be checked offline is checked before the first API call.
    problems = []
    if config.expected_image:
        for p in pipelines.values():
            if p.images != {config.expected_image}:
                problems.append(
                    f"{p.path} runs {sorted(p.images)}, not {config.expected_image}: compile with --compile"
                )
    runnable, skipped = [], []
    for run in schedules.runs:
        if run.pipeline not in pipelines:
            skipped.append(run)
            continue
        problems += [
            f"{config.schedules_path}: {run.name}: {msg}" for msg in check_parameters(run, pipelines[run.pipeline])
        ]
        runnable.append(run)
    if problems:
        raise PublishError("the deploy plan is invalid:\n  " + "\n  ".join(problems))

    mode = "DRY RUN, nothing will change" if config.dry_run else "applying"
    where = config.host or "(no KFP_HOST: offline plan)"
    log(
        f"{PREFIX} plan ({mode}): ENV={config.env} commit {config.git_sha} -> KFP {where}"
        f"{' namespace ' + config.namespace if config.namespace else ''}"
    )
    for p in pipelines.values():
        log(f"{PREFIX}   pipeline {p.name} <- {p.path} (image {', '.join(sorted(p.images))}): version {config.git_sha}")
    log(f"{PREFIX}   experiment {schedules.experiment}")
    for run in runnable:
        log(
            f"{PREFIX}   recurring run {run.name}: {pipelines[run.pipeline].name} at cron '{run.cron}' (UTC)"
            f"{'' if run.enabled else ' (disabled)'}, parameters {json.dumps(run.parameters, sort_keys=True)}"
        )
    for run in skipped:
        log(
            f"{PREFIX}   recurring run {run.name}: SKIPPED, pipeline '{run.pipeline}' has no compiled YAML "
            f"({config.compiled_dir / (run.pipeline + '.yaml')} does not exist: pipelines/compile.py compiles no "
            f"pipeline '{run.pipeline}')"
        )

    if client is None and not config.host and config.dry_run:
        log(
            f"{PREFIX} offline dry run (no KFP_HOST): the cluster's state is not read. A real deploy creates each "
            f"missing pipeline, uploads version {config.git_sha}, creates the experiment if missing, and creates each "
            "recurring run above, or recreates it if its spec differs"
        )
    if client is None and config.host:
        client = connect(config.host, config.token, config.namespace)
    elif client is None and not config.dry_run:
        raise PublishError("KFP_HOST is required (e.g. http://localhost:8888 via a port-forward), or set DRY_RUN=1")

    publisher = Publisher(config, client, log)
    for key, pipeline in pipelines.items():
        publisher.result.pipelines[key] = publisher.ensure_pipeline(pipeline)
    experiment_id = publisher.ensure_experiment(schedules.experiment)
    publisher.result.experiment_id = experiment_id
    for run in runnable:
        pipeline_id, version_id = publisher.result.pipelines[run.pipeline]
        publisher.ensure_recurring_run(run, experiment_id, pipeline_id, version_id)
    publisher.result.actions += [f"skip recurring-run {run.name}" for run in skipped]
    counts: dict[str, int] = {}
    for action in publisher.result.actions:
        verb = action.rsplit(" ", 2)[0] if action.startswith("would ") else action.split(" ", 1)[0]
        counts[verb] = counts.get(verb, 0) + 1
    log(
        f"{PREFIX} {'dry run done' if config.dry_run else 'done'}: "
        + ", ".join(f"{n} {verb}" for verb, n in counts.items())
    )
    return publisher.result


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def deploy(
    compile_first: bool = False,
    compiled_dir: Path | None = None,
    schedules: Path | None = None,
    pipeline_config: Path | None = None,
) -> int:
    """``cityscale deploy`` (``make deploy``), configured by the environment: 0, or 1 with a message on stderr."""
    compiled_dir = compiled_dir or DEFAULT_COMPILED_DIR
    env = os.environ.get("ENV") or "dev"
    git_sha = os.environ.get("GIT_SHA", "")
    registry = os.environ.get("REGISTRY", "")
    dry_run = _truthy(os.environ.get("DRY_RUN"))
    config_path = pipeline_config or Path(
        os.environ.get("PIPELINE_CONFIG") or REPO / "build" / "terraform" / f"{env}.pipeline-config.json"
    )
    try:
        if not git_sha:
            raise PublishError("GIT_SHA is required (make deploy sets it from `git rev-parse --short=12 HEAD`)")
        if not registry and not dry_run:
            raise PublishError(
                "REGISTRY is required: the pipelines must run $REGISTRY/cityscale:$GIT_SHA "
                "(make deploy reads it from build/terraform/$ENV.helmfile-values.json)"
            )
        image = f"{registry}/cityscale:{git_sha}" if registry else None
        if compile_first:
            image = image or os.environ.get("CITYSCALE_IMAGE") or f"cityscale:{git_sha}"
            problem = mutable_image_problem(image)
            if problem:
                raise PublishError(f"{problem}: deploy compiles an immutable image ($REGISTRY/cityscale:$GIT_SHA)")
            for path in compile_pipelines(compiled_dir, image):
                print(f"{PREFIX} compiled {path} (image {image})")
        from cityscale.config import Settings

        settings = Settings()
        config = PublishConfig(
            git_sha=git_sha,
            compiled_dir=compiled_dir,
            schedules_path=schedules or SCHEDULES_FILE,
            pipeline_config=load_pipeline_config(config_path, required=not dry_run),
            env=env,
            host=settings.kfp_host,
            token=settings.kfp_token,
            namespace=settings.kfp_namespace,
            dry_run=dry_run,
            expected_image=image,
        )
        if dry_run and not config.pipeline_config:
            print(f"{PREFIX} note: {config_path} is missing, ${{...}} placeholders stay unresolved in this dry run")
        publish(config)
    except PublishError as exc:
        print(f"{PREFIX} ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # the `cityscale deploy` command itself (pipelines/cli.py)
    import typer

    from pipelines.cli import deploy as deploy_command

    typer.run(deploy_command)

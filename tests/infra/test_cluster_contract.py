"""The cluster contract: the compiled training pipeline, run as the weekly schedule runs it, with only what a pod gets.

Not the Python pipeline function in this test's environment: the YAML in ``pipelines/compiled/training.yaml`` is
loaded back and executed under kfp.local in a child process whose whole environment is what a pod would get:
the env the YAML declares, the ``cityscale-config`` ConfigMap as the platform chart renders it (kfp.local ignores
the Kubernetes platform config, so the test first checks that every executor declares that ConfigMap and then
gives the process exactly its data), and the image's PATH/HOME/LANG. Ambient ``CITYSCALE_*`` variables never
reach it. The parameters are the ``cityscale-training-weekly`` entry of ``pipelines/schedules.yaml`` with its
``${...}`` filled from the Terraform outputs (``train_mode=trainjob``, ``deploy_target=kserve``, ``last:28d``).

What the cluster provides by other means is replaced by loopback stand-ins, each named here and nothing else:
- GCS (Workload Identity + the buckets): gcp-storage-emulator (``STORAGE_EMULATOR_HOST``, anonymous token). The
  raw zone and the model registry live there; it is the only state the runs share.
- The API server with the Trainer and KServe controllers (the in-cluster service account): ``FakeTrainerApi`` and
  ``FakeKubernetesApi`` behind one URL (``KUBECONFIG``). The fake Trainer really runs the TrainJob's command with
  the TrainJob's env over the same node env; the fake KServe controller marks a generation Ready.
- The City of Melbourne portal (the internet): the replay of the bundled real sample, which publishes one more
  week before each later run (``CITYSCALE_AIRBYTE_CONFIG_OVERRIDES``: base URL and the sync window, i.e. the clock).
- Poll intervals of the TrainJob and rollout waits, shortened to a second; and ``train_gpus_per_node=0``, since
  the fake Trainer's node is this CPU machine (the GPU placement of the TrainJob is checked in test_trainjob.py).
- Cluster DNS and ports: the predictor gets free loopback ports and the loopback address of a feature server that
  the project's own ``cityscale features build`` / ``feature-server`` commands build from the emulated raw zone
  (the chart's CronJob and Deployment run the same commands against Redis).

Three runs over three raw-zone snapshots, a week apart: each later run must train on the newer week, pass or fail
the gate (against the production model) by the gate's rule, register only when it passes, and patch the
InferenceService to what it registered (the first run creates it).
Then the predictor starts with exactly the rendered container's command and env and answers a V2 forecast for
the hour after the newest count.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from infra_testlib import REPO, fixture_values, load_docs

from cityscale import registry
from cityscale.config import Settings
from cityscale.loopback import LoopbackServer, free_port, serve
from cityscale.model.examples import Examples
from pipelines.cluster import CONFIG_KEYS, CONFIG_MAP
from pipelines.publish import load_schedules, mutable_image_problem
from serving.client import forecast_request
from tests.conftest import MELBOURNE_LOCATIONS
from tests.fake_kserve_api import FakeKubernetesApi
from tests.fake_kubernetes_server import FakeKubernetesServer
from tests.fake_trainer_api import FakeTrainerApi
from tests.fixtures import melbourne_portal as portal

pytestmark = [pytest.mark.e2e, pytest.mark.server]

COMPILED = REPO / "pipelines" / "compiled" / "training.yaml"
SCHEDULE = "cityscale-training-weekly"
MELBOURNE = "pedestrian-counting-system-monthly-counts-per-hour"
LOCATIONS = "pedestrian-counting-system-sensor-locations"
FIRST_DAY = "2022-05-02"
# The last day the portal has published at each weekly run (the bundled sample ends on 2022-10-31).
LAST_DAYS = ("2022-10-16", "2022-10-23", "2022-10-30")
RUNNER = """
import json, sys
from kfp import components, local
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[2])
components.load_component_from_file(sys.argv[1])(**json.loads(sys.argv[3]))
"""


class FakeClusterApi(FakeKubernetesServer):
    """One API-server URL in front of both fakes: InferenceServices to the KServe one, the rest to the Trainer one."""

    def __init__(self, node_env: dict[str, str]) -> None:
        super().__init__()
        self.trainer = FakeTrainerApi(scenario="run", node_env=node_env)
        self.kserve = FakeKubernetesApi(ready_after_polls=2)

    def serve(self, handler: Any, method: str, body: Any) -> None:
        target = self.kserve if handler.path.startswith("/apis/serving.kserve.io/") else self.trainer
        target.serve(handler, method, body)

    def __exit__(self, *exc: Any) -> None:
        for state in self.trainer.procs.values():
            if state["proc"].poll() is None:
                state["proc"].kill()
            state["proc"].wait(timeout=10)
        for fake in (self.trainer, self.kserve):  # their own servers never served: close the sockets only
            fake.server.server_close()
        super().__exit__(*exc)


def rendered_config_map(rendered: Path) -> dict[str, str]:
    (doc,) = [
        d
        for d in load_docs(rendered / "dev" / "cityscale-platform.yaml")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == CONFIG_MAP
    ]
    return {k: str(v) for k, v in doc["data"].items()}


def declared_env(compiled: list[dict]) -> dict[str, str]:
    """The env every executor of the compiled YAML declares, after checking each one loads the whole ConfigMap."""
    spec, platform = compiled
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    env: dict[str, str] = {}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        loaded = {
            item["envVar"]
            for ref in kubernetes.get(name, {}).get("configMapAsEnv", [])
            if ref.get("configMapName") == CONFIG_MAP
            for item in ref.get("keyToEnv", [])
        }
        assert loaded == set(CONFIG_KEYS), f"{name} does not load every key of {CONFIG_MAP}"
        for item in executor["container"].get("env", []):
            assert env.setdefault(item["name"], item["value"]) == item["value"], f"{name}: {item['name']} differs"
    return env


def image_env(home: Path) -> dict[str, str]:
    """What the project image itself sets: its Python first on PATH, a home, a locale."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def weekly_parameters(tf: dict[str, Any]) -> dict[str, Any]:
    pipeline_config = {
        "raw_uri": f"gs://{tf['buckets']['raw']}",
        "models_uri": f"gs://{tf['buckets']['models']}",
        "features_uri": f"gs://{tf['buckets']['features']}",
        "pipeline_root": f"gs://{tf['buckets']['pipelineRoot']}",
    }
    schedules = load_schedules(REPO / "pipelines" / "schedules.yaml", {**pipeline_config, "ENV": "dev", "GIT_SHA": "x"})
    (run,) = [r for r in schedules.runs if r.name == SCHEDULE]
    assert run.pipeline == "training"
    return dict(run.parameters)


@pytest.fixture(scope="module")
def sample_records() -> pd.DataFrame:
    """The bundled real sample from FIRST_DAY, as the portal's records."""
    rows = pd.read_parquet(Settings().sample_data)
    rows = rows[rows["timestamp_local"] >= FIRST_DAY]
    return portal.melbourne_records(rows)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, rendered: Path, gcs_emulator: dict[str, str]) -> Iterator[dict]:
    """Buckets on the emulator, the portal replay, the fake API server and the env of a pod, for both runs."""
    import gcsfs

    work = tmp_path_factory.mktemp("cluster")
    config = rendered_config_map(rendered)
    tf = fixture_values("dev")
    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=gcs_emulator["STORAGE_EMULATOR_HOST"])
    for bucket in tf["buckets"].values():
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    workload_identity = {"STORAGE_EMULATOR_HOST": gcs_emulator["STORAGE_EMULATOR_HOST"], "FSSPEC_GS_TOKEN": "anon"}
    replay = portal.ReplayPortal()
    replay.set_dataset(LOCATIONS, portal.melbourne_locations(MELBOURNE_LOCATIONS))
    with portal.serve(replay) as portal_url, FakeClusterApi(node_env={**image_env(work), **workload_identity}) as api:
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(api.kubeconfig(config["CITYSCALE_TRAINJOB_NAMESPACE"])))
        stand_ins = {
            **workload_identity,
            "KUBECONFIG": str(kubeconfig),
            "CITYSCALE_TRAINJOB_POLL_S": "1",
            "CITYSCALE_SERVING_READY_POLL_S": "1",
        }
        compiled = list(yaml.safe_load_all(COMPILED.read_text()))
        pod = {**image_env(work), **declared_env(compiled), **config, **stand_ins}
        yield {"work": work, "config": config, "pod": pod, "portal": replay, "portal_url": portal_url, "api": api}


def run_weekly(cluster: dict, sample_records: pd.DataFrame, last_day: str, name: str) -> Path:
    """Publish the portal's counts up to ``last_day``, run the compiled weekly training; return the run's folder."""
    published = sample_records[sample_records["sensing_date"] <= last_day].reset_index(drop=True)
    cluster["portal"].set_dataset(MELBOURNE, published)
    connector = {
        "base_url": cluster["portal_url"],
        "start_date": f"{FIRST_DAY}T00:00:00",
        "end_date": f"{last_day}T23:00:00",
        "backoff_factor_seconds": 0.01,
    }
    env = {**cluster["pod"], "CITYSCALE_AIRBYTE_CONFIG_OVERRIDES": json.dumps({"melbourne": connector})}
    root = cluster["work"] / name
    params = {**weekly_parameters(fixture_values("dev")), "train_gpus_per_node": 0}  # the stand-in node has no GPU
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(COMPILED), str(root), json.dumps(params)],
        env=env,
        cwd=cluster["work"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    (run_dir,) = root.iterdir()
    return run_dir


def task_dir(run_dir: Path, task: str) -> Path:
    """The folder of ``task`` in the trainjob branch (its gate sub-pipeline's tasks carry a ``-2`` suffix)."""
    (found,) = [p for p in run_dir.iterdir() if p.name in (task, f"{task}-2")]
    return found


def gate_rule(metrics: dict[str, float], baselines: tuple[str, ...]) -> bool:
    """The gate as documented: beat the best gate baseline's WAPE, and production's when one is scored."""
    best = min(metrics[f"{b}_wape"] for b in baselines if f"{b}_wape" in metrics)
    return metrics["wape"] < best and metrics["wape"] < metrics.get("production_wape", np.inf)


def predictor_container(api: FakeClusterApi) -> dict[str, Any]:
    (isvc,) = api.kserve.objects.values()
    (container,) = isvc["spec"]["predictor"]["containers"]
    return container


@pytest.fixture(scope="module")
def weekly_runs(cluster: dict, sample_records: pd.DataFrame) -> dict[str, Any]:
    runs, isvcs = [], []
    for i, last_day in enumerate(LAST_DAYS):
        runs.append(run_weekly(cluster, sample_records, last_day, f"week{i + 1}"))
        # a copy of the InferenceService's predictor as this run left it
        isvcs.append(
            json.loads(json.dumps(predictor_container(cluster["api"]))) if cluster["api"].kserve.objects else None
        )
    return {"runs": runs, "predictors": isvcs}


def test_each_week_trains_on_the_newer_week(cluster: dict, weekly_runs: dict) -> None:
    examples = [Examples.load(task_dir(run, "build-features") / "examples") for run in weekly_runs["runs"]]
    newest = [pd.Timestamp(e.origins.max()) for e in examples]
    assert all(later - earlier == pd.Timedelta(days=7) for earlier, later in itertools.pairwise(newest)), newest
    jobs = list(cluster["api"].trainer.jobs.values())
    assert len(jobs) == len(LAST_DAYS), "each run trains as a TrainJob"
    for job, run in zip(jobs, weekly_runs["runs"], strict=True):
        trainer = job["spec"]["trainer"]
        assert trainer["image"] == cluster["config"]["CITYSCALE_IMAGE"]  # the immutable image from the ConfigMap
        args = trainer["args"]
        assert str(run) in args[args.index("--examples") + 1]
        env = {e["name"]: e["value"] for e in trainer.get("env", [])}
        assert int(env["CITYSCALE_MAX_EPOCHS"]) > 0 and "CITYSCALE_STORE_URI" not in env


def test_each_week_passes_or_fails_the_gate_by_its_rule_and_deploys_only_what_passed(
    cluster: dict, weekly_runs: dict
) -> None:
    settings = Settings()
    config = cluster["config"]
    verdicts = []
    for week, run in enumerate(weekly_runs["runs"]):
        verdict = json.loads((task_dir(run, "evaluate") / "evaluation").read_text())
        assert verdict["passed"] == gate_rule(verdict["metrics"], tuple(settings.gate_baselines)), verdict
        # every later week is judged against the model in production, the one an earlier week registered
        assert ("production_wape" in verdict["metrics"]) == (week > 0), verdict["metrics"]
        verdicts.append(verdict["passed"])
    assert verdicts[0], "a first model on five months of real counts must beat the baselines"

    registry_uri = config["CITYSCALE_REGISTRY_URI"]
    versions = registry.versions(registry_uri, config["CITYSCALE_MODEL_NAME"])
    assert versions == [f"{i:04d}" for i in range(1, 1 + sum(verdicts))]
    production = registry.get_alias(registry_uri, config["CITYSCALE_MODEL_NAME"], "production")
    assert production["version"] == versions[-1]

    served = [f"{sum(verdicts[: week + 1]):04d}" for week in range(len(verdicts))]  # production after each week
    for container, version in zip(weekly_runs["predictors"], served, strict=True):
        assert container["image"] == config["CITYSCALE_SERVING_IMAGE"]  # the slim serving image (CPU predictor)
        assert container["command"][-2:] == ["--model", version]
        assert CONFIG_MAP in [ref.get("configMapRef", {}).get("name") for ref in container["envFrom"]]
    methods = [r["method"] for r in cluster["api"].kserve.requests if r["method"] in ("POST", "PATCH")]
    assert methods == ["POST"] + ["PATCH"] * sum(verdicts[1:]), (
        "the first week creates the InferenceService; a later week patches it only for a model that passed"
    )
    (isvc,) = cluster["api"].kserve.objects.values()
    assert isvc["spec"]["predictor"]["serviceAccountName"] == config["CITYSCALE_SERVING_SERVICE_ACCOUNT"]
    assert isvc["metadata"]["namespace"] == config["CITYSCALE_SERVING_NAMESPACE"]


@pytest.fixture(scope="module")
def feature_server(cluster: dict, weekly_runs: dict) -> Iterator[LoopbackServer]:
    """The Feast feature server, built by the project's own commands from the emulated raw zone."""
    features_dir = cluster["work"] / "features"
    env = {**cluster["pod"], "CITYSCALE_FEATURES_DIR": str(features_dir)}
    build = [sys.executable, "-m", "cityscale.cli", "features", "build"]
    proc = subprocess.run(build, env=env, cwd=cluster["work"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    port = free_port()
    argv = [*build[:3], "feature-server", "--no-build", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serve(argv, url=url, name="feature server", env=env, inherit_env=False, cwd=cluster["work"]) as server:
        yield server


def test_the_rendered_predictor_forecasts_the_hour_after_the_newest_count(
    cluster: dict, weekly_runs: dict, feature_server: LoopbackServer
) -> None:
    container = weekly_runs["predictors"][-1]
    env = {**cluster["config"]}  # envFrom: the ConfigMap; the container's own env takes precedence
    env.update({e["name"]: e["value"] for e in container["env"]})
    http_port, grpc_port = free_port(), free_port()
    assert env["CITYSCALE_FEATURE_SERVER_URL"] == cluster["config"]["CITYSCALE_FEATURE_SERVER_URL"]
    env.update(
        HTTP_PORT=str(http_port),
        GRPC_PORT=str(grpc_port),
        CITYSCALE_FEATURE_SERVER_URL=feature_server.url,  # cluster DNS -> loopback
        STORAGE_EMULATOR_HOST=cluster["pod"]["STORAGE_EMULATOR_HOST"],
        FSSPEC_GS_TOKEN="anon",  # pragma: allowlist secret
        PATH=cluster["pod"]["PATH"],
        LANG="C.UTF-8",
    )
    url = f"http://127.0.0.1:{http_port}"
    model = env["CITYSCALE_MODEL_NAME"]
    with serve(
        container["command"],
        url=url,
        health_path=f"/v2/models/{model}/ready",
        name="predictor",
        env=env,
        inherit_env=False,
        cwd=cluster["work"],
        timeout_s=180,
    ):
        start = (pd.Timestamp(LAST_DAYS[-1]) + pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
        sensors = ["Bou283_T", "FliS_T"]
        response = requests.post(f"{url}/v2/models/{model}/infer", json=forecast_request(sensors, start), timeout=60)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        p10, p50, p90 = (np.asarray(outputs[q]["data"], dtype=float) for q in ("p10", "p50", "p90"))
        assert p50.size == len(sensors) * Settings().horizon
        assert np.isfinite(p50).all() and (p10 <= p50 + 1e-6).all() and (p50 <= p90 + 1e-6).all()


def test_every_workload_it_creates_or_renders_has_an_immutable_image_identity_config_and_resources(
    cluster: dict, weekly_runs: dict, rendered: Path
) -> None:
    """Static check of each pod template: TrainJobs and the InferenceService the runs created, the chart workloads."""
    config = cluster["config"]
    assert mutable_image_problem(config["CITYSCALE_IMAGE"]) is None
    assert mutable_image_problem(config["CITYSCALE_SERVING_IMAGE"]) is None
    spec, _ = yaml.safe_load_all(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-train", "exec-train-on-trainjob"):  # the GPU goes to the pod that trains (or its TrainJob)
        resources = executors[name]["container"].get("resources", {})
        assert int(resources.get("accelerator", {}).get("resourceCount", 0)) >= 1, f"{name} requests no GPU"
    cpu = executors["exec-train"]["container"].get("resources", {}).get("resourceCpuRequest")
    assert cpu, "the in-task train step (train_mode=local) requests no CPU: it would land on any node"
    for job in cluster["api"].trainer.jobs.values():
        text = json.dumps(job)
        assert job["spec"]["trainer"]["image"] == config["CITYSCALE_IMAGE"]
        assert f'"serviceAccountName": "{config["CITYSCALE_TRAINJOB_SERVICE_ACCOUNT"]}"' in text
        assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    (isvc,) = cluster["api"].kserve.objects.values()
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == config["CITYSCALE_SERVING_SERVICE_ACCOUNT"]
    assert predictor["containers"][0]["image"] == config["CITYSCALE_SERVING_IMAGE"]
    assert predictor["containers"][0]["resources"]["requests"] and predictor["containers"][0]["resources"]["limits"]
    workloads = 0
    for path in (rendered / "dev").glob("cityscale-*.yaml"):
        for doc in load_docs(path):
            if doc.get("kind") not in ("Deployment", "StatefulSet", "CronJob", "Job"):
                continue
            pod = (
                doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]
            )
            for container in pod["spec"]["containers"]:
                if "/cityscale:" not in container["image"] and "/cityscale@" not in container["image"]:
                    continue  # third-party images (redis) are pinned by their charts
                where = f"{path.name} {doc['kind']}/{doc['metadata']['name']}"
                workloads += 1
                assert container["image"] == config["CITYSCALE_IMAGE"], where
                assert pod["spec"].get("serviceAccountName"), where
                assert CONFIG_MAP in [r.get("configMapRef", {}).get("name") for r in container.get("envFrom", [])], (
                    where
                )
                assert container["resources"]["requests"] and container["resources"]["limits"], where
    assert workloads >= 3, "the feature server, the materialization CronJob and the realtime gateway"

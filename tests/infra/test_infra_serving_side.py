"""The serving side in the cluster: Feast materialization CronJob, the real-time push gateway (Deployment, Service,
journal volume, token Secret) and the Pushgateway that carries the monitoring gauges to Prometheus.

Each workload is checked against what the code it runs expects: the image is the ConfigMap's immutable
CITYSCALE_IMAGE, every CITYSCALE_* variable names a Settings field, the command line parses with the real CLI,
probes hit a real route, and the token the Deployment hands the gateway is the one the app enforces.
"""

from __future__ import annotations

import os
import secrets
import shlex

import click
import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from infra_testlib import REPO, SAMPLE_TAG, find, fixture_values, load_docs, run_checks
from typer.main import get_command

from cityscale.cli import features as features_cli
from cityscale.cli import realtime as realtime_cli
from cityscale.config import Settings
from cityscale.realtime.app import create_app
from pipelines.cluster import CONFIG_KEYS, CONFIG_MAP

HELMFILE = REPO / "helmfile.d"
PLATFORM_VALUES = yaml.safe_load((HELMFILE / "charts/cityscale-platform/values.yaml").read_text())
FEAST_VALUES = yaml.safe_load((HELMFILE / "charts/cityscale-feast/values.yaml").read_text())
ENVS = ["dev", "prod"]


def platform(rendered, env: str) -> list[dict]:
    return load_docs(rendered / env / "cityscale-platform.yaml")


def feast(rendered, env: str) -> list[dict]:
    return load_docs(rendered / env / "cityscale-feast.yaml")


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = find(docs, kind, name)
    return doc


def config_data(rendered, env: str) -> dict[str, str]:
    return one(platform(rendered, env), "ConfigMap", CONFIG_MAP)["data"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def cli_command(argv: list[str]) -> click.Context:
    """Parse ``python -m cityscale.cli <group> <command> [options]`` with the real CLI's groups; the click context.

    Only the gateway and feature groups are assembled (the full app also loads the pipelines/serving plug-ins),
    which are the ones these workloads run.
    """
    assert argv[:3] == ["python", "-m", "cityscale.cli"], argv
    assert (REPO / "cityscale" / "cli" / "__main__.py").is_file()
    app = typer.Typer()
    realtime_cli.register(app)
    features_cli.register(app)
    command = get_command(app)
    args = argv[3:]
    while hasattr(command, "commands"):  # descend through groups (`features build`)
        assert args and args[0] in command.commands, (args, sorted(command.commands))
        command, args = command.commands[args[0]], args[1:]
    return command.make_context(command.name, list(args))


def assert_hardened(pod: dict) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"cityscale.io/pool": "system"}, "CPU services stay off GPU nodes"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] >= 10000
        for kind in ("requests", "limits"):
            assert c["resources"][kind]["cpu"] and c["resources"][kind]["memory"], (c["name"], kind)


def assert_settings_env(container: dict) -> None:
    """Every CITYSCALE_* variable the container sets is read by a Settings field of that name."""
    for name in env_of(container):
        if name.startswith("CITYSCALE_"):
            assert name.removeprefix("CITYSCALE_").lower() in Settings.model_fields, name


def assert_runs_as_pipeline_identity(pod: dict, sas: dict[str, dict], env: str) -> None:
    """Pipeline tasks' KSA, bound through Workload Identity to the GSA that may write the raw/features buckets."""
    assert pod["serviceAccountName"] == "pipeline-runner"
    annotations = sas[pod["serviceAccountName"]]["metadata"]["annotations"]
    assert annotations["iam.gke.io/gcp-service-account"] == fixture_values(env)["workloadIdentity"]["pipelines"]


def service_accounts(rendered, env: str) -> dict[str, dict]:
    return {sa["metadata"]["name"]: sa for sa in find(platform(rendered, env) + feast(rendered, env), "ServiceAccount")}


# ------------------------------------------------------------------------------------ the ConfigMap
@pytest.mark.parametrize("env", ENVS)
def test_config_map_keys_are_exactly_the_keys_every_task_loads(rendered, env: str) -> None:
    data = config_data(rendered, env)
    assert len(set(CONFIG_KEYS)) == len(CONFIG_KEYS)
    assert set(data) == set(CONFIG_KEYS)
    assert "CITYSCALE_MONITOR_PUSHGATEWAY_URL" in CONFIG_KEYS
    assert data["CITYSCALE_IMAGE"] == f"{fixture_values(env)['registry']}/cityscale:{SAMPLE_TAG}"


# -------------------------------------------------------------------------- Feast materialization
@pytest.mark.parametrize("env", ENVS)
def test_materialize_cronjob_builds_the_online_store_hourly(rendered, env: str) -> None:
    docs = feast(rendered, env)
    cron = one(docs, "CronJob", "feast-materialize")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    minute, hour, *rest = spec["schedule"].split()
    assert minute.isdigit() and hour == "*" and rest == ["*", "*", "*"], "hourly, at a fixed minute"
    assert spec["timeZone"] == "Etc/UTC"
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] and job["backoffLimit"] >= 1
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert_hardened(pod)
    assert_runs_as_pipeline_identity(pod, service_accounts(rendered, env), env)
    (container,) = pod["containers"]
    assert container["image"] == config_data(rendered, env)["CITYSCALE_IMAGE"]
    assert not container["image"].endswith(":dev")
    assert {"configMapRef": {"name": CONFIG_MAP}} in container["envFrom"]
    assert_settings_env(container)

    # The script fills ${REDIS_PASSWORD} into the chart's feature_store.yaml, then runs the real build command.
    assert container["command"] == ["sh", "-ec"]
    script = container["args"][0]
    last = [line.strip() for line in script.strip().splitlines()][-1]
    assert last.startswith("exec ")
    ctx = cli_command(shlex.split(last.removeprefix("exec ")))
    assert ctx.command.name == "build"
    env_vars = env_of(container)
    assert env_vars["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "feast-redis-auth", "key": "password"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/feast"]]["configMap"]["name"] == "feast-feature-store"
    assert '> "$CITYSCALE_FEAST_REPO/feature_store.yaml"' in script  # where FeastBackend reads it
    assert volumes[mounts[env_vars["CITYSCALE_FEAST_REPO"]["value"]]]["emptyDir"]["medium"] == "Memory"
    assert env_vars["CITYSCALE_FEATURES_DIR"]["value"].startswith(tuple(mounts))

    # The store it writes is the one the feature server reads: Redis online store, registry in the features bucket.
    store = yaml.safe_load(one(docs, "ConfigMap", "feast-feature-store")["data"]["feature_store.yaml"])
    assert store["online_store"]["type"] == "redis"
    assert "${REDIS_PASSWORD}" in store["online_store"]["connection_string"]
    assert store["registry"]["path"] == f"gs://{fixture_values(env)['buckets']['features']}/feast/registry.db"
    # Redis admits it.
    pod_labels = job["template"]["metadata"]["labels"]
    redis_from = one(docs, "NetworkPolicy", "feast-redis")["spec"]["ingress"][0]["from"]
    assert any(
        all(pod_labels.get(k) == v for k, v in rule["podSelector"]["matchLabels"].items()) for rule in redis_from
    )


def test_tecton_mode_materializes_nothing(rendered) -> None:
    assert not find(load_docs(rendered / "dev-tecton" / "cityscale-feast.yaml"), "CronJob")


# ------------------------------------------------------------------------------ real-time gateway
@pytest.mark.parametrize("env", ENVS)
def test_realtime_gateway_deployment_service_and_journal(rendered, env: str) -> None:
    docs = platform(rendered, env)
    dep = one(docs, "Deployment", "cityscale-realtime-gateway")
    assert dep["spec"]["replicas"] == 1, "one gateway per raw zone (docs/realtime.md)"
    assert dep["spec"]["strategy"] == {"type": "Recreate"}, "the ReadWriteOnce journal must be released first"
    pod = dep["spec"]["template"]["spec"]
    assert_hardened(pod)
    assert_runs_as_pipeline_identity(pod, service_accounts(rendered, env), env)
    (container,) = pod["containers"]
    assert container["image"] == config_data(rendered, env)["CITYSCALE_IMAGE"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in container["envFrom"]
    assert_settings_env(container)

    # The command is the real `cityscale gateway`, listening on the container port.
    ctx = cli_command(container["command"])
    assert ctx.command.name == "gateway"
    port = next(p for p in container["ports"] if p["name"] == "http")["containerPort"]
    assert ctx.params["port"] == port and ctx.params["host"] == "0.0.0.0"

    # The bearer token comes from the Secret.
    env_vars = env_of(container)
    token_ref = env_vars["CITYSCALE_REALTIME_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token_ref == {"name": PLATFORM_VALUES["realtime"]["tokenSecret"], "key": "token"}
    assert "optional" not in token_ref, "no Secret, no gateway: it must never start without its token"

    # The journal lives on the claim.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    journal_dir = env_vars["CITYSCALE_REALTIME_JOURNAL_DIR"]["value"]
    claim_name = volumes[mounts[journal_dir]]["persistentVolumeClaim"]["claimName"]
    pvc = one(docs, "PersistentVolumeClaim", claim_name)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["resources"]["requests"]["storage"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    # Probes hit a route the app really serves, on the serving port.
    routes = {route.path for route in create_app(Settings()).routes}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes and get["port"] == "http", probe

    # The Service reaches exactly these pods on that port.
    svc = one(docs, "Service", "cityscale-realtime-gateway")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]


def test_the_gateway_enforces_the_token_its_deployment_gives_it(rendered, tmp_path, monkeypatch) -> None:
    """The Secret's value reaches Settings through the Deployment's variable, and the app answers 401 without it."""
    (container,) = one(platform(rendered, "dev"), "Deployment", "cityscale-realtime-gateway")["spec"]["template"][
        "spec"
    ]["containers"]
    token_var = next(n for n, e in env_of(container).items() if "secretKeyRef" in e.get("valueFrom", {}))
    for key in [k for k in os.environ if k.startswith(("CITYSCALE_", "FEAST_", "HTTP_", "GRPC_"))]:
        monkeypatch.delenv(key)
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv(token_var, token)
    monkeypatch.setenv("CITYSCALE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("CITYSCALE_STORE_URI", str(tmp_path / "store"))
    settings = Settings()
    assert settings.realtime_token == token and token not in repr(settings)
    record = {"city": "melbourne", "sensor_id": "FliS_T", "hour": "2022-11-01T00:00:00", "count": 5}
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200  # the kubelet's probe carries no token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            resp = client.post("/v1/push", json={"records": [record]}, headers=headers)
            assert resp.status_code == 401, (headers, resp.text)
            assert resp.json()["error"] and resp.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/push", json={"bad": 1}).status_code == 401, "auth before body validation"
        assert client.get("/v1/stats").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        resp = client.post("/v1/push", json={"records": [record]}, headers=auth)
        assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
        assert client.get("/v1/stats", headers=auth).json()["journal_pending_rows"] == 1
    # Without a token configured (loopback use) the gateway stays open.
    monkeypatch.delenv(token_var)
    with TestClient(create_app(Settings(realtime_journal_dir=str(tmp_path / "j2")))) as client:
        assert client.get("/v1/stats").status_code == 200


# --------------------------------------------------------------------------------- Pushgateway
def pushgateway_release() -> dict:
    state = yaml.safe_load((HELMFILE / "50-monitoring.yaml").read_text())
    (release,) = [r for r in state["releases"] if r["name"] == "prometheus-pushgateway"]
    return release


def test_pushgateway_release_is_pinned_and_persistent(rendered) -> None:
    release = pushgateway_release()
    assert release["chart"] == "prometheus-community/prometheus-pushgateway"
    assert release["version"] == "3.6.0"
    for env in ENVS:
        values = yaml.safe_load((rendered / env / "values-prometheus-pushgateway.yaml").read_text())
        # Service and selector label named after the release, as the platform chart's values say.
        assert values["fullnameOverride"] == release["name"] == PLATFORM_VALUES["pushgateway"]["release"]
        assert release["namespace"] == PLATFORM_VALUES["pushgateway"]["namespace"]
        assert values["serviceMonitor"]["enabled"] is False, "the platform chart ships the one ServiceMonitor"
        assert values["persistentVolume"]["enabled"] is True
        mount = values["persistentVolume"].get("mountPath", "/data")  # the chart's default
        assert f"--persistence.file={mount}/pushgateway.data" in values["extraArgs"]
        assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
        assert values["resources"]["limits"]["memory"]


@pytest.mark.parametrize("env", ENVS)
def test_monitoring_gauges_reach_prometheus_through_the_pushgateway(rendered, env: str) -> None:
    release = pushgateway_release()
    docs = platform(rendered, env)
    url = config_data(rendered, env)["CITYSCALE_MONITOR_PUSHGATEWAY_URL"]
    port = PLATFORM_VALUES["pushgateway"]["port"]
    assert url == f"http://{release['name']}.{release['namespace']}.svc.cluster.local:{port}"
    assert Settings(monitor_pushgateway_url=url).monitor_pushgateway_url == url
    sm = one(docs, "ServiceMonitor", "cityscale-pushgateway")
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [release["namespace"]]}
    assert sm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus-pushgateway",  # the chart's name label
        "app.kubernetes.io/instance": release["name"],
    }
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True, "keep the pushed job/instance labels"


def test_monitoring_stale_alert_waits_for_a_first_chance_to_report(rendered) -> None:
    """Never-reported fires only after the Pushgateway has been up longer than the staleness limit."""
    release = pushgateway_release()
    rules = {
        r["alert"]: r
        for g in one(platform(rendered, "dev"), "PrometheusRule", "cityscale-alerts")["spec"]["groups"]
        for r in g["rules"]
    }
    stale = " ".join(rules["CityScaleMonitoringStale"]["expr"].split())
    hours = PLATFORM_VALUES["alerts"]["monitoringStaleHours"]
    selector = f'{{namespace="{release["namespace"]}", job="{release["name"]}"}}'
    assert "or absent(" not in stale, "absent() alone fires on every fresh install"
    assert (
        "(absent(cityscale_monitor_last_run_timestamp_seconds) and on() "
        f"(time() - max(process_start_time_seconds{selector})) > {hours} * 3600)"
    ) in stale
    down = rules["CityScaleMetricsPushgatewayDown"]["expr"]
    assert down == f"absent(up{selector} == 1)"


def test_service_monitor_schema_rejects_mistakes(tmp_path) -> None:
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "s", "namespace": "cityscale"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http", "honorLabels": True}]},
    }
    typo = yaml.safe_load(yaml.safe_dump(good))
    typo["spec"]["endpoints"][0]["honourLabels"] = typo["spec"]["endpoints"][0].pop("honorLabels")
    no_endpoints = yaml.safe_load(yaml.safe_dump(good))
    del no_endpoints["spec"]["endpoints"]
    for name, doc, ok in (("good", good, True), ("typo", typo, False), ("no-endpoints", no_endpoints, False)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        proc = run_checks("validate", str(path))
        assert (proc.returncode == 0) is ok, (name, proc.stdout)

"""Rendered Kubernetes manifests: schemas, RBAC least privilege, Workload Identity, Feast/Tecton, alerts."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from infra_testlib import (
    SAMPLE_TAG,
    crd_openapi_schema,
    find,
    fixture_values,
    lint_bin,
    load_docs,
    run_checks,
    run_lint,
)

from cityscale.features.server import FEAST_SERVER_ENV

ALLOWED_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def platform(rendered, env="dev"):
    return load_docs(rendered / env / "cityscale-platform.yaml")


def feast(rendered, env="dev"):
    return load_docs(rendered / env / "cityscale-feast.yaml")


def test_all_rendered_manifests_validate(rendered):
    proc = run_checks("validate", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validator_rejects_invalid_documents(tmp_path):
    bad = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "y"}, "spec": {"portz": []}},
        {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "metadata": {"name": "t", "namespace": "cityscale"},
            "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": {"numNodes": "two"}},
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]},
        },
        {"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "u"}},
    ]
    for i, doc in enumerate(bad):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(yaml.safe_dump(doc))
        proc = run_checks("validate", str(path))
        assert proc.returncode != 0, (doc["kind"], proc.stdout)


def test_trainjob_for_torch_distributed_matches_the_upstream_schema():
    """The TrainJob shape CityScale's train step creates (runtime torch-distributed, N nodes x G GPUs)."""
    schema = crd_openapi_schema("trainer.kubeflow.org_trainjobs.yaml", "v1alpha1")
    values = fixture_values("prod")
    job = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "cityscale-train", "namespace": values["namespace"]},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "image": f"{values['registry']}/cityscale:{SAMPLE_TAG}",
                "numNodes": 2,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": values["gpu"]["acceleratorCount"]}},
            },
        },
    }
    jsonschema.validate(job, schema)


def test_pipeline_runner_rbac_is_least_privilege(rendered):
    docs = platform(rendered)
    roles = find(docs, "Role")
    assert [r["metadata"]["name"] for r in roles] == ["cityscale-pipeline-runner"]
    role = roles[0]
    assert role["metadata"]["namespace"] == "cityscale"
    granted = {}
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
        assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    assert set(granted) == {
        ("trainer.kubeflow.org", "trainjobs"),
        ("trainer.kubeflow.org", "trainjobs/status"),
        ("trainer.kubeflow.org", "trainingruntimes"),
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
        ("serving.kserve.io", "inferenceservices"),
        ("serving.kserve.io", "inferenceservices/status"),
    }
    for res in ("trainjobs", "inferenceservices"):
        group = "trainer.kubeflow.org" if res == "trainjobs" else "serving.kserve.io"
        assert {"create", "patch", "watch", "get"} <= granted[(group, res)]
    assert granted[("serving.kserve.io", "inferenceservices")] <= ALLOWED_VERBS - {"delete"}
    for res in ("trainingruntimes", "pods", "pods/log", "events"):  # read-only
        assert granted[("trainer.kubeflow.org" if res == "trainingruntimes" else "", res)] <= {"get", "list", "watch"}
    binding = find(docs, "RoleBinding", "cityscale-pipeline-runner")[0]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "cityscale-pipeline-runner",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "cityscale"}]


def test_cluster_scope_is_read_only_on_training_runtimes(rendered):
    docs = platform(rendered)
    for cr in find(docs, "ClusterRole"):
        for rule in cr["rules"]:
            assert rule["apiGroups"] == ["trainer.kubeflow.org"]
            assert rule["resources"] == ["clustertrainingruntimes"]
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for crb in find(docs, "ClusterRoleBinding"):
        assert crb["roleRef"]["kind"] == "ClusterRole"
        assert crb["roleRef"]["name"] in {c["metadata"]["name"] for c in find(docs, "ClusterRole")}
        assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "cityscale"}]
    for doc in platform(rendered) + feast(rendered):
        for rule in doc.get("rules", []):
            assert "secrets" not in rule["resources"]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_workload_identity_annotations(rendered, env):
    wi = fixture_values(env)["workloadIdentity"]
    expected = {
        "pipeline-runner": wi["pipelines"],
        "cityscale-trainer": wi["trainer"],
        "cityscale-serving": wi["serving"],
        "feast-feature-server": wi["feast"],
    }
    sas = {sa["metadata"]["name"]: sa for sa in find(platform(rendered, env) + feast(rendered, env), "ServiceAccount")}
    for name, email in expected.items():
        assert sas[name]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == email
    for name in ("cityscale-trainer", "cityscale-serving", "feast-feature-server", "feast-redis"):
        assert sas[name]["automountServiceAccountToken"] is False


def test_gpu_quota_per_environment(rendered):
    for env, quota in (("dev", "2"), ("prod", "16")):
        rq = find(platform(rendered, env), "ResourceQuota", "cityscale-gpu")[0]
        assert rq["spec"]["hard"] == {"requests.nvidia.com/gpu": quota}


def test_feast_server_is_app_image_running_feast_serve(rendered):
    values = fixture_values("dev")
    docs = feast(rendered)
    dep = find(docs, "Deployment", "feast-feature-server")[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{values['registry']}/cityscale:{SAMPLE_TAG}"
    cmd = container["command"]
    assert cmd[0] == "feast" and "serve" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert FEAST_SERVER_ENV.items() <= env.items()  # the process environment the loopback server runs with
    store = yaml.safe_load(find(docs, "ConfigMap", "feast-feature-store")[0]["data"]["feature_store.yaml"])
    assert store["online_store"]["type"] == "redis"
    assert store["online_store"]["connection_string"].startswith("feast-redis.cityscale.svc.cluster.local:6379")
    assert store["registry"]["path"] == f"gs://{values['buckets']['features']}/feast/registry.db"
    redis = find(docs, "StatefulSet", "feast-redis")[0]
    assert redis["spec"]["template"]["spec"]["containers"][0]["image"].startswith("docker.io/library/redis:7.")
    netpol = find(docs, "NetworkPolicy", "feast-redis")[0]
    assert netpol["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"cityscale.io/redis-client": "true"}}}
    ]
    backend = find(docs, "ConfigMap", "cityscale-feature-backend")[0]["data"]
    assert backend["FEATURE_BACKEND"] == "feast"


def test_tecton_mode_deploys_no_feast(rendered):
    docs = load_docs(rendered / "dev-tecton" / "cityscale-feast.yaml")
    assert not find(docs, "Deployment") and not find(docs, "StatefulSet")
    data = find(docs, "ConfigMap", "cityscale-feature-backend")[0]["data"]
    assert data["FEATURE_BACKEND"] == "tecton"
    assert data["TECTON_URL"] == "https://acme.tecton.ai" and data["TECTON_WORKSPACE"] == "cityscale"


def test_containers_are_hardened(rendered):
    for env in ("dev", "prod"):
        for doc in feast(rendered, env):
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["nodeSelector"] == {"cityscale.io/pool": "system"}, "CPU services stay off GPU nodes"
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] >= 10000
                assert c["resources"]["limits"]["memory"] and c["readinessProbe"] and c["livenessProbe"]


def test_alert_rules_and_dashboards(rendered):
    docs = platform(rendered)
    rules = [r for g in find(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "CityScalePredictorUnavailable",
        "CityScalePredictLatencyHigh",
        "CityScaleFeatureServerUnavailable",
        "CityScaleTrainingJobFailed",
        "CityScaleGpuNodesIdle",
    } <= names
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert "{{ ." not in r["expr"], "unrendered Helm template in expr"
    dashboards = [cm for cm in find(docs, "ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) >= 2
    uids = set()
    for cm in dashboards:
        (body,) = cm["data"].values()
        dash = json.loads(body)
        uids.add(dash["uid"])
        for panel in dash["panels"]:
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    assert len(uids) == len(dashboards)
    pm = find(docs, "PodMonitor")[0]
    assert pm["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "cityscale"}


def test_checkov_kubernetes_has_no_failed_checks(rendered):
    proc = run_lint(
        [
            str(lint_bin("checkov")),
            "-d",
            str(rendered),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ]
    )
    report = json.loads(proc.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    assert summary["failed"] == 0 and proc.returncode == 0, proc.stdout[-3000:]
    assert summary["passed"] >= 100

"""helmfile.d: state files checked strictly, pinned versions, release order, rendered values."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from infra_testlib import REPO, run_checks

HELMFILE = REPO / "helmfile.d"
REQUIRED_RELEASES = {
    "cert-manager",
    "kfp-cluster-scoped",
    "kubeflow-pipelines",
    "kserve-crd",
    "kserve",
    "kubeflow-trainer",
    "airbyte",
    "kube-prometheus-stack",
    "prometheus-pushgateway",
    "cityscale-platform",
    "cityscale-feast",
}


def states() -> list[tuple[Path, dict]]:
    return [(p, yaml.safe_load(p.read_text())) for p in sorted(HELMFILE.glob("*.yaml"))]


def release_order() -> list[str]:
    order = []
    for _, state in states():
        order += [r["name"] for r in state.get("releases", [])]
    return order


def test_state_check_passes():
    proc = run_checks("helmfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (lambda s: s.replace("version: v1.18.2", 'version: ">=1.18"'), "must pin an exact version"),
        (lambda s: s.replace("chart: jetstack/cert-manager", "chart: nojetstack/cert-manager"), "neither oci://"),
        (
            lambda s: s.replace("    values:\n      - values/cert-manager.yaml.gotmpl", "    valuez: []"),
            "unknown key 'valuez'",
        ),
        (lambda s: s.replace("values/cert-manager.yaml.gotmpl", "values/missing.yaml.gotmpl"), "does not exist"),
        (
            lambda s: s.replace(
                "      - values/cert-manager.yaml.gotmpl",
                "      - values/cert-manager.yaml.gotmpl\n    needs:\n      - kserve/kserve",
            ),
            "is not a release of this file",
        ),
    ],
)
def test_state_check_catches_mistakes(tmp_path, mutation, expected):
    copy = tmp_path / "helmfile.d"
    shutil.copytree(HELMFILE, copy)
    target = copy / "00-cert-manager.yaml"
    target.write_text(mutation(target.read_text()))
    proc = run_checks("helmfile", env={"CITYSCALE_HELMFILE_DIR": str(copy)})
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout


def test_required_releases_in_dependency_order():
    order = release_order()
    assert set(order) >= REQUIRED_RELEASES, REQUIRED_RELEASES - set(order)
    pos = {name: i for i, name in enumerate(order)}
    assert pos["cert-manager"] < pos["kserve"] and pos["cert-manager"] < pos["kubeflow-trainer"]
    assert pos["kserve-crd"] < pos["kserve"]
    assert pos["kfp-cluster-scoped"] < pos["kubeflow-pipelines"] < pos["cityscale-platform"]
    assert pos["kube-prometheus-stack"] < pos["cityscale-platform"], "PrometheusRule/PodMonitor CRDs first"
    assert pos["prometheus-pushgateway"] < pos["cityscale-platform"], "the ConfigMap's Pushgateway URL exists first"
    assert pos["cityscale-platform"] < pos["cityscale-feast"]


def test_remote_charts_pinned_exactly():
    for path, state in states():
        for r in state["releases"]:
            if not r["chart"].startswith("./"):
                assert re.fullmatch(r"v?\d+\.\d+\.\d+", str(r.get("version", ""))), (path.name, r["name"])


def test_versions_match_validated_crd_schemas():
    by_name = {r["name"]: r for _, s in states() for r in s["releases"]}
    assert by_name["kubeflow-trainer"]["version"] == "2.3.0"  # tests/infra/schemas: trainer v2.3.0
    assert by_name["kserve-crd"]["version"] == by_name["kserve"]["version"] == "v0.20.0"
    assert by_name["kserve"]["chart"] == "oci://ghcr.io/kserve/charts/kserve-resources"


def test_kfp_overlays_pin_one_release_and_move_namespace():
    refs = set()
    for sub in ("cluster-scoped", "platform"):
        k = yaml.safe_load((HELMFILE / "kustomize/kubeflow-pipelines" / sub / "kustomization.yaml").read_text())
        assert k["namespace"] == "cityscale"
        for res in k["resources"]:
            refs.add(res.split("?ref=")[1])
    assert len(refs) == 1, refs  # which release: tests/test_kfp_versions.py ties it to the kfp SDK and the IR


def test_rendered_values(rendered):
    for env in ("dev", "prod"):
        d = rendered / env
        kserve = yaml.safe_load((d / "values-kserve.yaml").read_text())
        assert kserve["kserve"]["controller"]["deploymentMode"] == "Standard"
        trainer = yaml.safe_load((d / "values-kubeflow-trainer.yaml").read_text())
        assert trainer["runtimes"]["torchDistributed"]["enabled"] is True
        kps = yaml.safe_load((d / "values-kube-prometheus-stack.yaml").read_text())
        spec = kps["prometheus"]["prometheusSpec"]
        assert spec["ruleSelectorNilUsesHelmValues"] is False and spec["podMonitorSelectorNilUsesHelmValues"] is False
        assert kps["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"
        feast = yaml.safe_load((d / "values-cityscale-feast.yaml").read_text())
        assert feast["image"]["tag"] == "0123456789ab"
        assert feast["image"]["repository"].endswith(
            "-docker.pkg.dev/" + feast["image"]["repository"].split("/")[1] + "/cityscale/cityscale"
        )


def test_render_fails_without_image_tag(tmp_path):
    """platform-sync must pass image.tag; an empty tag is an error, not an image called `cityscale:`."""
    proc = run_checks("render", "--out", str(tmp_path / "m"), env={"CITYSCALE_IMAGE_TAG": ""})
    assert proc.returncode != 0
    assert "image.tag is empty" in proc.stdout, proc.stdout

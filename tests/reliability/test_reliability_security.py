"""Security guarantees, checked on what is deployed: the built InferenceService, the rendered chart, the image
recipe, Terraform, and the secret scanner's own behaviour on a planted secret.

Chart rendering and detect-secrets need the lint virtualenv (``.venv-lint``, requirements/infra-lint.txt);
those tests are skipped without it, as in tests/infra.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from cityscale.config import Settings
from serving.inference_service import ServingOptions, build_inference_service, to_manifest

REPO = Path(__file__).resolve().parents[2]
LINT_VENV = (REPO / os.environ.get("LINT_VENV", ".venv-lint")).absolute()  # the Makefile passes a relative path
CHART = REPO / "helmfile.d/charts/cityscale-platform"
needs_lint_venv = pytest.mark.skipif(not (LINT_VENV / "bin/python").is_file(), reason=f"no lint venv at {LINT_VENV}")

RENDER = """
import json, sys, yaml, helm_python as helm
with helm.Chart.load(sys.argv[1]) as chart:
    out = chart.render(json.loads(sys.argv[2]), name="cityscale-platform", namespace="cityscale", is_install=True)
docs = [d for body in out.values() for d in yaml.safe_load_all(body) if d]
print(json.dumps(docs))
"""


def _render(values: dict) -> list[dict]:
    """The chart with ``values`` over the image every install must name (the helmfile passes registry + git SHA)."""
    image = {"repository": "registry.example/cityscale", "servingRepository": "registry.example/cityscale-serving"}
    values = {"image": {**image, "tag": "0123456789ab"}, **values}
    done = subprocess.run(
        [str(LINT_VENV / "bin/python"), "-c", RENDER, str(CHART), json.dumps(values)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


# --- containers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transformer", [False, True])
def test_inference_service_containers_are_hardened(transformer: bool) -> None:
    options = ServingOptions.from_settings(Settings(serving_transformer=transformer), model="0001")
    spec = to_manifest(build_inference_service(options))["spec"]
    components = [spec["predictor"], *([spec["transformer"]] if transformer else [])]
    for component in components:
        scratch = {v["name"]: v for v in component["volumes"]}
        for container in component["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            limits = container["resources"]["limits"]
            assert limits["cpu"] and limits["memory"], "resource limits are required"
            (mount,) = container["volumeMounts"]
            assert mount["mountPath"] == "/tmp" and "emptyDir" in scratch[mount["name"]]
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["HOME"] == "/tmp"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.serving"])
def test_image_runs_as_a_numeric_non_root_user(dockerfile: str) -> None:
    users = re.findall(r"^USER\s+(\S+)", (REPO / dockerfile).read_text(), re.MULTILINE)
    assert users, f"{dockerfile} sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"final USER {users[-1]} must be a numeric non-root uid"


# --- least privilege and Workload Identity ----------------------------------------------------------------------
@needs_lint_venv
def test_pipeline_runner_role_is_limited_to_trainjobs_and_inferenceservices_in_its_namespace() -> None:
    docs = _render({})
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "cityscale-pipeline-runner"]
    (role,) = roles
    assert role["metadata"]["namespace"] == "cityscale"
    writable = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"]
        if set(rule["verbs"]) & {"create", "patch", "update", "delete"}:
            writable |= {f"{g}/{r}" for g in rule["apiGroups"] for r in rule["resources"]}
    assert writable == {"trainer.kubeflow.org/trainjobs", "serving.kserve.io/inferenceservices"}
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    for cluster_role in cluster_roles:  # cluster-wide: read-only
        for rule in cluster_role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, cluster_role["metadata"]["name"]


@needs_lint_venv
def test_service_accounts_use_workload_identity_and_terraform_creates_no_keys() -> None:
    email = "cityscale-serving@my-project.iam.gserviceaccount.com"
    docs = _render({"workloadIdentity": {"pipelines": email, "trainer": email, "serving": email}})
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert len(accounts) == 3
    for account in accounts:
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == email
    terraform = "\n".join(p.read_text() for p in (REPO / "terraform").rglob("*.tf"))
    assert "google_service_account_key" not in terraform, "service account keys must not be created"
    assert "roles/iam.workloadIdentityUser" in terraform


# --- authentication on the inference endpoint --------------------------------------------------------------------
@needs_lint_venv
def test_inference_endpoint_requires_a_jwt_when_enabled() -> None:
    assert not [d for d in _render({}) if d["apiVersion"].startswith("security.istio.io")], "off by default"
    docs = _render({"inferenceAuth": {"enabled": True, "audiences": ["cityscale-inference"]}})
    (authn,) = [d for d in docs if d["kind"] == "RequestAuthentication"]
    (authz,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    selector = {"serving.kserve.io/inferenceservice": "cityscale"}  # the label KServe puts on its pods
    assert authn["spec"]["selector"]["matchLabels"] == selector == authz["spec"]["selector"]["matchLabels"]
    (rule,) = authn["spec"]["jwtRules"]
    assert rule["issuer"].startswith("https://") and rule["jwksUri"].startswith("https://")
    assert rule["audiences"] == ["cityscale-inference"]
    assert authz["spec"]["action"] == "ALLOW"  # an ALLOW policy denies every request no rule matches
    with_token, open_paths = authz["spec"]["rules"]
    assert with_token["from"][0]["source"]["requestPrincipals"], "a token is required"
    operation = open_paths["to"][0]["operation"]
    assert operation["methods"] == ["GET"]
    assert not [p for p in operation["paths"] if "infer" in p or "predict" in p], "inference must never be open"
    assert "from" not in open_paths


# --- secret scanning -----------------------------------------------------------------------------------------------
def _unaudited_findings(repo: Path, baseline: Path) -> list[str]:
    """What scripts/lint_infra.sh checks: refresh a copy of the baseline on ``repo``'s tracked files, list findings
    not audited as false positives."""
    refreshed = baseline.parent / "refreshed.baseline"
    refreshed.write_text(baseline.read_text())
    scan = [str(LINT_VENV / "bin/detect-secrets"), "scan", "--baseline", str(refreshed)]
    subprocess.run([*scan, "--exclude-files", r"^\.secrets\.baseline$"], cwd=repo, check=True, capture_output=True)
    results = json.loads(refreshed.read_text())["results"]
    return [
        f"{path}:{i['line_number']}"
        for path, items in results.items()
        for i in items
        if i.get("is_secret") is not False
    ]


@needs_lint_venv
def test_secret_scanner_passes_the_repo_and_catches_a_planted_secret(tmp_path: Path) -> None:
    baseline = tmp_path / "repo.baseline"
    baseline.write_text((REPO / ".secrets.baseline").read_text())
    assert _unaudited_findings(REPO, baseline) == []

    planted_repo = tmp_path / "planted"
    planted_repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=planted_repo, check=True)
    leaked = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8x1LvW9c"  # pragma: allowlist secret
    (planted_repo / "settings.py").write_text(f'AWS_SECRET_ACCESS_KEY = "{leaked}"\n')
    subprocess.run(["git", "add", "settings.py"], cwd=planted_repo, check=True)
    assert set(_unaudited_findings(planted_repo, baseline)) == {"settings.py:1"}


# Split so that this file does not match itself.
PRIVATE_KEY_PEM = re.compile("-----BEGIN (?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE" + " KEY-----")


def test_no_private_key_or_service_account_key_file_is_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for path in tracked.splitlines():
        file = REPO / path
        if not file.is_file() or file.stat().st_size > 1_000_000:
            continue
        text = file.read_text(errors="ignore")
        assert not PRIVATE_KEY_PEM.search(text), path
        if path.endswith(".json") and '"type": "service_account"' in text:
            pytest.fail(f"{path} looks like a service account key file")

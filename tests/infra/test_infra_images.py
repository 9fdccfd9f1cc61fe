"""Images: the opt-in Tecton image is non-root, licence-noted, locked; Dockerfiles pass hadolint/checkov."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from infra_testlib import REPO, lint_bin, run_lint

DOCKERFILES = sorted(p for p in REPO.glob("Dockerfile*") if p.is_file())


def test_tecton_image_definition():
    text = (REPO / "Dockerfile.tecton").read_text()
    assert "Tecton Proprietary" in text and "Agreement" in text, "licence note must sit where the image is defined"
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "--require-hashes" in text and "feature_repo/tecton/requirements.lock" in text
    for line in text.splitlines():
        if line.startswith("FROM "):
            assert re.match(r"FROM python:3\.11\.\d+-slim-bookworm( AS \w+)?$", line), line


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_app_image_installs_the_openmp_runtime_lightgbm_links():
    """The predictor loads lib_lightgbm.so for the boosters; on a slim image without libgomp the import fails."""
    spec = importlib.util.find_spec("lightgbm")
    assert spec is not None and spec.submodule_search_locations
    lib = Path(spec.submodule_search_locations[0], "lib", "lib_lightgbm.so")
    linked = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "libgomp.so.1" in linked  # if a future wheel bundles its own runtime, this test and the apt lines can go
    for dockerfile in ("Dockerfile", "Dockerfile.serving"):
        assert re.search(r"apt-get install .*\blibgomp1=", (REPO / dockerfile).read_text()), dockerfile


def test_tecton_lock_is_complete_and_hashed():
    lock = (REPO / "feature_repo/tecton/requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+) \\\n    --hash=sha256:([0-9a-f]{64})$", lock, re.M)
    names = {n.lower(): v for n, v, _ in entries}
    assert len(entries) == len(re.findall(r"^[A-Za-z0-9_.-]+==", lock, re.M)) > 50
    assert names["tecton"] == "1.2.13" and names["pyarrow"] == "25.0.1"
    assert names["numpy"].startswith("1.") and names["protobuf"].startswith("4.")
    assert "kfp" not in names and "kserve" not in names


def test_the_build_context_holds_what_every_dockerfile_copies_and_no_venv():
    """.dockerignore is an allowlist: a COPY of a path it leaves out fails the build; .venv must stay out."""
    allowed = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    assert "*" in (REPO / ".dockerignore").read_text().splitlines() and ".venv" not in allowed
    for dockerfile in DOCKERFILES:
        for sources in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", dockerfile.read_text(), re.M):
            for source in sources.split():
                assert source.rstrip("/").split("/")[0] in allowed, f"{dockerfile.name}: COPY {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    proc = run_lint([str(lint_bin("hadolint")), "--failure-threshold", "warning", str(dockerfile)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkov_tecton_dockerfile():
    proc = run_lint(
        [
            str(lint_bin("checkov")),
            "-f",
            "Dockerfile.tecton",
            "--framework",
            "dockerfile",
            "--skip-download",
            "--quiet",
            "--compact",
        ]
    )
    assert proc.returncode == 0, proc.stdout


def test_shellcheck_lint_script():
    proc = run_lint([str(lint_bin("shellcheck")), "scripts/lint_infra.sh"])
    assert proc.returncode == 0, proc.stdout

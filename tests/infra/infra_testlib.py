"""Helpers for the infrastructure tests (see conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).resolve().parent / "infra_checks.py"
LINT_VENV = Path(os.environ.get("LINT_VENV", REPO / ".venv-lint"))
# The vendored upstream CRDs (KServe v0.20.0, Kubeflow Trainer v2.3.0) and CityScale's JSON schemas; see README.md
# there. infra_checks.py (run by the lint venv, apart from the tests) names the same folder SCHEMAS.
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas"
SAMPLE_TAG = "0123456789ab"


def lint_bin(name: str) -> Path:
    path = LINT_VENV / "bin" / name
    if not path.exists():
        pytest.skip(
            f"{path} not found: create the lint venv (python3.11 -m venv .venv-lint && "
            ".venv-lint/bin/pip install -r requirements/infra-lint.txt); make test does this"
        )
    return path


def run_lint(
    args: list[str], *, env: dict | None = None, cwd: Path = REPO, timeout: int = 240
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "KUBECONFIG": "/dev/null", "TF_CLI_CONFIG_FILE": "/dev/null", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_checks(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_lint([str(lint_bin("python")), str(CHECKS), *args], env=env)


def crd_openapi_schema(file: str, version: str) -> dict:
    """The openAPIV3Schema of one served version of a vendored CustomResourceDefinition in CRD_SCHEMAS."""
    crd = yaml.safe_load((CRD_SCHEMAS / file).read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def load_docs(path: Path) -> list[dict]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def fixture_values(env: str) -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / f"helmfile-values.{env}.json").read_text())

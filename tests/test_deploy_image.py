"""The deploy path compiles an immutable image: no ``:dev`` anywhere, every task on ``<registry>/cityscale:<sha>``.

``pipelines/compiled/`` keeps ``cityscale:dev`` (deterministic, committed, never uploaded); ``make compile
CITYSCALE_IMAGE=...`` and ``make deploy`` compile elsewhere with the image of the commit. Components read the
image when ``components`` is first imported, so every compilation with another image runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cityscale.config import Settings
from pipelines.compile import COMMITTED_IMAGE, COMPILED_DIR, PIPELINES, CompileError, check_output
from pipelines.publish import mutable_image_problem

REPO = Path(__file__).resolve().parents[1]
IMAGE = "registry.example/cityscale:0123456789ab"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CITYSCALE_* or deploy variable, plus ``extra``."""
    drop = {"REGISTRY", "GIT_SHA", "DRY_RUN", "ENV", "KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE", "PIPELINE_CONFIG"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCALE_") and k not in drop}
    return env | extra


def cityscale(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cityscale.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_runs_only(compiled: Path, image: str) -> None:
    """Every pipeline is there, no ``:dev`` string anywhere, and every executor runs exactly ``image``."""
    assert sorted(p.stem for p in compiled.glob("*.yaml")) == sorted(PIPELINES)
    for path in compiled.glob("*.yaml"):
        text = path.read_text()
        assert ":dev" not in text, f"{path.name} mentions a :dev image"
        spec = next(yaml.safe_load_all(text))
        images = {name: e["container"]["image"] for name, e in spec["deploymentSpec"]["executors"].items()}
        assert images and set(images.values()) == {image}, (path.name, images)


def test_compile_with_a_registry_image_renders_it_everywhere(tmp_path) -> None:
    """What `make compile CITYSCALE_IMAGE=<registry>/cityscale:<sha>` runs (into build/pipelines/ there)."""
    out = tmp_path / "pipelines"
    proc = cityscale("compile", "--out-dir", str(out), env=clean_env(CITYSCALE_IMAGE=IMAGE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_runs_only(out, IMAGE)


def test_deploy_compiles_the_registry_image_of_the_commit(tmp_path) -> None:
    """`make deploy` (offline dry run): REGISTRY + GIT_SHA decide the image, whatever CITYSCALE_IMAGE says."""
    config = tmp_path / "dev.pipeline-config.json"
    config.write_text(
        json.dumps({"pipeline_root": "gs://p-root", "raw_uri": "gs://p-raw", "models_uri": "gs://p-models"})
    )
    out = tmp_path / "pipelines"
    env = clean_env(
        DRY_RUN="1", GIT_SHA="0123456789ab", REGISTRY="registry.example", CITYSCALE_IMAGE="cityscale:dev", ENV="dev"
    )
    proc = cityscale("deploy", "--compile", "--compiled-dir", str(out), "--pipeline-config", str(config), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(image {IMAGE})" in proc.stdout and "DRY RUN" in proc.stdout
    assert_runs_only(out, IMAGE)


def test_deploy_refuses_a_mutable_image(tmp_path) -> None:
    env = clean_env(DRY_RUN="1", GIT_SHA="0123456789ab", CITYSCALE_IMAGE="cityscale:dev", ENV="dev")
    proc = cityscale("deploy", "--compile", "--compiled-dir", str(tmp_path / "out"), env=env)
    assert proc.returncode == 1
    assert "mutable tag :dev" in proc.stderr and not (tmp_path / "out").exists()


def test_compile_into_another_folder_refuses_a_mutable_image(tmp_path) -> None:
    proc = cityscale("compile", "--out-dir", str(tmp_path / "out"), env=clean_env(CITYSCALE_IMAGE=COMMITTED_IMAGE))
    assert proc.returncode == 1 and "mutable tag :dev" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_the_committed_folder_only_takes_the_committed_image() -> None:
    with pytest.raises(CompileError, match="keeps the committed YAML with image cityscale:dev"):
        check_output(COMPILED_DIR, IMAGE, Settings())
    check_output(COMPILED_DIR, COMMITTED_IMAGE, Settings())


@pytest.mark.parametrize(
    "image, problem",
    [
        (IMAGE, None),
        ("us-central1-docker.pkg.dev/p/cityscale/cityscale@sha256:" + "0" * 64, None),
        ("localhost:5000/cityscale:0123456789ab", None),
        ("cityscale:dev", "mutable tag :dev"),
        ("registry.example/cityscale:latest", "mutable tag :latest"),
        ("registry.example/cityscale", "has no tag"),
        ("localhost:5000/cityscale", "has no tag"),
    ],
)
def test_mutable_image_references(image: str, problem: str | None) -> None:
    found = mutable_image_problem(image)
    assert (found is None) if problem is None else (problem in (found or ""))


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_makefile_hands_the_image_to_compile_and_deploy() -> None:
    """`make -n` prints the recipes without running them: the image reaches the commands that compile."""

    def recipe(*args: str, **env: str) -> str:
        proc = subprocess.run(
            ["make", "-n", *args], cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    compile_with_image = recipe("compile", f"CITYSCALE_IMAGE={IMAGE}")
    assert f"CITYSCALE_IMAGE={IMAGE} .venv/bin/cityscale compile --out-dir build/pipelines" in compile_with_image
    assert "env -u CITYSCALE_IMAGE .venv/bin/cityscale compile\n" in recipe("compile")
    deploy = recipe("deploy", "REGISTRY=registry.example", "GIT_SHA=0123456789ab")
    assert f"CITYSCALE_IMAGE={IMAGE} " in deploy and "deploy --compile --compiled-dir build/pipelines" in deploy
    dry = recipe("deploy", "DRY_RUN=1", "GIT_SHA=0123456789ab", "REGISTRY=")
    assert "CITYSCALE_IMAGE=cityscale:0123456789ab " in dry and ":dev" not in dry


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_makefile_builds_both_images_and_deploys_the_serving_image() -> None:
    """make images builds and pushes the pipeline and serving images of the commit; deploy-serving names both."""
    env = clean_env()

    def recipe(*args: str) -> str:
        proc = subprocess.run(["make", "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    serving_image = IMAGE.replace("/cityscale:", "/cityscale-serving:")
    images = recipe("images", "REGISTRY=registry.example", "GIT_SHA=0123456789ab")
    assert f"-t {IMAGE} ." in images and f"docker push {IMAGE}" in images
    assert "-f Dockerfile.serving" in images and f"-t {serving_image} ." in images
    assert f"docker push {serving_image}" in images
    serve = recipe("deploy-serving", "REGISTRY=registry.example", "GIT_SHA=0123456789ab", "MODELS_URI=gs://m")
    assert f"CITYSCALE_SERVING_IMAGE={serving_image} CITYSCALE_IMAGE={IMAGE} " in serve
    dry = recipe("deploy-serving", "DRY_RUN=1", "GIT_SHA=0123456789ab", "REGISTRY=")
    assert "CITYSCALE_SERVING_IMAGE=cityscale-serving:0123456789ab " in dry and ":dev" not in dry
    for image in (serving_image, "cityscale-serving:0123456789ab"):
        assert mutable_image_problem(image) is None

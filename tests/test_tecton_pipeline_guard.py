"""``feature_backend=tecton`` and the pipeline: compile refuses it, the features task fails fast, both saying why.

The pipeline's features task runs in the main image, which cannot hold the Tecton SDK (Tecton Proprietary,
protobuf<5). On a cluster the backend reaches the task through the ``cityscale-config`` ConfigMap, which the
platform chart renders from the helmfile value ``featureBackend.type`` (feast or tecton).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cityscale.cli.main import app
from cityscale.config import Settings
from cityscale.features import retrieval
from pipelines.cluster import CONFIG_KEYS
from pipelines.compile import CompileError, compile_all

REPO = Path(__file__).resolve().parents[1]
PLATFORM_CHART = REPO / "helmfile.d" / "charts" / "cityscale-platform"
needs_no_tecton = pytest.mark.skipif(
    importlib.util.find_spec("tecton") is not None, reason="the Tecton SDK is installed here (licensed environment)"
)


def assert_explains(message: str) -> None:
    """The message says what is wrong and points at what the repository offers Tecton customers instead."""
    for part in ("features task", "main CityScale image", "no Tecton SDK", "CITYSCALE_FEATURE_BACKEND=feast"):
        assert part in message, part
    for command in ("`tecton apply`", "`make images TECTON=1`"):
        assert command in message, command
    for path in ("feature_repo/tecton", "feature_repo/README.md", "Dockerfile.tecton"):
        assert path in message and (REPO / path).exists(), path


def test_the_cluster_config_can_select_tecton_for_every_task() -> None:
    """Why the runtime guard is needed: the chart allows tecton and every compiled task loads the key."""
    schema = json.loads((PLATFORM_CHART / "values.schema.json").read_text())
    assert "tecton" in schema["properties"]["featureBackend"]["properties"]["type"]["enum"]
    configmap = (PLATFORM_CHART / "templates" / "configmap.yaml").read_text()
    assert "CITYSCALE_FEATURE_BACKEND: {{ .Values.featureBackend.type | quote }}" in configmap
    assert "CITYSCALE_FEATURE_BACKEND" in CONFIG_KEYS


def test_compile_refuses_the_tecton_backend(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSCALE_FEATURE_BACKEND", "tecton")
    with pytest.raises(CompileError) as refused:
        compile_all(tmp_path / "out")
    assert_explains(str(refused.value))
    assert not (tmp_path / "out").exists(), "nothing is written"


def test_the_compile_command_says_why(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYSCALE_FEATURE_BACKEND", "tecton")
    result = CliRunner().invoke(app, ["compile", "--out-dir", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 1
    assert "refusing to compile with CITYSCALE_FEATURE_BACKEND=tecton" in result.output
    assert "Dockerfile.tecton" in result.output


@needs_no_tecton
def test_the_features_step_fails_fast_without_the_tecton_sdk(sample_rows: pd.DataFrame, tmp_path) -> None:
    """What the build_features task does when cityscale-config says tecton: a clear error, no feature computed."""
    settings = Settings(workdir=tmp_path, feature_backend="tecton")
    raw = sample_rows[sample_rows["timestamp_local"] >= "2022-09-01"]
    origins = pd.date_range("2022-09-15", "2022-09-20", freq="D")
    with pytest.raises(retrieval.TectonUnavailable) as failed:
        retrieval.build_training_set(raw, origins, settings)
    assert str(failed.value) == retrieval.TECTON_NOT_IN_PIPELINE_IMAGE
    assert_explains(str(failed.value))

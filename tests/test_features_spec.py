"""The one feature spec, the Feast repository generated from it, and the feature CLI."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from cityscale.config import Settings
from cityscale.features.feast_backend import FEAST_REPO, FeastBackend, feast_objects
from cityscale.features.spec import HISTORY_FEATURE, HISTORY_VIEW, SPEC


def test_spec_is_consistent_with_the_model_contract() -> None:
    names = [f"{v.name}:{f.name}" for v in SPEC.views for f in v.features]
    assert len(names) == len(set(names))
    settings = Settings()
    assert SPEC.view(HISTORY_VIEW).feature(HISTORY_FEATURE).length == settings.input_window
    for service in SPEC.services:
        for view in service.views:
            SPEC.view(view)
    windows = {f.window_hours for f in SPEC.view("sensor_aggregates").features}
    assert windows == {1, 24, 168, 672}  # 1 h, 24 h, 7 d, 28 d
    for view in SPEC.views:
        SPEC.entity(view.entity)
        SPEC.source(view.source)
        assert view.description and view.batch_schedule_hours >= 1


def test_feast_repo_objects_and_profiles(tmp_path: Path) -> None:
    objects = feast_objects(tmp_path / "offline")
    kinds = {type(o).__name__ for o in objects}
    assert kinds == {"Entity", "FileSource", "PushSource", "FeatureView", "FeatureService"}
    pushed = {v.name: v.stream_source.name for v in objects if type(v).__name__ == "FeatureView" and v.stream_source}
    assert pushed == {v.name: v.push_source for v in SPEC.pushed_views()}
    views = {o.name: o for o in objects if type(o).__name__ == "FeatureView"}
    assert {f.name for f in views["sensor_aggregates"].features} == {
        f.name for f in SPEC.view("sensor_aggregates").features
    }

    # Local profile: DuckDB offline, SQLite online, every path under the settings' workdir, none in the repo.
    config = FeastBackend(Settings(workdir=tmp_path)).repo_config()
    assert config.offline_store.type == "duckdb" and config.online_store.type == "sqlite"
    assert str(config.online_store.path).startswith(str(tmp_path))
    assert str(config.registry.path).startswith(str(tmp_path))
    # Cluster profile: Redis online store, registry in GCS.
    cluster = yaml.safe_load((FEAST_REPO / "cluster" / "feature_store.yaml").read_text())
    assert cluster["online_store"]["type"] == "redis"
    assert cluster["registry"]["path"].startswith("gs://")


def test_cli_builds_the_store_and_materializes_the_freshness_hour(tmp_path: Path, monkeypatch) -> None:
    from cityscale.cli.main import app
    from cityscale.config import get_settings
    from cityscale.ingestion.run import ingest_snapshot

    store = tmp_path / "store"
    ingest_snapshot(Settings().sample_data, str(store), start="2022-09-01", settings=Settings())
    monkeypatch.setenv("CITYSCALE_WORKDIR", str(tmp_path / "wd"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["features", "build", "--store", f"file://{store}"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "2022-11-01T00:00:00" in result.output
    backend = FeastBackend(Settings(workdir=tmp_path / "wd"))
    assert backend.build_info().online_as_of == {"melbourne": "2022-11-01T00:00:00"}
    online = backend.online(["FliS_T", "NoSuchSensor_T"])
    assert len(online["sensor_window__history_672h"][0]) == 672
    assert online["sensor_window__history_672h"][1] is None
    assert online["sensor_metadata__city"] == ["melbourne", None]

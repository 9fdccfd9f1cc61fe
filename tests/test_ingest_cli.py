"""The exact commands: ``cityscale ingest --mode ... --source ... --store ...`` and ``cityscale raw stats``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cityscale.cli.main import app
from cityscale.config import get_settings
from cityscale.sources import auckland
from tests.fixtures import melbourne_portal as replay

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CITYSCALE_WORKDIR", str(tmp_path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_snapshot_and_embedded_into_one_store_then_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = f"file://{tmp_path}/store"
    sample = get_settings().sample_data
    out = runner.invoke(
        app, ["ingest", "--mode", "snapshot", "--source", str(sample), "--store", store, "--start", "2022-10-01"]
    )
    assert out.exit_code == 0, out.output
    assert "Result: PASSED" in out.output

    portal = replay.ReplayPortal(files={"hourly_counts.csv": auckland.package_csv().read_bytes()})
    with replay.serve(portal) as url:
        overrides = {
            "auckland": {
                "base_url": f"{url}/files",
                "csv_path": "hourly_counts.csv",
                "start_date": "2025-12-01T00:00:00",
                "backoff_factor_seconds": 0.01,
            }
        }
        monkeypatch.setenv("CITYSCALE_AIRBYTE_CONFIG_OVERRIDES", json.dumps(overrides))
        get_settings.cache_clear()
        out = runner.invoke(app, ["ingest", "--mode", "embedded", "--source", "auckland", "--store", store])
    assert out.exit_code == 0, out.output
    assert "embedded auckland" in out.output

    out = runner.invoke(app, ["raw", "stats", "--store", store])
    assert out.exit_code == 0, out.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.output.splitlines() if "│" in line}
    assert lines["duplicate keys"] == "0"
    assert lines["cities"] == "auckland, melbourne"
    assert lines["to"] == "2026-01-01 05:00"


def test_bad_mode_and_quality_failure_exit_nonzero(tmp_path: Path) -> None:
    out = runner.invoke(app, ["ingest", "--mode", "ftp", "--source", "x", "--store", str(tmp_path)])
    assert out.exit_code != 0
    import pandas as pd

    bad = pd.read_parquet(get_settings().sample_data).head(200)
    bad.loc[3, "count"] = -5
    bad.to_parquet(tmp_path / "bad.parquet")
    out = runner.invoke(app, ["ingest", "--source", str(tmp_path / "bad.parquet"), "--store", str(tmp_path / "s")])
    assert out.exit_code == 2 and "negative" in out.output
    assert not (tmp_path / "s" / "raw").exists()

"""Batch forecasting from a real wide export: labels, origins, and no use of data after an origin."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cityscale.cli.main import app
from cityscale.forecasting.batch import OUTPUT_COLUMNS, batch_forecast
from cityscale.forecasting.forecaster import Forecaster
from tests.conftest import MELBOURNE_2022_OCTOBER

EXPORT = MELBOURNE_2022_OCTOBER  # 24 Sep - 31 Oct 2022 of grouped_data_2022_2022.csv, all sensors


@pytest.fixture(scope="module")
def forecaster(trained_workdir) -> Forecaster:
    return Forecaster.load(trained_workdir / "model")


def test_rows_per_sensor_and_origin_with_file_labels(forecaster: Forecaster) -> None:
    frame, skipped = batch_forecast(EXPORT, forecaster, "2022-10-01", "2022-10-03")
    assert list(frame.columns) == OUTPUT_COLUMNS
    assert len(frame) % 24 == 0
    pairs = frame.groupby(["sensor", "origin"]).size()
    assert (pairs == 24).all()
    assert set(frame["origin"].dt.strftime("%Y-%m-%d %H:%M")) == {
        "2022-10-01 00:00",
        "2022-10-02 00:00",
        "2022-10-03 00:00",
    }
    labels = set(pd.read_csv(EXPORT, usecols=[0]).iloc[:, 0].str.split().str.join(" "))
    assert set(frame["sensor"]) <= labels
    assert frame["sensor"].nunique() + skipped / 3 >= 60  # 66 sensors in the file
    assert ((frame["p10"] <= frame["p50"]) & (frame["p50"] <= frame["p90"])).all()


def test_forecasts_do_not_change_when_later_data_is_removed(forecaster: Forecaster, tmp_path) -> None:
    full, _ = batch_forecast(EXPORT, forecaster, "2022-10-02", "2022-10-02")
    wide = pd.read_csv(EXPORT, index_col=0)
    keep = [c for c in wide.columns if c < "2022-10-02 00:00:00"]
    truncated = tmp_path / "grouped_data_truncated.csv"
    wide[keep].to_csv(truncated)
    cut, _ = batch_forecast(truncated, forecaster, "2022-10-02", "2022-10-02")
    pd.testing.assert_frame_equal(full.reset_index(drop=True), cut.reset_index(drop=True))


def test_cli_writes_the_csv(trained_workdir, tmp_path, monkeypatch) -> None:
    from cityscale.config import get_settings

    monkeypatch.setenv("CITYSCALE_WORKDIR", str(trained_workdir))
    get_settings.cache_clear()
    out = tmp_path / "forecast.csv"
    try:
        result = CliRunner().invoke(
            app,
            [
                "forecast",
                "--data",
                str(EXPORT),
                "--model",
                "production",
                "--start",
                "2022-10-30",
                "--end",
                "2022-10-31",
                "--out",
                str(out),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert list(written.columns) == OUTPUT_COLUMNS and len(written) > 24 * 50


@pytest.mark.e2e
def test_batch_forecast_pipeline_runs_under_kfp_local(trained_workdir, tmp_path) -> None:
    from kfp import local

    from cityscale.config import Settings
    from pipelines.batch_forecast import batch_forecast_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    batch_forecast_pipeline(
        data=str(Settings().sample_data),
        registry_uri=str(trained_workdir / "registry"),
        start="2022-10-20",
        end="2022-10-21",
    )
    (csv,) = list((tmp_path / "root").glob("cityscale-batch-forecast-*/batch-forecast/forecasts"))
    written = pd.read_csv(csv)
    assert list(written.columns) == OUTPUT_COLUMNS
    assert written.groupby(["sensor", "origin"]).size().eq(24).all()
    assert set(written["origin"]) == {"2022-10-20T00:00:00", "2022-10-21T00:00:00"}

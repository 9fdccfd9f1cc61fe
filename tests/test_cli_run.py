"""`cityscale run`: the forecast start it picks, its quiet pipeline output and failure report, the HTML report."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import typer

from cityscale import raw_zone
from cityscale.config import Settings, get_settings
from cityscale.ingestion.run import AKL_PACKAGE, ingest_snapshot
from pipelines import local_run
from pipelines.cli import html_report, next_forecast


@pytest.fixture(scope="module")
def two_cities(tmp_path_factory) -> pd.DataFrame:
    """`raw_zone.sensors()` of a real raw zone as after `make train-full`: Melbourne ends in 2022, Auckland in 2026."""
    store = str(tmp_path_factory.mktemp("store"))
    settings = get_settings()
    ingest_snapshot(settings.sample_data, store, settings=settings)
    ingest_snapshot(AKL_PACKAGE, store, settings=settings)
    return raw_zone.sensors(store)


def test_default_sensor_has_the_most_rows_and_starts_after_its_own_last_hour(two_cities) -> None:
    sensor, start = next_forecast(two_cities)
    longest = two_cities.loc[two_cities["rows"].idxmax()]
    assert sensor == longest["sensor_id"]
    assert start == longest["last"] + pd.Timedelta(hours=1)


def test_a_sensor_of_the_earlier_ending_city_starts_after_its_own_last_hour(two_cities) -> None:
    melbourne = two_cities[two_cities["city"] == "melbourne"]
    assert two_cities["last"].max() > pd.Timestamp("2025-01-01")  # the zone runs years past Melbourne's data
    sensor = melbourne["sensor_id"].iloc[0]
    assert next_forecast(two_cities, sensor) == (sensor, melbourne["last"].iloc[0] + pd.Timedelta(hours=1))
    assert next_forecast(two_cities, sensor)[1] < pd.Timestamp("2023-01-01")


def test_unknown_sensor_is_a_clear_error(two_cities) -> None:
    with pytest.raises(typer.BadParameter, match="no rows in the raw zone"):
        next_forecast(two_cities, "nowhere")


def test_quiet_run_routes_kfp_output_to_the_log_and_reports_each_task(tmp_path) -> None:
    """kfp.local's lines (ANSI-coloured, as it logs them) land in the file; task starts and ends reach the callback."""
    events: list[tuple[str, str]] = []
    log = tmp_path / "run.log"
    with log.open("w") as file:
        stream = local_run._PipelineLog(file, lambda name, status, _s: events.append((name, status)))
        stream.write("09:12:14.738 - INFO - Executing task \x1b[96m'ingest'\x1b[0m\n    [KFP Executor] working")
        stream.write(" hard\nINFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n")
        stream.write("INFO - Executing task 'train'\nTraceback (most recent call last):\nValueError: bad\n")
        stream.write("Task 'train' finished with status FAILURE")
        stream.close_partial()
    assert events == [("ingest", "started"), ("ingest", "SUCCESS"), ("train", "started"), ("train", "FAILURE")]
    assert stream.failed_task == "train"
    assert list(stream.tail) == ["Traceback (most recent call last):", "ValueError: bad"]
    text = log.read_text()
    assert "    [KFP Executor] working hard\n" in text and "\x1b[" not in text


@pytest.mark.e2e
def test_quiet_run_failure_names_the_task_and_keeps_its_last_lines(tmp_path) -> None:
    """A real kfp.local run whose ingest fails (after its retries): PipelineFailed carries the task, its log tail
    and the log file."""
    log = tmp_path / "logs" / "run.log"
    events: list[tuple[str, str]] = []
    with pytest.raises(local_run.PipelineFailed) as failed:
        local_run.run_training_locally(
            Settings(workdir=tmp_path),
            source=str(tmp_path / "no-such-snapshot.parquet"),
            log_path=log,
            on_task=lambda name, status, _s: events.append((name, status)),
        )
    assert failed.value.task == "ingest"
    assert "'ingest'" in str(failed.value) and "FAILURE" in str(failed.value)
    assert any("no-such-snapshot" in line for line in failed.value.tail)
    assert events[0] == ("ingest", "started") and events[-1] == ("ingest", "FAILURE")  # retried in between
    assert set(events) == {("ingest", "started"), ("ingest", "FAILURE")}
    assert "Executing task 'ingest'" in log.read_text()
    assert "PYTHONWARNINGS" not in os.environ or os.environ["PYTHONWARNINGS"] != local_run.QUIET_CHILD_WARNINGS


def test_html_report_is_copied_to_an_html_name(tmp_path) -> None:
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "html_report").write_text("<html>report</html>")
    report = html_report(tmp_path)
    assert report == tmp_path / "backtest-report.html" and report.read_text() == "<html>report</html>"
    assert html_report(tmp_path / "missing") is None

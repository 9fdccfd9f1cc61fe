"""Shared fixtures: real data slices, a trained model in a temporary registry, isolated settings."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from cityscale import raw_zone, registry
from cityscale.config import Settings
from cityscale.ingestion.run import ingest_snapshot
from cityscale.loopback import free_port
from cityscale.model.examples import Examples, cut_examples, origin_grid
from cityscale.panel import Panel

# Compact cuts of the real Melbourne exports, committed with the tests (tests/fixtures/data/README.md):
# whole sensor rows and a run of hourly columns of one upstream grouped_data_*.csv, cells unchanged.
MELBOURNE_PCS = Path(__file__).resolve().parent / "fixtures" / "data" / "melbourne_pcs"
MELBOURNE_2010_SEPTEMBER = MELBOURNE_PCS / "grouped_data_2010-08-30_2010-10-03.csv"  # 15 sensors, daily totals
MELBOURNE_2014_DST = MELBOURNE_PCS / "grouped_data_2014-03-25_2014-04-09.csv"  # first 6 sensors, April DST
MELBOURNE_2022_JANUARY = MELBOURNE_PCS / "grouped_data_2022-01-01_2022-01-07.csv"  # all 66 sensors
MELBOURNE_2022_OCTOBER = MELBOURNE_PCS / "grouped_data_2022-09-24_2022-10-31.csv"  # all 66 sensors
MELBOURNE_LOCATIONS = MELBOURNE_PCS / "sensor_locations.csv"

# No test may reach a Kubernetes cluster by accident.
os.environ["KUBECONFIG"] = "/nonexistent/kubeconfig"
# The inlined forest costs ~55 s of a core per model to build; tests/test_compiled_trees.py builds and serves it
# (the default). Elsewhere every predictor start would build it in the background, beside the other tests.
os.environ.setdefault("CITYSCALE_SERVING_INLINE_TREES", "false")


def sample_examples(settings: Settings, start: str, end: str, stride_hours: int, n_sensors: int = 0) -> Examples:
    """Examples cut from the bundled sample's [start, end) window, ingested into ``settings``' raw zone.

    Origins every ``stride_hours`` up to ``end``; ``n_sensors`` > 0 keeps only the first sensors (by id).
    """
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start=start, end=end, settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(panel.index[0], pd.Timestamp(end), stride_hours)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    if n_sensors:
        sensors = sorted(set(examples.sensor_ids.tolist()))[:n_sensors]
        examples = examples.select(pd.Series(examples.sensor_ids).isin(sensors).to_numpy())
    return examples


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings that keep every store, registry and pipeline root under a fresh temp directory."""
    return Settings(workdir=tmp_path, max_epochs=2)


@pytest.fixture(scope="session")
def sample_rows() -> pd.DataFrame:
    """The bundled real sample as shipped (uncleaned): 12 sensors, 2019-01 to 2022-10, four installed 2021-2022."""
    settings = Settings()
    return pd.read_parquet(settings.sample_data)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir whose raw zone holds Jan-Oct 2022 of the sample and whose registry serves a model.

    Trained briefly on 6-hourly origins: a real forecaster that beats the seasonal baselines on
    September-October, fast enough for every test session.
    """
    from cityscale.training.train import train_model

    workdir = tmp_path_factory.mktemp("trained")
    settings = Settings(workdir=workdir, max_epochs=8)
    ingest_snapshot(settings.sample_data, settings.resolved_store_uri, start="2022-01-01", settings=settings)
    panel = Panel.from_raw(raw_zone.read(settings.resolved_store_uri))
    origins = origin_grid(panel.index[0], pd.Timestamp("2022-09-01"), 6)
    examples = cut_examples(panel, origins, settings.input_window, settings.horizon, settings.min_history_fraction)
    model_dir = workdir / "model"
    train_model(examples, model_dir, settings)
    version = registry.register(model_dir, settings.resolved_registry_uri, settings.model_name, {"wape": 0.0}, "test")
    registry.set_alias(settings.resolved_registry_uri, settings.model_name, "production", version)
    return workdir


EMULATOR = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or shutil.which(
    "gcp-storage-emulator"
)
GCS_TEST_BUCKET = "cityscale-test"


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[dict[str, str]]:
    """gcp-storage-emulator on a free loopback port (in memory) with an anonymous gcsfs configuration.

    Yields the environment a process needs to use it (and sets it in this one for the session).
    """
    if EMULATOR is None:
        pytest.skip("gcp-storage-emulator is not installed (dev extra)")
    port = free_port()
    proc = subprocess.Popen(
        [
            EMULATOR,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "-q",
            "--default-bucket",
            GCS_TEST_BUCKET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "FSSPEC_GS_TOKEN": "anon"}  # pragma: allowlist secret
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        fsspec.config.conf.setdefault("gs", {})["token"] = "anon"  # pragma: allowlist secret
        yield env
    finally:
        for key, value in locals().get("old", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        fsspec.config.conf.get("gs", {}).pop("token", None)
        proc.terminate()
        proc.wait(timeout=10)

"""The boosters compiled to native code (lleaves) answer as LightGBM does, are cached, and never stop serving."""

from __future__ import annotations

import builtins
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from cityscale import registry
from cityscale.config import Settings
from cityscale.forecasting.forecaster import Forecaster
from cityscale.forecasting.service import RawZoneHistory


@pytest.fixture(scope="module")
def model_dir(trained_workdir: Path) -> Path:
    settings = Settings(workdir=trained_workdir)
    uri, _ = registry.resolve("production", settings.resolved_registry_uri, settings.model_name)
    return Path(uri)


@pytest.fixture(scope="module")
def inputs(trained_workdir: Path, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """History and calendar of every sensor of the bundled sample at 30 starts, with missing hours."""
    forecaster = Forecaster.load(model_dir)
    source = RawZoneHistory(Settings(workdir=trained_workdir).resolved_store_uri)
    sensors = list(source.panel.sensor_ids)
    starts = [t for t in pd.date_range("2022-09-01", periods=30, freq="17h") for _ in sensors]
    history = source.history(sensors * 30, starts, forecaster.input_window)
    calendar = forecaster.calendar(starts, source.cities_of(sensors * 30))
    history[::3, ::7] = np.nan  # sensor outages: missing values must take LightGBM's default branches
    history[1::5, -30:] = np.nan
    return history, calendar


@pytest.fixture(scope="module")
def inline_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the inlined forest (~55 s to build here): built by one test, found by the next."""
    return tmp_path_factory.mktemp("compiled-trees")


def test_compiled_boosters_answer_as_lightgbm(model_dir, inputs, tmp_path) -> None:
    plain = Forecaster.load(model_dir).boosters
    compiled = Forecaster.load(model_dir).boosters
    assert compiled.compile(tmp_path / "cache") and compiled.compiled and not plain.compiled
    np.testing.assert_allclose(compiled.predict_scaled(*inputs), plain.predict_scaled(*inputs), rtol=1e-9, atol=1e-9)
    assert len(list((tmp_path / "cache").glob("*.o"))) == len(plain.files)
    assert len(list((tmp_path / "cache").glob("*.o.sha256"))) == len(plain.files)


def test_a_second_load_reuses_the_cached_object_code(model_dir, inputs, tmp_path) -> None:
    first = Forecaster.load(model_dir).boosters
    assert first.compile(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.o")}
    second = Forecaster.load(model_dir).boosters
    assert second.compile(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.o")} == stamps, "recompiled instead of loading"
    np.testing.assert_array_equal(second.predict_scaled(*inputs), first.predict_scaled(*inputs))
    assert all(p.name.endswith((".o", ".o.sha256")) for p in tmp_path.iterdir()), "no half-written file is left"


def test_without_lleaves_lightgbm_keeps_serving(model_dir, inputs, tmp_path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_lleaves(name, *args, **kwargs):
        if name == "lleaves":
            raise ImportError("No module named 'lleaves'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lleaves)
    boosters = Forecaster.load(model_dir).boosters
    assert not boosters.compile(tmp_path) and not boosters.compiled
    monkeypatch.setattr(builtins, "__import__", real_import)
    np.testing.assert_allclose(
        boosters.predict_scaled(*inputs), Forecaster.load(model_dir).boosters.predict_scaled(*inputs), rtol=1e-12
    )


def test_a_damaged_cache_file_is_compiled_afresh_not_loaded(model_dir, inputs, tmp_path) -> None:
    """Loading damaged object code would crash the server; the stored digest catches it first."""
    first = Forecaster.load(model_dir).boosters
    assert first.compile(tmp_path)
    for cached in tmp_path.glob("*.o"):
        cached.write_bytes(cached.read_bytes()[:100])
    boosters = Forecaster.load(model_dir).boosters
    assert boosters.compile(tmp_path) and boosters.compiled
    np.testing.assert_array_equal(boosters.predict_scaled(*inputs), first.predict_scaled(*inputs))


def test_the_inlined_forest_is_built_in_another_process_and_swapped_in(model_dir, inputs, inline_cache) -> None:
    boosters = Forecaster.load(model_dir).boosters
    assert not boosters.compile_inlined_aside(inline_cache), "nothing to swap before the plain forest serves"
    assert boosters.compile(inline_cache) and not boosters.inlined
    assert len(list(inline_cache.glob("*.o"))) == len(boosters.files)  # the plain forest only, so far
    serving = boosters._predictors
    assert boosters.compile_inlined_aside(inline_cache) and boosters.inlined and boosters._predictors is not serving
    assert len(list(inline_cache.glob("*.o"))) == 2 * len(boosters.files)  # cached apart; built by the worker
    np.testing.assert_allclose(
        boosters.predict_scaled(*inputs), Forecaster.load(model_dir).boosters.predict_scaled(*inputs), rtol=1e-9
    )


def test_the_predictor_serves_compiled_boosters_by_default(trained_workdir, inline_cache) -> None:
    from serving.predictor import CityScalePredictor

    defaults = {"serving_inline_trees": Settings.model_fields["serving_inline_trees"].default}  # off in conftest
    predictor = CityScalePredictor(
        Settings(workdir=trained_workdir, forecast_log_enabled=False, compiled_trees_dir=str(inline_cache), **defaults)
    )
    predictor.load()
    boosters = predictor.service.forecaster.boosters
    assert boosters.compiled
    deadline = time.monotonic() + 180  # the inlined forest is built aside, then swapped in
    while not boosters.inlined and time.monotonic() < deadline:
        time.sleep(0.2)
    assert boosters.inlined
    assert REGISTRY.get_sample_value("cityscale_compiled_trees", {"model_name": predictor.name}) == 2
    off = CityScalePredictor(
        Settings(workdir=trained_workdir, forecast_log_enabled=False, serving_compiled_trees=False)
    )
    off.load()
    assert not off.service.forecaster.boosters.compiled
    request = (["FliS_T", "FliS_T"], ["2022-10-01T00:00:00", "2022-10-04T13:00:00"])
    np.testing.assert_allclose(
        predictor.service.forecast(*request).values, off.service.forecast(*request).values, rtol=1e-6, atol=1e-5
    )

"""The pipeline steps as plain functions: the gate refuses worse models."""

from __future__ import annotations

import pandas as pd
import torch

from cityscale import raw_zone, registry, steps
from cityscale.config import Settings
from cityscale.model.contract import WEIGHTS_FILE


def _raw_file(trained_workdir, tmp_path) -> str:
    path = tmp_path / "raw.parquet"
    raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri).to_parquet(path)
    return str(path)


def test_gate_passes_a_trained_model_and_refuses_a_broken_one(trained_workdir, tmp_path) -> None:
    settings = Settings(workdir=tmp_path)
    raw = _raw_file(trained_workdir, tmp_path)
    good = steps.evaluate(raw, str(trained_workdir / "model"), "2022-09-15", "", str(tmp_path / "reg"), settings)
    assert good.passed, good.reason
    assert good.metrics["wape"] < good.metrics["mean4w_wape"]
    assert "PASSED" in good.to_markdown()

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (trained_workdir / "model").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = torch.load(broken / WEIGHTS_FILE, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, broken / WEIGHTS_FILE)
    bad = steps.evaluate(raw, str(broken), "2022-09-15", "", str(tmp_path / "reg"), settings)
    assert not bad.passed
    assert "FAILED" in bad.to_markdown()


def test_candidate_must_beat_production_a_tie_is_not_deployed(trained_workdir, tmp_path) -> None:
    settings = Settings(workdir=tmp_path)
    raw = _raw_file(trained_workdir, tmp_path)
    reg = str(trained_workdir / "registry")
    assert registry.get_alias(reg, "cityscale", "production") is not None
    same = steps.evaluate(raw, str(trained_workdir / "model"), "2022-09-15", "", reg, settings)
    assert "production" in same.result.summary.index
    assert same.result.summary.loc["production", "wape"] == same.result.summary.loc["model", "wape"]
    assert same.metrics["wape"] < same.metrics["mean4w_wape"]  # it beats the baselines ...
    assert not same.passed and "production v0001" in same.reason  # ... but not production


def test_features_keep_targets_out_of_the_test_period(trained_workdir, tmp_path) -> None:
    from cityscale.model.examples import Examples

    raw = _raw_file(trained_workdir, tmp_path)
    n = steps.build_features(raw, "2022-08-01", str(tmp_path / "ex.npz"), Settings())["n_examples"]
    ex = Examples.load(tmp_path / "ex.npz")
    assert len(ex) == n > 1000
    assert (pd.DatetimeIndex(ex.origins) + pd.Timedelta(hours=24) <= pd.Timestamp("2022-08-01")).all()

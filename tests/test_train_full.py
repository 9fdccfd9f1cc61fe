"""``make train-full`` runs the pipeline's own steps: held-out scoring through the gate's ``score``, registration
through ``steps.register`` (the same model card), on a real raw zone (the bundled Melbourne sample)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cityscale import registry
from cityscale.config import Settings
from cityscale.model.contract import ModelContract
from cityscale.training.full import HOLDOUT, train_full


@pytest.mark.parametrize("refit", [False, True], ids=["the-scored-model", "refit-on-everything"])
def test_train_full_scores_the_held_out_months_then_registers_a_model(tmp_path: Path, refit: bool) -> None:
    settings = Settings(workdir=tmp_path, max_epochs=1, origin_stride_hours=24, gbm_rounds=5, strong_baselines=())
    result = train_full(settings, settings.sample_data, auckland=False, refit=refit)

    assert result.version == "0001" and set(result.holdout) == {"melbourne"}
    phases = {"ingest_and_examples", "selection_fit", "held_out_scoring", *(["final_fit"] if refit else []), "register"}
    assert set(result.seconds) == phases
    summary = result.holdout["melbourne"].summary
    assert {"model", "mean4w", "snaive24", "snaive168"} <= set(summary.index)
    origins = pd.DatetimeIndex(result.holdout["melbourne"].origins)
    start, end = HOLDOUT["melbourne"]
    assert origins.min() >= pd.Timestamp(start) and origins.max() < pd.Timestamp(end)

    reg = settings.resolved_registry_uri
    assert registry.get_alias(reg, settings.model_name, "latest")["version"] == "0001"
    uri = registry.version_uri(reg, settings.model_name, "0001")
    card = (Path(uri) / "model_card.md").read_text()
    assert "held-out months" in card and "melbourne_wape" in card and "melbourne_mean4w_wape" in card
    assert "City of Melbourne Pedestrian Counting System" in card
    contract = ModelContract.load(uri)
    assert contract.n_train_examples == result.n_examples
    if refit:  # the final fit on all data, held-out months included
        assert pd.Timestamp(contract.training_end) >= pd.Timestamp(start)
        assert "the same configuration" in card
    else:  # the very model the held-out months were scored with: it never saw them
        assert pd.Timestamp(contract.training_end) + pd.Timedelta(hours=settings.horizon) <= pd.Timestamp(start)
        assert "which this model was trained without" in card

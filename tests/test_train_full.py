"""``make train-full`` runs the pipeline's own steps: held-out scoring through the gate's ``score``, registration
through ``steps.register`` (the same model card), on a real raw zone (the bundled Melbourne sample)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cityscale import registry
from cityscale.config import Settings
from cityscale.model.contract import ModelContract
from cityscale.training.full import HOLDOUT, train_full


def test_train_full_scores_the_held_out_months_then_registers_the_model_trained_on_everything(tmp_path: Path) -> None:
    settings = Settings(workdir=tmp_path, max_epochs=1, origin_stride_hours=24, gbm_rounds=5, strong_baselines=())
    result = train_full(settings, settings.sample_data, auckland=False)

    assert result.version == "0001" and set(result.holdout) == {"melbourne"}
    assert set(result.seconds) == {"ingest_and_examples", "selection_fit", "held_out_scoring", "final_fit", "register"}
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
    # The registered model is the final fit on all data, held-out months included.
    contract = ModelContract.load(uri)
    assert pd.Timestamp(contract.training_end) >= pd.Timestamp(start)
    assert contract.n_train_examples == result.n_examples

"""Training entry point: examples in, model artifact (weights + contract) out.

The same function runs in-process (``make run``, the train component) and, in later modes,
under a distributed Trainer: the model code does not change, only the Trainer's arguments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from cityscale.calendar import CALENDAR_FEATURES
from cityscale.config import Settings
from cityscale.model.contract import WEIGHTS_FILE, ModelContract
from cityscale.model.inputs import input_size
from cityscale.model.lightning import ExamplesDataModule, ForecastModule
from cityscale.windows import Examples


def train_model(examples: Examples, out_dir: str | Path, settings: Settings) -> ModelContract:
    """Fit the global quantile model and write ``model.pt`` and ``contract.json`` to ``out_dir``."""
    if len(examples) < 100:
        raise ValueError(f"only {len(examples)} training examples; need at least 100")
    horizon = examples.target.shape[1]
    input_window = examples.history.shape[1]
    pl.seed_everything(settings.seed, workers=True)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    module = ForecastModule(
        in_dim=input_size(input_window, horizon, len(CALENDAR_FEATURES)),
        horizon=horizon,
        quantiles=list(settings.quantiles),
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
        learning_rate=settings.learning_rate,
    )
    data = ExamplesDataModule(examples, batch_size=settings.batch_size, volume_weighted=settings.volume_weighted_loss)
    trainer = pl.Trainer(
        max_epochs=settings.max_epochs,
        accelerator="auto",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    val_loss = float(trainer.callback_metrics["val_loss"])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(module.net.state_dict(), out_dir / WEIGHTS_FILE)
    origins = examples.origins
    contract = ModelContract(
        input_window=input_window,
        horizon=horizon,
        quantiles=list(settings.quantiles),
        calendar_features=CALENDAR_FEATURES,
        in_dim=module.hparams.in_dim,
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
        cities=sorted(set(examples.cities.tolist())),
        sensors_seen=sorted(set(examples.sensor_ids.tolist())),
        training_start=str(np.datetime64(origins.min(), "h")),
        training_end=str(np.datetime64(origins.max(), "h")),
        n_train_examples=len(examples),
        val_loss=val_loss,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    contract.save(out_dir)
    return contract

"""Lightning wrappers: the training step lives here; the Trainer owns devices and strategy."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from cityscale.model.examples import Examples
from cityscale.model.inputs import encode
from cityscale.model.network import QuantileMLP, pinball_loss


class ForecastModule(pl.LightningModule):
    def __init__(
        self,
        in_dim: int,
        horizon: int,
        quantiles: list[float],
        hidden_size: int,
        dropout: float,
        learning_rate: float,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = QuantileMLP(in_dim, horizon, len(quantiles), hidden_size, dropout)
        self.register_buffer("quantiles", torch.tensor(quantiles, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, mask, weight = batch
        return pinball_loss(self(x), y, mask, self.quantiles, weight)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.trainer.max_epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _tensors(examples: Examples, volume_weighted: bool) -> TensorDataset:
    x, scale = encode(examples.history, examples.calendar)
    observed = np.isfinite(examples.target)
    y = np.where(observed, examples.target, 0.0) / scale[:, None]
    weight = scale / scale.mean() if volume_weighted else np.ones_like(scale)
    return TensorDataset(
        torch.from_numpy(x),
        torch.from_numpy(y.astype(np.float32)),
        torch.from_numpy(observed.astype(np.float32)),
        torch.from_numpy(weight.astype(np.float32)),
    )


class ExamplesDataModule(pl.LightningDataModule):
    """Splits examples in time: the ``validation`` examples (the latest origins) validate, the rest train.

    Batches are sharded over the Trainer's ranks by explicit ``DistributedSampler``s (one replica
    when not distributed) seeded with ``seed`` and set to the Trainer's epoch, so the shuffle order
    depends only on (seed, epoch, rank): a run resumed from a checkpoint sees the same batches as an
    uninterrupted one. ``batch_size`` is per rank.
    """

    def __init__(
        self,
        examples: Examples,
        batch_size: int,
        volume_weighted: bool,
        validation: np.ndarray,
        seed: int = 0,
    ):
        super().__init__()
        self.examples = examples
        self.volume_weighted = volume_weighted
        self.batch_size = batch_size
        self.validation = validation
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = _tensors(self.examples.select(~self.validation), self.volume_weighted)
        self.val_set = _tensors(self.examples.select(self.validation), self.volume_weighted)

    def _sampler(self, dataset: TensorDataset, shuffle: bool) -> DistributedSampler:
        trainer = self.trainer  # None outside a Trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        return sampler

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self._sampler(self.train_set, True))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size * 4, sampler=self._sampler(self.val_set, False))

"""Training entry point: examples in, model artifact (weights + contract) out.

One code path for every mode. ``train_model`` runs in-process (``make run``, the train component)
and, from ``cityscale train`` (``python -m cityscale.training.train`` in TrainJob pods, see ``__main__.py``:
the same typer command, ``cityscale/cli/training.py``), under any Trainer configuration: one process, DDP over
several CPU processes (gloo) or GPUs, several nodes. Only the Trainer's arguments change, never the
model code. The global batch (``settings.batch_size``) is split over the ranks, every rank is
seeded, and only rank 0 writes the artifact.

Checkpoints (``ckpt_dir``, any fsspec path) are written every ``ckpt_every_n_epochs`` epochs (or
``ckpt_every_n_steps`` steps); a run that finds one there resumes from it (epoch, optimizer, LR
schedule), so a killed run, rerun with the same arguments, continues where it stopped.

    cityscale train --examples examples.npz --out model/ [--devices 2 --strategy ddp
        --accelerator cpu] [--precision bf16-mixed] [--num-nodes N] [--ckpt-dir DIR] [--max-epochs N]
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from cityscale import storage
from cityscale.calendar import CALENDAR_FEATURES
from cityscale.config import Settings
from cityscale.model.boosted import BOOSTER_GLOB, train_boosters
from cityscale.model.calibration import CALIBRATION_FILE
from cityscale.model.contract import CONTRACT_FILE, WEIGHTS_FILE, ModelContract
from cityscale.model.examples import Examples, validation_mask
from cityscale.model.inputs import input_size
from cityscale.model.lightning import ExamplesDataModule, ForecastModule

log = logging.getLogger("cityscale.training.train")
LAST_CKPT = "last.ckpt"
RESULT_PREFIX = "CITYSCALE_TRAIN_RESULT "
ARCHITECTURES = {"mlp": "quantile-mlp", "lightgbm": "lightgbm-quantile"}


@dataclass
class TrainRun:
    """What one ``fit`` did (rank 0's view); printed by the CLI as one JSON line."""

    world_size: int = 1
    global_rank: int = 0
    resumed_from: str | None = None
    start_epoch: int = 0
    epochs_run: int = 0
    final_epoch: int = 0
    global_step: int = 0
    n_train_samples: int = 0
    fit_seconds: float = 0.0
    val_loss: float = float("nan")
    extra: dict = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.n_train_samples * self.epochs_run / self.fit_seconds if self.fit_seconds else 0.0


class _RunMonitor(Callback):
    """Checks the world size, reseeds each epoch (dropout) from (seed, epoch, rank), times the fit."""

    def __init__(self, seed: int, expected_world_size: int, run: TrainRun):
        self.seed = seed
        self.expected = expected_world_size
        self.run = run
        self._t0 = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        world = trainer.world_size
        dist = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        log.info(
            "rank %d/%d: world_size=%d (num_nodes=%d x devices=%d), process group size %d, strategy %s",
            trainer.global_rank,
            world,
            world,
            trainer.num_nodes,
            trainer.num_devices,
            dist,
            type(trainer.strategy).__name__,
        )
        if not (world == trainer.num_nodes * trainer.num_devices == self.expected == dist):
            raise RuntimeError(
                f"world size {world} (process group {dist}) != num_nodes {trainer.num_nodes} x devices "
                f"{trainer.num_devices} (expected {self.expected})"
            )
        self.run.world_size = world
        self.run.global_rank = trainer.global_rank

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.start_epoch = trainer.current_epoch
        if trainer.is_global_zero:
            log.info("training from epoch %d (global step %d)", trainer.current_epoch, trainer.global_step)
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.manual_seed(self.seed + 7919 * trainer.current_epoch + trainer.global_rank)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()}
            log.info("epoch %d done: %s", trainer.current_epoch, metrics)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.fit_seconds = time.perf_counter() - self._t0
        self.run.final_epoch = trainer.current_epoch  # epochs completed
        self.run.epochs_run = trainer.current_epoch - self.run.start_epoch
        self.run.global_step = trainer.global_step


def _resume_path(ckpt_dir: str) -> str | None:
    """The newest readable checkpoint in ``ckpt_dir``: ``last.ckpt``, else the newest other one.

    A run killed while writing a checkpoint can leave a truncated file; it is skipped.
    """
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(ckpt_dir)
    if not fs.exists(root):
        return None
    files = [p for p in fs.ls(root, detail=False) if p.endswith(".ckpt")]
    files.sort(key=lambda p: (not p.endswith(LAST_CKPT), -fs.modified(p).timestamp()))
    for path in files:
        try:
            with fs.open(path, "rb") as fh:
                state = torch.load(fh, map_location="cpu", weights_only=False)
            if "state_dict" in state and "loops" in state:
                return fs.unstrip_protocol(path) if "://" in ckpt_dir else path
        except Exception as exc:  # noqa: BLE001 - a truncated file is skipped, whatever the error
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
    return None


def train_model(
    examples: Examples,
    out_dir: str | Path,
    settings: Settings,
    *,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str = "32-true",
    ckpt_dir: str | None = None,
    ckpt_every_n_epochs: int = 1,
    ckpt_every_n_steps: int | None = None,
    run: TrainRun | None = None,
    callbacks: list[Callback] | None = None,
) -> ModelContract:
    """Fit the global quantile model and write ``model.pt`` and ``contract.json`` to ``out_dir``.

    With the defaults this is one process, no checkpoints. The keyword arguments go to the Trainer;
    ``settings.batch_size`` is the global batch, split over ``num_nodes x devices`` ranks. Under a
    multi-process strategy every rank returns the contract, only rank 0 writes the artifact.
    ``callbacks`` are added to the Trainer's (e.g. the GPU check's per-epoch timer).
    """
    if len(examples) < 100:
        raise ValueError(f"only {len(examples)} training examples; need at least 100")
    world_size = num_nodes * devices
    if settings.batch_size % world_size:
        log.warning("batch size %d is not divisible by world size %d", settings.batch_size, world_size)
    horizon = examples.target.shape[1]
    input_window = examples.history.shape[1]
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    module = ForecastModule(
        in_dim=input_size(input_window, horizon, len(CALENDAR_FEATURES)),
        horizon=horizon,
        quantiles=list(settings.quantiles),
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
        learning_rate=settings.learning_rate,
    )
    validation = validation_mask(examples.origins, settings.validation_days)
    data = ExamplesDataModule(
        examples,
        batch_size=max(settings.batch_size // world_size, 1),
        volume_weighted=settings.volume_weighted_loss,
        validation=validation,
        seed=settings.seed,
    )
    run = run if run is not None else TrainRun()
    callbacks = [_RunMonitor(settings.seed, world_size, run), *(callbacks or [])]
    resume = None
    if ckpt_dir:
        ckpt_dir = ckpt_dir.removeprefix("file://")  # Lightning would read file://x as a relative "file:" dir
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="{epoch}-{step}",
                save_last=True,
                save_top_k=1,
                every_n_epochs=None if ckpt_every_n_steps else ckpt_every_n_epochs,
                every_n_train_steps=ckpt_every_n_steps,
            )
        )
        resume = _resume_path(ckpt_dir)
        run.resumed_from = resume
        log.info("resuming from %s" if resume else "no checkpoint in %s: starting from scratch", resume or ckpt_dir)
    trainer = pl.Trainer(
        max_epochs=settings.max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=precision,
        deterministic=True,
        use_distributed_sampler=False,  # ExamplesDataModule shards by rank itself
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=bool(ckpt_dir),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    val_loss = float(trainer.callback_metrics["val_loss"])
    run.val_loss = val_loss
    run.n_train_samples = len(data.train_set)

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
        architecture="+".join(ARCHITECTURES[m] for m in settings.model_members),
        members=list(settings.model_members),
    )
    if trainer.is_global_zero:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(module.net.state_dict(), out_dir / WEIGHTS_FILE)
        if "lightgbm" in settings.model_members:
            started = time.perf_counter()
            kept = train_boosters(
                examples.history,
                examples.calendar,
                examples.target,
                CALENDAR_FEATURES,
                list(settings.quantiles),
                out_dir,
                validation=validation,
                rounds=settings.gbm_rounds,
                early_stopping_rounds=settings.gbm_early_stopping_rounds,
                num_leaves=settings.gbm_num_leaves,
                learning_rate=settings.gbm_learning_rate,
                steps_per_example=settings.gbm_steps_per_example,
                band_steps_per_example=settings.gbm_band_steps_per_example,
                volume_weighted=settings.gbm_volume_weighted,
                seed=settings.seed,
                max_bin=settings.gbm_max_bin,
                bagging_fraction=settings.gbm_bagging_fraction,
                feature_fraction=settings.gbm_feature_fraction,
            )
            run.extra["boosters_s"] = round(time.perf_counter() - started, 1)
            run.extra["booster_rounds"] = {str(q): n for q, n in kept.items()}
        if settings.calibrate_band:
            _calibrate(out_dir, contract, examples.select(validation))
        contract.save(out_dir)  # last: a directory with a contract is complete
    return contract


def _calibrate(out_dir: Path, contract: ModelContract, validation: Examples) -> None:
    """Fit the members' weights and the band's conformal shifts on the held-out validation examples.

    See cityscale/model/calibration.py; the forecaster reads the result from ``calibration.json``.
    """
    from cityscale.forecasting.forecaster import Forecaster
    from cityscale.model.calibration import fit_ensemble_calibration

    forecaster = Forecaster.from_files(out_dir, contract)
    members, scale = forecaster.members_scaled(validation.history, validation.calendar)
    target = validation.target / scale[:, None]
    calibration = fit_ensemble_calibration(
        contract.members, members, target, scale, validation.cities, contract.quantiles
    )
    calibration.save(out_dir)
    log.info("ensemble weights %s, band shifts %s", calibration.weights, calibration.shifts)


def _load_examples(uri: str) -> Examples:
    """The examples from a local path or any fsspec URI (``gs://`` in a TrainJob), read whole into memory."""
    fs, path = storage.filesystem(uri)
    return Examples.load(io.BytesIO(fs.cat_file(path)))


def _publish(local_dir: Path, out_uri: str) -> None:
    """Copy rank 0's artifact to ``out_uri``, each file atomically; the contract goes last, so it marks completion."""
    boosters = sorted(p.name for p in local_dir.glob(BOOSTER_GLOB))
    extras = [CALIBRATION_FILE] if (local_dir / CALIBRATION_FILE).exists() else []
    for name in (WEIGHTS_FILE, *boosters, *extras, CONTRACT_FILE):
        storage.write_bytes_atomic(storage.join(out_uri, name), (local_dir / name).read_bytes())


def _precision(value: str) -> str:
    return {"32": "32-true", "16": "16-mixed"}.get(value, value)


def train_from_files(
    examples: str,
    out: str,
    *,
    devices: int = 1,
    strategy: str = "auto",
    accelerator: str = "auto",
    precision: str = "32",
    num_nodes: int = 1,
    ckpt_dir: str | None = None,
    ckpt_every_epochs: int = 1,
    ckpt_every_steps: int | None = None,
    max_epochs: int | None = None,
) -> None:
    """``cityscale train`` / ``python -m cityscale.training.train``: examples file in, artifact out.

    Rank 0 prints one ``CITYSCALE_TRAIN_RESULT {json}`` line (what TrainJob and the tests parse).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    if max_epochs is not None:
        settings = settings.model_copy(update={"max_epochs": max_epochs})
    data = _load_examples(examples)
    run = TrainRun()
    remote = "://" in out  # e.g. gs:// from a TrainJob: train into a local directory, then upload
    local_out = Path(tempfile.mkdtemp(prefix="cityscale-model-")) if remote else Path(out)
    contract = train_model(
        data,
        local_out,
        settings,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=_precision(precision),
        ckpt_dir=ckpt_dir,
        ckpt_every_n_epochs=ckpt_every_epochs,
        ckpt_every_n_steps=ckpt_every_steps,
        run=run,
    )
    if run.global_rank != 0:
        return
    if remote:
        _publish(local_out, out)
    result = {k: v for k, v in run.__dict__.items() if k != "extra"}
    result.update(samples_per_s=run.samples_per_s, val_loss=contract.val_loss, out=str(out))
    print(RESULT_PREFIX + json.dumps(result), flush=True)

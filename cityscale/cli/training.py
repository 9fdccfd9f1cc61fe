"""``cityscale train``: train a model from an examples file, under any Trainer configuration.

The same command is what TrainJob pods run as ``python -m cityscale.training.train`` (torchrun ``--module``):
``cityscale/training/train/__main__.py`` hands this function to ``typer.run``, so both parse the same flags.
Torch is imported only when the command runs, not when the CLI starts.
"""

from __future__ import annotations

from enum import StrEnum

import typer


class Strategy(StrEnum):
    auto = "auto"
    ddp = "ddp"


class Accelerator(StrEnum):
    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class Precision(StrEnum):
    full = "32"
    full_true = "32-true"
    bf16_mixed = "bf16-mixed"


def train(
    examples: str = typer.Option(..., help="Examples .npz (the features step's Dataset); path or URI."),
    out: str = typer.Option(..., help="Model artifact directory or URI (written by rank 0)."),
    devices: int = typer.Option(1, help="Devices per node."),
    strategy: Strategy = typer.Option(Strategy.auto, help="Lightning strategy."),
    accelerator: Accelerator = typer.Option(Accelerator.auto, help="Lightning accelerator."),
    precision: Precision = typer.Option(Precision.full, help="Training precision."),
    num_nodes: int = typer.Option(1, help="Nodes (a multi-node TrainJob)."),
    ckpt_dir: str = typer.Option(None, help="Checkpoint directory (fsspec); a run resumes from it."),
    ckpt_every_epochs: int = typer.Option(1, help="Checkpoint every N epochs."),
    ckpt_every_steps: int = typer.Option(None, help="Checkpoint every N steps instead."),
    max_epochs: int = typer.Option(None, help="Default: settings (CITYSCALE_MAX_EPOCHS)."),
) -> None:
    """Train on EXAMPLES and write the model artifact to OUT; rank 0 prints one CITYSCALE_TRAIN_RESULT JSON line."""
    from cityscale.training.train import train_from_files

    train_from_files(
        examples,
        out,
        devices=devices,
        strategy=strategy.value,
        accelerator=accelerator.value,
        precision=precision.value,
        num_nodes=num_nodes,
        ckpt_dir=ckpt_dir,
        ckpt_every_epochs=ckpt_every_epochs,
        ckpt_every_steps=ckpt_every_steps,
        max_epochs=max_epochs,
    )


def register(app: typer.Typer) -> None:
    """Attach ``train`` to the main CLI."""
    app.command("train")(train)

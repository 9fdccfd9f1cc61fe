"""``python -m cityscale.training.train``: what TrainJob pods run (``torchrun --module``): ``cityscale train``.

A ``__main__`` of its own, not a block at the end of the training module: the command (``cityscale/cli/training.py``)
imports the training module, so the module importing the command back would be an import cycle.
"""

import typer

from cityscale.cli.training import train

typer.run(train)

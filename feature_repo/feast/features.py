"""Feast objects for `feast apply` from the command line, generated from the one feature spec.

`cityscale features build` applies the same objects programmatically (``cityscale.features.feast_backend``);
this file exists so that the stock Feast CLI (`feast -c feature_repo/feast plan|apply|serve`) works on
the repository too. The computed feature tables are read from ``${CITYSCALE_FEATURES_DIR}/offline``.
"""

import os
from pathlib import Path

from cityscale.features.feast_backend import feast_objects

_FEATURES_DIR = Path(os.environ.get("CITYSCALE_FEATURES_DIR", "local_outputs/features")).absolute()

for _obj in feast_objects(_FEATURES_DIR / "offline"):
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj

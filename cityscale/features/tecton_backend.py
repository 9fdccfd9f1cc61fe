"""Opt-in Tecton backend: training sets from the Tecton repository in ``feature_repo/tecton``.

LICENCE: this module imports ``tecton``, which is "Tecton Proprietary" software, usable only in connection
with the Tecton Platform under an agreement. It is imported only when ``feature_backend == "tecton"`` and
runs in the separate Tecton environment (``feature_repo/tecton/requirements.txt``, ``Dockerfile.tecton``):
Tecton pins ``protobuf<5`` and cannot share the kfp/kserve environment. Nothing in the default path,
``make test`` or CI imports it; ``CITYSCALE_TECTON=1`` opts the Tecton tests in.

Offline retrieval runs on Rift (DuckDB) from source; Tecton names offline features ``<view>__<feature>``,
the same full names the Feast backend uses, so :func:`frame_to_training_set` converts both alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from cityscale.config import Settings

TECTON_REPO = Path(__file__).resolve().parents[2] / "feature_repo" / "tecton"
LOCAL_RIFT = {
    "TECTON_SKIP_OBJECT_VALIDATION": "true",
    "TECTON_BATCH_COMPUTE_MODE": "rift",
    "TECTON_OFFLINE_RETRIEVAL_COMPUTE_MODE": "rift",
    "TECTON_CONF_DISABLE_AWS_SECRETS": "true",
    "TECTON_CONF_DISABLE_DBUTILS": "true",
}


def load_repo(repo: Path = TECTON_REPO) -> dict[str, Any]:
    """Import the Tecton repository's objects (licensed: needs the ``tecton`` package)."""
    import importlib

    for key, value in LOCAL_RIFT.items():
        os.environ.setdefault(key, value)
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    services = importlib.import_module("feature_services.services")
    return {"sensor_training": services.sensor_training, "sensor_online": services.sensor_online}


def build_training_set(raw: Any, origins: pd.DatetimeIndex, settings: Settings) -> Any:
    """Point-in-time training set through Tecton (``get_features_for_events``), as a ``TrainingSet``."""
    from cityscale.features.compute import FeatureComputer
    from cityscale.features.training_set import frame_to_training_set

    service = load_repo()["sensor_training"]
    computer = FeatureComputer(raw)
    spine = computer.training_spine(origins)
    labels = computer.compute(spine, views=[], horizon=settings.horizon).labels
    events = spine[["sensor_id", "city", "event_timestamp"]].copy()
    events["row_id"] = range(len(events))
    frame = service.get_features_for_events(events, from_source=True).to_pandas()
    frame = frame.sort_values("row_id").reset_index(drop=True)
    return frame_to_training_set(frame, spine, labels, settings, "tecton")

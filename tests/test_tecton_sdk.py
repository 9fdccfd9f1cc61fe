"""Tests that import the Tecton SDK: opt-in only (``CITYSCALE_TECTON=1``) in the Tecton environment.

`tecton` is "Tecton Proprietary" software, usable only with the Tecton Platform under an agreement, so
`make test` and CI never import it; a licensee runs `CITYSCALE_TECTON=1 make features-test` inside the
Tecton environment (feature_repo/tecton/requirements.txt, Dockerfile.tecton).
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

LICENCE = (
    "Tecton SDK tests are opt-in: `tecton` is Tecton Proprietary (use only with the Tecton Platform under an "
    "agreement); set CITYSCALE_TECTON=1 in the Tecton environment to run them"
)
pytestmark = pytest.mark.skipif(os.environ.get("CITYSCALE_TECTON") != "1", reason=LICENCE)


def test_tecton_repo_loads_and_matches_the_spec() -> None:
    from cityscale.features.spec import SPEC
    from cityscale.features.tecton_backend import load_repo

    services = load_repo()
    assert set(services) == {s.name for s in SPEC.services}
    for service in services.values():
        service.validate()


def test_tecton_training_set_equals_the_feast_one(sample_rows: pd.DataFrame, tmp_path) -> None:
    import numpy as np

    from cityscale.config import Settings
    from cityscale.features.retrieval import build_training_set
    from cityscale.features.tecton_backend import build_training_set as tecton_build

    raw = sample_rows[(sample_rows["timestamp_local"] >= "2022-08-01")]
    origins = pd.date_range("2022-08-15", "2022-09-15", freq="D")
    settings = Settings(workdir=tmp_path)
    feast = build_training_set(raw, origins, settings).examples
    tecton = tecton_build(raw, origins, Settings(workdir=tmp_path, feature_backend="tecton")).examples
    np.testing.assert_array_equal(feast.history, tecton.history)
    np.testing.assert_array_equal(feast.calendar, tecton.calendar)

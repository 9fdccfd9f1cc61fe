"""Hyper-parameters travel one way: ``TRAINING_FIELDS`` names what training reads, ``Settings.as_env`` sends it.

A cluster TrainJob's pods build ``Settings()`` from their environment (training/trainjob.py), so a field that
training reads but ``TRAINING_FIELDS`` lacks silently trains with the pod's default. Here a real ``train_model``
run records every Settings field it reads, and ``as_env`` is checked to round-trip through ``Settings()``.
(tests/test_trainjob.py follows the values through the request and the submitted TrainJob.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cityscale.config import TRAINING_FIELDS, Settings
from cityscale.model.examples import Examples
from tests.conftest import sample_examples

# Settings fields that train_model may read although they are not hyper-parameters of the run, each with why.
# Empty: train_model reads nothing else (input_window and horizon come from the examples' shapes).
NOT_TRAINING_FIELDS: frozenset[str] = frozenset()


def clean_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """This process's environment as a pod sees it: no CITYSCALE_* variable but those in ``env``."""
    for var in list(os.environ):
        if var.upper().startswith("CITYSCALE_"):
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)


class RecordingSettings(Settings):
    """Settings that note the name of every field read from them (after ``reads`` is cleared)."""

    reads: ClassVar[set[str]] = set()

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).model_fields:
            RecordingSettings.reads.add(name)
        return super().__getattribute__(name)


@pytest.fixture(scope="module")
def tiny_examples(tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """Three sensors of the bundled sample, Feb-Mar 2022, daily origins: a few hundred real examples."""
    settings = Settings(workdir=tmp_path_factory.mktemp("training-settings"))
    return sample_examples(settings, "2022-01-15", "2022-04-01", 24, n_sensors=3)


def test_training_reads_exactly_the_training_fields(tiny_examples: Examples, tmp_path: Path) -> None:
    """A real train_model run (both members) reads only TRAINING_FIELDS (or allowed fields), and reads them all."""
    from cityscale.training.train import train_model

    assert len(tiny_examples) >= 100
    settings = RecordingSettings(
        workdir=tmp_path,
        max_epochs=1,
        batch_size=128,
        hidden_size=16,
        gbm_rounds=3,
        gbm_num_leaves=7,
        gbm_steps_per_example=3,
        gbm_band_steps_per_example=2,
        model_members=("mlp", "lightgbm"),
    )
    RecordingSettings.reads.clear()
    contract = train_model(tiny_examples, tmp_path / "model", settings, accelerator="cpu")
    reads = set(RecordingSettings.reads)
    assert contract.members == ["mlp", "lightgbm"]
    missing = reads - set(TRAINING_FIELDS) - NOT_TRAINING_FIELDS
    assert not missing, f"training reads {sorted(missing)}: add them to config.TRAINING_FIELDS (or the allow-list)"
    unread = set(TRAINING_FIELDS) - reads
    assert not unread, f"TRAINING_FIELDS names {sorted(unread)}, which training no longer reads"


def test_training_fields_are_settings_fields_without_duplicates() -> None:
    assert set(TRAINING_FIELDS) <= set(Settings.model_fields)
    assert len(set(TRAINING_FIELDS)) == len(TRAINING_FIELDS)


def plain_fields() -> list[str]:
    """Every field read under its CITYSCALE_<FIELD> name alone (no validation alias)."""
    return [n for n, f in Settings.model_fields.items() if f.validation_alias is None and f.alias is None]


def test_as_env_round_trips_every_plain_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defaults and a tuple, a float, a bool, a path, a dict: ``Settings()`` reads back what ``as_env`` wrote."""
    settings = Settings(
        workdir=tmp_path / "work dir",
        quantiles=(0.05, 0.25, 0.5, 0.75, 0.95),
        learning_rate=1 / 3,
        volume_weighted_loss=True,
        model_members=("mlp",),
        strong_baselines=(),
        airbyte_config_overrides={"melbourne": {"base_url": "http://x", "page": 2}},
        image='cityscale:"quoted" [1]',
    )
    fields = plain_fields()
    env = settings.as_env(fields)
    assert set(env) == {f"CITYSCALE_{n.upper()}" for n in fields}
    assert env["CITYSCALE_QUANTILES"] == "[0.05, 0.25, 0.5, 0.75, 0.95]"
    assert env["CITYSCALE_VOLUME_WEIGHTED_LOSS"] == "true" and env["CITYSCALE_SEED"] == "42"
    assert env["CITYSCALE_WORKDIR"] == str(tmp_path / "work dir")  # strings and paths as they are, unquoted
    clean_env(monkeypatch, env)
    back = Settings()
    assert {n: getattr(back, n) for n in fields} == {n: getattr(settings, n) for n in fields}


def test_as_env_takes_an_aliased_field_only_where_the_prefixed_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """feature_backend reads CITYSCALE_FEATURE_BACKEND first: sent. http_port reads HTTP_PORT first: refused."""
    env = Settings(feature_backend="tecton").as_env(["feature_backend"])
    assert env == {"CITYSCALE_FEATURE_BACKEND": "tecton"}
    clean_env(monkeypatch, env)
    monkeypatch.setenv("FEATURE_BACKEND", "feast")
    assert Settings().feature_backend == "tecton"
    for aliased in ("http_port", "kfp_host"):
        with pytest.raises(ValueError, match=aliased):
            Settings().as_env([aliased])
    with pytest.raises(ValueError, match="not Settings fields"):
        Settings().as_env(["seed", "no_such_field"])

"""The model registry: versions, aliases, rollback, resolution errors."""

from __future__ import annotations

import pytest

from cityscale import registry
from cityscale.forecasting.forecaster import Forecaster


def test_versions_aliases_and_rollback(trained_workdir, tmp_path) -> None:
    reg, name = str(tmp_path / "registry"), "cityscale"
    model_dir = trained_workdir / "model"
    v1 = registry.register(model_dir, reg, name, {"wape": 0.2}, "card one")
    v2 = registry.register(model_dir, reg, name, {"wape": 0.1}, "card two")
    assert (v1, v2) == ("0001", "0002")
    assert registry.versions(reg, name) == ["0001", "0002"]
    assert registry.get_alias(reg, name, "latest")["version"] == "0002"
    assert registry.get_alias(reg, name, "production") is None

    registry.set_alias(reg, name, "production", v1)
    registry.set_alias(reg, name, "production", v2)
    assert registry.resolve("production", reg, name)[1] == "0002"
    assert registry.rollback(reg, name) == "0001"
    uri, version = registry.resolve("production", reg, name)
    assert version == "0001"
    assert Forecaster.load(uri, version).horizon == 24
    assert (tmp_path / "registry" / name / "versions" / "0002" / "model_card.md").read_text() == "card two"


def test_resolution_errors_are_clear(tmp_path) -> None:
    reg = str(tmp_path / "empty")
    with pytest.raises(registry.RegistryError, match="no model is registered"):
        registry.resolve("production", reg, "cityscale")
    with pytest.raises(registry.RegistryError, match="no version 0007"):
        registry.resolve("7", reg, "cityscale")
    with pytest.raises(registry.RegistryError, match="neither an alias"):
        registry.resolve(str(tmp_path / "nope"), reg, "cityscale")
    with pytest.raises(registry.RegistryError, match="no version"):
        registry.set_alias(reg, "cityscale", "production", "0001")

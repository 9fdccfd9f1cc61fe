"""A versioned model registry on any fsspec store (a local folder by default, a GCS bucket in production).

Layout::

    <registry>/<name>/versions/<NNNN>/{model.pt, contract.json, metrics.json, model_card.md}
    <registry>/<name>/aliases/<alias>.json      {"version": "NNNN", "updated_at": ...}

``latest`` moves on every registration; ``production`` only when a deployment promotes a version,
and it remembers the version it replaced so a rollback is one call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cityscale import storage
from cityscale.model.contract import ModelContract

ALIASES = ("latest", "production")


class RegistryError(LookupError):
    pass


def _root(registry_uri: str, name: str) -> str:
    return storage.join(registry_uri, name)


def versions(registry_uri: str, name: str) -> list[str]:
    fs, path = storage.filesystem(storage.join(_root(registry_uri, name), "versions"))
    if not fs.exists(path):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def version_uri(registry_uri: str, name: str, version: str) -> str:
    return storage.join(_root(registry_uri, name), "versions", version)


def model_card(contract: ModelContract, model_name: str, metrics: dict[str, float], scored_on: str) -> str:
    """The registry's model card: what the model is, what it was trained on, how it was scored."""
    sources = {
        "melbourne": "City of Melbourne Pedestrian Counting System",
        "auckland": "Heart of the City Auckland pedestrian counts",
    }
    return "\n".join(
        [
            f"# {model_name}",
            "",
            f"Global quantile model ({contract.architecture}; members {contract.members}, their quantiles averaged) "
            f"forecasting {contract.horizon} hourly counts (quantiles {contract.quantiles}) from the previous "
            f"{contract.input_window} hours and calendar covariates. Trained on origins {contract.training_start} .. "
            f"{contract.training_end} ({contract.n_train_examples:,} examples, {len(contract.sensors_seen)} sensors, "
            f"cities {contract.cities}).",
            "",
            f"## Backtest metrics ({scored_on})",
            "",
            *[f"- {k}: {v:.4f}" for k, v in sorted(metrics.items())],
            "",
            "Data: " + "; ".join(sources.get(c, c) for c in contract.cities) + " (CC BY 4.0).",
        ]
    )


def register(model_dir: str | Path, registry_uri: str, name: str, metrics: dict[str, Any], card: str) -> str:
    """Copy a model artifact into the next version and point ``latest`` at it."""
    existing = versions(registry_uri, name)
    version = f"{int(existing[-1]) + 1 if existing else 1:04d}"
    target = version_uri(registry_uri, name, version)
    storage.upload_dir(model_dir, target)
    storage.write_json(storage.join(target, "metrics.json"), metrics)
    storage.write_bytes_atomic(storage.join(target, "model_card.md"), card.encode())
    set_alias(registry_uri, name, "latest", version)
    return version


def get_alias(registry_uri: str, name: str, alias: str) -> dict[str, Any] | None:
    uri = storage.join(_root(registry_uri, name), "aliases", f"{alias}.json")
    return storage.read_json(uri) if storage.exists(uri) else None


def set_alias(registry_uri: str, name: str, alias: str, version: str) -> None:
    if version not in versions(registry_uri, name):
        raise RegistryError(f"{name} has no version {version}")
    previous = get_alias(registry_uri, name, alias)
    record = {
        "version": version,
        "previous": previous["version"] if previous else None,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    storage.write_json(storage.join(_root(registry_uri, name), "aliases", f"{alias}.json"), record)


def rollback(registry_uri: str, name: str, alias: str = "production") -> str:
    """Point ``alias`` back at the version it held before its last move."""
    record = get_alias(registry_uri, name, alias)
    if not record or not record.get("previous"):
        raise RegistryError(f"{name}:{alias} has no previous version to roll back to")
    set_alias(registry_uri, name, alias, record["previous"])
    return record["previous"]


def resolve(model: str, registry_uri: str, name: str) -> tuple[str, str]:
    """(uri, version) for an alias (``latest``/``production``), a version number, or a directory URI."""
    if model in ALIASES:
        record = get_alias(registry_uri, name, model)
        if record is None:
            raise RegistryError(f"no model is registered as {name}:{model} in {registry_uri}")
        return version_uri(registry_uri, name, record["version"]), record["version"]
    if model.isdigit():
        version = f"{int(model):04d}"
        if version not in versions(registry_uri, name):
            raise RegistryError(f"{name} has no version {version} in {registry_uri}")
        return version_uri(registry_uri, name, version), version
    if not storage.exists(model):
        raise RegistryError(f"model {model!r} is neither an alias, a version nor an existing directory")
    return model, "unregistered"

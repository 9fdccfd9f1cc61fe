"""Connector definitions from ``airbyte/``: connection files, their manifests and configuration.

One connection file (``airbyte/connections/<name>.yaml``) is the single description of a source
that both ingestion modes read: ``make airbyte-apply`` pushes it to an Airbyte server, and the
embedded mode runs its manifest with the same configuration in-process. The connector name on the
command line (``--source melbourne``) is the file's stem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cityscale.config import Settings

_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)\}")


@dataclass(frozen=True)
class Connection:
    """A parsed ``airbyte/connections/<name>.yaml``."""

    key: str  # file stem, the CLI's connector name
    name: str  # Airbyte connection name
    city: str
    source_name: str
    definition_name: str
    manifest_path: Path
    source_configuration: dict[str, Any]
    destination: str
    counts_stream: str
    metadata_streams: tuple[str, ...]
    streams: tuple[dict[str, Any], ...]
    schedule: dict[str, Any]
    namespace_format: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return yaml.safe_load(self.manifest_path.read_text())

    def stream_names(self) -> list[str]:
        return [self.counts_stream, *self.metadata_streams]


def airbyte_dir(settings: Settings) -> Path:
    return Path(settings.airbyte_dir)


def available(settings: Settings) -> list[str]:
    return sorted(p.stem for p in (airbyte_dir(settings) / "connections").glob("*.yaml"))


def load_connection(key: str, settings: Settings) -> Connection:
    """Read a connection file by connector name (``melbourne``, ``auckland``)."""
    root = airbyte_dir(settings)
    path = root / "connections" / f"{key}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown connector {key!r}; known: {available(settings)} (in {root / 'connections'})")
    doc = yaml.safe_load(path.read_text())
    src = doc["source"]
    return Connection(
        key=key,
        name=doc["name"],
        city=doc["city"],
        source_name=src["name"],
        definition_name=src.get("definition_name", src["name"]),
        manifest_path=root / src["manifest"],
        source_configuration=dict(src.get("configuration") or {}),
        destination=doc["destination"],
        counts_stream=doc["counts_stream"],
        metadata_streams=tuple(doc.get("metadata_streams") or ()),
        streams=tuple(doc["streams"]),
        schedule=dict(doc.get("schedule") or {"schedule_type": "manual"}),
        namespace_format=doc.get("namespace_format", key),
        raw=doc,
    )


def load_destination(name: str, settings: Settings, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A destination file with ``${VAR}`` references filled from the environment (secrets stay out of git)."""
    path = airbyte_dir(settings) / "destinations" / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    return {"name": doc["name"], "configuration": expand_env(doc["configuration"], environ)}


def expand_env(value: Any, environ: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` in every string; a missing variable is an error, never an empty secret."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match[1] not in env:
                raise KeyError(f"environment variable {match[1]} is not set")
            return env[match[1]]

        return _ENV_REF.sub(sub, value)
    return value


def spec_defaults(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` of every property in the manifest's connection specification."""
    props = manifest.get("spec", {}).get("connection_specification", {}).get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}


def source_config(
    connection: Connection,
    overrides: dict[str, Any] | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """The configuration the manifest runs with: spec defaults < connection file < overrides < window.

    Airbyte's UI fills spec defaults into a source's configuration; the CDK does not, so the
    embedded mode does it here to run exactly what the server would.
    """
    config = {**spec_defaults(connection.manifest()), **connection.source_configuration, **(overrides or {})}
    if start:
        config["start_date"] = _as_hour(start)
    if end:  # the CLI's end is exclusive, the manifest's inclusive
        config["end_date"] = (_parse(end) - _ONE_HOUR).strftime("%Y-%m-%dT%H:%M:%S")
    return config


_ONE_HOUR = timedelta(hours=1)


def _parse(value: str) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _as_hour(value: str) -> str:
    return _parse(value).strftime("%Y-%m-%dT%H:00:00")

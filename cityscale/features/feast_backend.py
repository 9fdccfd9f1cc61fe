"""The default feature backend: Feast (Apache-2.0) with a DuckDB offline and a SQLite online store.

The Feast objects are generated from :mod:`cityscale.features.spec`; the window features are computed
by :mod:`cityscale.features.compute` (DuckDB SQL) at the requested event times and written as Parquet
tables that the views read. Feast then does what it is good at: the point-in-time join
(``get_historical_features``), ``materialize`` into the online store and the feature server
(``POST /get-online-features``). Registry and online store live under the settings' features
directory, never in the repository.
"""

from __future__ import annotations

import json
import logging
import string
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cityscale.config import Settings
from cityscale.features.compute import FeatureComputer, FeatureTables
from cityscale.features.spec import SPEC, FeatureSpec, FeatureView

logger = logging.getLogger(__name__)

FEAST_REPO = Path(__file__).resolve().parents[2] / "feature_repo" / "feast"
BUILD_FILE = "build.json"


def _feast_dtype(kind: str) -> Any:
    from feast.types import Array, Float32, Float64, Int64, String

    return {"float32": Float32, "float64": Float64, "int64": Int64, "string": String, "float32_array": Array(Float32)}[
        kind
    ]


def feast_objects(offline_dir: Path, spec: FeatureSpec = SPEC) -> list[Any]:
    """Entities, file sources, feature views and feature services for Feast, from the spec."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import String

    entities = {
        e.name: Entity(name=e.name, join_keys=[e.join_key], value_type=ValueType.STRING, description=e.description)
        for e in spec.entities
    }
    views: dict[str, FeatureView] = {}
    objects: list[Any] = list(entities.values())
    for v in spec.views:
        source_spec = spec.source(v.source)
        source = FileSource(
            name=source_spec.name,
            path=str(offline_dir / f"{v.name}.parquet"),
            timestamp_field=source_spec.timestamp_field,
            description=source_spec.description,
        )
        if v.push_source:  # pushed rows go online at once; materialize/retrieval read the batch source
            push = spec.push_source(v.push_source)
            objects.append(source)
            source = PushSource(name=push.name, batch_source=source, description=push.description)
        key = spec.entity(v.entity).join_key
        schema = [Field(name=key, dtype=String)]
        schema += [Field(name=f.name, dtype=_feast_dtype(f.dtype), description=f.description) for f in v.features]
        views[v.name] = FeatureView(
            name=v.name,
            entities=[entities[v.entity]],
            ttl=timedelta(hours=v.ttl_hours),  # 0 = never expires
            schema=schema,
            source=source,
            online=True,
            description=v.description,
            tags={**v.tags, "spec_version": str(spec.version)},
            owner=spec.owner,
        )
        objects += [source, views[v.name]]
    for s in spec.services:
        objects.append(
            FeatureService(
                name=s.name, features=[views[v] for v in s.views], description=s.description, owner=spec.owner
            )
        )
    return objects


@dataclass
class BuildInfo:
    """What a feature build materialized: the freshness hour per city (the forecast start it can serve)."""

    raw_source: str
    built_at: str
    online_as_of: dict[str, str]  # city -> local ISO hour after its latest count
    n_sensors: int
    spec_version: int

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, path: Path) -> BuildInfo:
        return cls(**json.loads(path.read_text()))


class FeastBackend:
    """One Feast feature store under ``<features dir>/feast`` with its offline tables in ``offline/``."""

    def __init__(self, settings: Settings, features_dir: str | Path | None = None, spec: FeatureSpec = SPEC):
        self.settings = settings
        self.spec = spec
        self.root = Path(features_dir or settings.resolved_features_dir).absolute()
        self.feast_dir = self.root / "feast"
        self.offline_dir = self.root / "offline"
        self.feast_dir.mkdir(parents=True, exist_ok=True)
        self._store = None

    # --- configuration --------------------------------------------------------------------------
    def repo_config(self) -> Any:
        """``feature_repo/feast/feature_store.yaml`` with its ``${...}`` paths filled from the settings."""
        from feast.repo_config import RepoConfig

        text = (Path(self.settings.feast_repo or FEAST_REPO) / "feature_store.yaml").read_text()
        filled = string.Template(text).safe_substitute(
            CITYSCALE_FEAST_DIR=str(self.feast_dir), CITYSCALE_FEATURES_DIR=str(self.root)
        )
        config = RepoConfig(**yaml.safe_load(filled))
        config.repo_path = self.feast_dir
        return config

    @property
    def store(self) -> Any:
        if self._store is None:
            from feast import FeatureStore

            self._store = FeatureStore(config=self.repo_config())
        return self._store

    # --- lifecycle ------------------------------------------------------------------------------
    def apply(self, tables: FeatureTables) -> None:
        """Write the computed tables and register the spec's objects pointing at them (idempotent)."""
        tables.write(self.offline_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.apply(feast_objects(self.offline_dir, self.spec))

    def training_frame(self, tables: FeatureTables, service: str = "sensor_training") -> pd.DataFrame:
        """Point-in-time join of the service's features onto the spine (``get_historical_features``).

        Returns one row per spine row, in spine order, with ``<view>__<feature>`` columns.
        """
        self.apply(tables)
        spine = tables.spine
        entity_df = spine[["sensor_id", "city", "event_timestamp"]].copy()
        entity_df["row_id"] = range(len(entity_df))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job = self.store.get_historical_features(
                entity_df=entity_df, features=self.store.get_feature_service(service), full_feature_names=True
            )
            frame = job.to_df()
        if len(frame) != len(entity_df):
            raise RuntimeError(f"point-in-time join returned {len(frame)} rows for {len(entity_df)} entity rows")
        return frame.sort_values("row_id").reset_index(drop=True)

    def materialize_latest(self, computer: FeatureComputer) -> BuildInfo:
        """Compute every view at each city's freshness hour and materialize it into the online store."""
        spine = computer.latest_spine()
        tables = computer.compute(spine)
        self.apply(tables)
        start = min(tables.views["sensor_metadata"]["event_timestamp"].min(), spine["event_timestamp"].min())
        end = spine["event_timestamp"].max() + pd.Timedelta(seconds=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.materialize(start_date=start.to_pydatetime(), end_date=end.to_pydatetime())
        as_of = spine.groupby("city")["origin"].max()
        info = BuildInfo(
            raw_source=computer.source_uri,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            online_as_of={str(c): f"{t:%Y-%m-%dT%H:%M:%S}" for c, t in as_of.items()},
            n_sensors=int(spine["sensor_id"].nunique()),
            spec_version=self.spec.version,
        )
        info.save(self.root / BUILD_FILE)
        return info

    def online(self, sensor_ids: list[str], service: str = "sensor_online") -> dict[str, list[Any]]:
        """In-process online read (the feature server does the same over HTTP)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.store.get_online_features(
                features=self.store.get_feature_service(service),
                entity_rows=[{"sensor_id": s} for s in sensor_ids],
                full_feature_names=True,
            ).to_dict()

    def build_info(self) -> BuildInfo | None:
        path = self.root / BUILD_FILE
        return BuildInfo.load(path) if path.exists() else None

    def view(self, name: str) -> FeatureView:
        return self.spec.view(name)

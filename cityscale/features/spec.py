"""The one definition of CityScale's features: entities, sources, feature views and services.

Both feature backends are generated from this module: the Feast repository (``feature_repo/feast``,
the open default) builds its ``Entity``/``FileSource``/``FeatureView``/``FeatureService`` objects from
it, the DuckDB SQL that computes the window features is generated from it, and the Tecton repository
(``feature_repo/tecton``, opt-in for licensees) declares the same names, windows and aggregations
(a static test compares them). Keeping it free of any backend import lets the Tecton image, the
Feast image and the tests all read it.

Time semantics (the point-in-time contract). A feature row of a sensor at event time ``T`` (a local
hour, stored as the UTC instant of that hour) describes the sensor *as of the start of hour T*: it
uses only counts stamped before ``T`` (a count stamped ``h`` covers ``[h, h+1)`` and is known at
``h+1``). A training example at forecast origin ``T`` therefore joins the feature row at ``T``
exactly, and the online store materialized at ``T`` serves forecasts that start at ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SPEC_VERSION = 1

AggFunction = Literal["mean", "sum", "count", "stddev"]
ValueKind = Literal["float32", "float64", "int64", "string", "float32_array", "timestamp"]


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    description: str


@dataclass(frozen=True)
class Source:
    """A Parquet data source. ``uri`` is a template: ``{store}`` is the raw-zone root (file:// or gs://),
    ``{features}`` the feature-store root where computed feature tables are written."""

    name: str
    uri: str
    timestamp_field: str
    description: str


@dataclass(frozen=True)
class PushSource:
    """A source that also takes rows pushed in real time (the realtime gateway, ``cityscale.realtime``).

    Feast pushes *computed* feature rows: the push source of a view has the view's schema and its batch
    source is the view's computed table (built from the raw zone), so ``materialize`` and point-in-time
    retrieval read the batch source while ``POST /push`` updates the online store at once. ``raw_fields``
    is set for a source of raw count records instead (Tecton's ingest API, whose stream feature views
    aggregate the records themselves).
    """

    name: str
    batch_source: str
    description: str
    raw_fields: tuple[tuple[str, ValueKind], ...] = ()


@dataclass(frozen=True)
class Feature:
    """One feature. ``kind`` says how it is computed:

    - ``window``: the last ``length`` hourly counts before T, oldest first, ``-1`` = missing hour;
    - ``aggregate``: ``function`` of the counts in ``[T - window_hours, T)`` (missing hours skipped);
    - ``same_hour_of_week``: for each of the ``length`` hours ``T + h`` from T on, the mean of the counts
      at ``T + h - 168 k`` for ``k = 1..weeks`` (all before T), ``-1`` where none was observed;
    - ``calendar``: a per-hour flag (``holiday``/``lockdown``) for the ``length`` hours from T on;
    - ``age``: days since the sensor's installation date (its first count if the date is unknown);
    - ``attribute``: a slowly changing property of the entity (sensor metadata).
    """

    name: str
    kind: Literal["window", "aggregate", "same_hour_of_week", "calendar", "age", "attribute"]
    dtype: ValueKind
    description: str
    length: int = 0
    window_hours: int = 0
    function: AggFunction | None = None
    weeks: int = 0
    column: str = "pedestrians"


@dataclass(frozen=True)
class FeatureView:
    name: str
    entity: str
    source: str
    features: tuple[Feature, ...]
    description: str
    ttl_hours: int  # 0 = never expires (static attributes)
    batch_schedule_hours: int = 1
    tags: dict[str, str] = field(default_factory=dict)
    push_source: str = ""  # a PushSource name: the view is also updated by real-time pushes

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature view {self.name!r} has no feature {name!r}")


@dataclass(frozen=True)
class FeatureService:
    name: str
    views: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class FeatureSpec:
    entities: tuple[Entity, ...]
    sources: tuple[Source, ...]
    views: tuple[FeatureView, ...]
    services: tuple[FeatureService, ...]
    owner: str
    version: int = SPEC_VERSION
    push_sources: tuple[PushSource, ...] = ()

    def push_source(self, name: str) -> PushSource:
        for p in self.push_sources:
            if p.name == name:
                return p
        raise KeyError(f"no push source {name!r}; known: {[p.name for p in self.push_sources]}")

    def pushed_views(self) -> list[FeatureView]:
        """The views the realtime gateway recomputes and pushes when counts arrive."""
        return [v for v in self.views if v.push_source]

    def view(self, name: str) -> FeatureView:
        for v in self.views:
            if v.name == name:
                return v
        raise KeyError(f"no feature view {name!r}; known: {[v.name for v in self.views]}")

    def service(self, name: str) -> FeatureService:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no feature service {name!r}; known: {[s.name for s in self.services]}")

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source {name!r}")

    def entity(self, name: str) -> Entity:
        for e in self.entities:
            if e.name == name:
                return e
        raise KeyError(f"no entity {name!r}")

    def service_features(self, name: str) -> list[tuple[FeatureView, Feature]]:
        return [(v, f) for view in self.service(name).views for v in [self.view(view)] for f in v.features]


OWNER = "cityscale-ml-platform"
HISTORY_HOURS = 672  # must equal Settings.input_window for the model's history tensor
HORIZON_HOURS = 24  # must equal Settings.horizon for the calendar/same-hour-of-week arrays

ENTITIES = (
    Entity("sensor", "sensor_id", "A pedestrian-counting sensor. Ids are unique across cities; its city is a feature."),
    Entity("city", "city", "A city (region) with its own public-holiday calendar and lockdown windows."),
)

SOURCES = (
    Source(
        "raw_counts",
        "{store}/raw/city=*/year=*/part.parquet",
        "timestamp_utc",
        "Hourly counts in the raw zone (long Parquet, partitioned by city and year): the input of every window.",
    ),
    Source(
        "sensor_locations",
        "package://cityscale/features/data/melbourne_sensor_locations.csv",
        "installation_date",
        "City of Melbourne sensor locations (CC BY 4.0): location id, installation date, latitude, longitude.",
    ),
    Source(
        "exog_calendar",
        "holidays-package+package://cityscale/data/covid_lockdowns.csv",
        "day",
        "Public holidays from the `holidays` package and lockdown windows (../shared/data/exog) per region.",
    ),
    # Computed tables: the window features at the requested event times, written by the feature build.
    Source("sensor_window_table", "{features}/offline/sensor_window.parquet", "event_timestamp", "Computed windows."),
    Source("sensor_aggregates_table", "{features}/offline/sensor_aggregates.parquet", "event_timestamp", "Aggregates."),
    Source("sensor_metadata_table", "{features}/offline/sensor_metadata.parquet", "event_timestamp", "Metadata."),
    Source("region_calendar_table", "{features}/offline/region_calendar.parquet", "event_timestamp", "Calendar."),
)

_AGGREGATES = tuple(
    Feature(
        f"pedestrians_{fn}_{label}",
        "aggregate",
        "int64" if fn in ("count", "sum") else "float32",
        f"{fn} of the hourly counts over the {label} before T (missing hours skipped)",
        window_hours=hours,
        function=fn,
    )
    for fn, windows in (
        ("mean", (("1h", 1), ("24h", 24), ("7d", 168), ("28d", 672))),
        ("sum", (("24h", 24),)),
        ("count", (("24h", 24), ("7d", 168), ("28d", 672))),
        ("stddev", (("7d", 168), ("28d", 672))),
    )
    for label, hours in windows
)

VIEWS = (
    FeatureView(
        "sensor_window",
        "sensor",
        "sensor_window_table",
        (
            Feature(
                "history_672h",
                "window",
                "float32_array",
                "the last 672 hourly counts (4 weeks) before T, oldest first, -1 = missing",
                length=HISTORY_HOURS,
            ),
            Feature(
                "same_how_mean_4w",
                "same_hour_of_week",
                "float32_array",
                "for each of the 24 hours from T, the mean count at the same hour of the week over the last 4 weeks",
                length=HORIZON_HOURS,
                weeks=4,
                function="mean",
            ),
            Feature("age_days", "age", "float32", "days since the sensor was installed (or first counted), at T"),
        ),
        "Hourly history window and same-hour-of-week profile of a sensor as of the start of hour T.",
        ttl_hours=1,
        tags={"domain": "footfall", "kind": "window"},
        push_source="sensor_window_push",
    ),
    FeatureView(
        "sensor_aggregates",
        "sensor",
        "sensor_aggregates_table",
        _AGGREGATES,
        "Rolling aggregates of a sensor's hourly counts over 1 h, 24 h, 7 d and 28 d before T.",
        ttl_hours=1,
        tags={"domain": "footfall", "kind": "aggregate"},
        push_source="sensor_aggregates_push",
    ),
    FeatureView(
        "sensor_metadata",
        "sensor",
        "sensor_metadata_table",
        (
            Feature("city", "attribute", "string", "the sensor's city"),
            Feature("location_id", "attribute", "int64", "the city's location id (-1 unknown)"),
            Feature("latitude", "attribute", "float64", "WGS84 latitude (NaN unknown)"),
            Feature("longitude", "attribute", "float64", "WGS84 longitude (NaN unknown)"),
            Feature("installation_date", "attribute", "string", "installation date, ISO (empty unknown)"),
        ),
        "Static sensor metadata: city, location and installation date.",
        ttl_hours=0,
        batch_schedule_hours=24,
        tags={"domain": "footfall", "kind": "metadata"},
    ),
    FeatureView(
        "region_calendar",
        "city",
        "region_calendar_table",
        (
            Feature(
                "holiday_24h",
                "calendar",
                "float32_array",
                "public-holiday flag of each of the 24 hours from T",
                length=HORIZON_HOURS,
            ),
            Feature(
                "lockdown_24h",
                "calendar",
                "float32_array",
                "COVID lockdown flag of each of the 24 hours from T",
                length=HORIZON_HOURS,
            ),
        ),
        "Public-holiday and lockdown flags of the city's region for the forecast horizon from T.",
        ttl_hours=1,
        tags={"domain": "calendar", "kind": "calendar"},
    ),
)

SERVICES = (
    FeatureService(
        "sensor_training",
        ("sensor_window", "sensor_aggregates", "sensor_metadata", "region_calendar"),
        "Everything the model trains on at a forecast origin (labels come from the spine).",
    ),
    FeatureService(
        "sensor_online",
        ("sensor_window", "sensor_aggregates", "sensor_metadata"),
        "What the predictor fetches per sensor at request time (the calendar is computed in process).",
    ),
)

PUSH_SOURCES = (
    PushSource(
        "sensor_window_push",
        "sensor_window_table",
        "Windows recomputed by the realtime gateway for each pushed count (batch source: the computed table).",
    ),
    PushSource(
        "sensor_aggregates_push",
        "sensor_aggregates_table",
        "Freshest aggregates (last hour, 24 h, 7 d, 28 d) recomputed by the realtime gateway for each push.",
    ),
    PushSource(
        "raw_counts_push",
        "raw_counts",
        "Hourly count records as edge sensors push them (Tecton ingest API); batch source: the raw zone.",
        raw_fields=(("city", "string"), ("sensor_id", "string"), ("timestamp_utc", "timestamp"), ("count", "int64")),
    ),
)

SPEC = FeatureSpec(ENTITIES, SOURCES, VIEWS, SERVICES, OWNER, push_sources=PUSH_SOURCES)

# The history window the online store serves and the training set carries.
HISTORY_VIEW, HISTORY_FEATURE = "sensor_window", "history_672h"
MISSING = -1.0

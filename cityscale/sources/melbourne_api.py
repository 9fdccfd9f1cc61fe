"""City of Melbourne portal records (Opendatasoft Explore API v2.1) in the raw counts contract.

The connector (``airbyte/manifests/melbourne_pedestrian_counts.yaml``) adds one computed field to
every record, ``timestamp_local`` (``sensing_date`` + ``hourday``, Melbourne wall clock); the sensor
code and the count keep the portal's field names, which are configuration (``sensor_field``,
``count_field``) and are mapped here. Sensor ids follow the wide-CSV reader
(``cityscale.sources.melbourne``): combined sensors (``"FedPed_T, FedCycle_T"``) become
``FedPed_T+FedCycle_T``, so API and file exports upsert into the same keys.
Descriptions come from the ``sensor_locations`` stream.
"""

from __future__ import annotations

import pandas as pd

CITY = "melbourne"
DEFAULT_FIELDS = {"sensor_field": "sensor_name", "count_field": "pedestriancount"}


def normalise_sensor_id(codes: pd.Series) -> pd.Series:
    """``"FedPed_T, FedCycle_T"`` -> ``"FedPed_T+FedCycle_T"``; surrounding blanks removed."""
    return codes.astype(str).str.replace(r"\s*,\s*", "+", regex=True).str.strip()


def sensor_names(locations: pd.DataFrame | None) -> dict[str, str]:
    """Sensor code -> description from ``sensor_locations`` records (portal field names)."""
    if locations is None or locations.empty or "sensor_name" not in locations:
        return {}
    codes = normalise_sensor_id(locations["sensor_name"].fillna(""))
    described = locations.get("sensor_description", locations["sensor_name"]).fillna(codes)
    return dict(zip(codes, described.astype(str), strict=True))


def required_fields(config: dict | None = None) -> list[str]:
    """The record fields the raw contract is built from, under the configured names."""
    cfg = {**DEFAULT_FIELDS, **(config or {})}
    return ["timestamp_local", cfg["sensor_field"], cfg["count_field"]]


def records_to_long(
    records: pd.DataFrame, locations: pd.DataFrame | None = None, config: dict | None = None
) -> pd.DataFrame:
    """Portal records -> (city, sensor_id, sensor_name, timestamp_local, count).

    A record without a count is a missing hour and produces no row; a missing field or an
    unparsable timestamp raises, because it means the portal no longer matches the configuration.
    """
    stamp_field, sensor_field, count_field = required_fields(config)
    missing = [c for c in (stamp_field, sensor_field, count_field) if c not in records.columns]
    if missing:
        raise ValueError(f"Melbourne records lack the configured fields {missing}; they have {list(records.columns)}")
    counts = pd.to_numeric(records[count_field].replace("", None), errors="coerce")
    keep = counts.notna()
    ids = normalise_sensor_id(records.loc[keep, sensor_field])
    try:
        stamps = pd.to_datetime(records.loc[keep, "timestamp_local"], format="%Y-%m-%dT%H:%M:%S")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"Melbourne records carry timestamps that are not local hours: {exc}") from exc
    names = sensor_names(locations)
    return pd.DataFrame(
        {
            "city": CITY,
            "sensor_id": ids.to_numpy(),
            "sensor_name": ids.map(names).fillna(ids).to_numpy(),
            "timestamp_local": stamps.to_numpy(),
            "count": counts[keep].to_numpy(),
        }
    )

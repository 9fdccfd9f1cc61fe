"""City of Melbourne Pedestrian Counting System exports in the wide "grouped_data" layout.

Each file has one row per sensor, labelled ``"Description | SensorCode [LocationID]"``, and one
column per local hour. We melt it into the long raw contract; cleaning of known artefacts is the
quality module's job, so this reader stays a faithful transcription of the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

CITY = "melbourne"
LABEL_RE = re.compile(r"^(?P<desc>.*?)\s*\|\s*(?P<codes>.*?)\s*\[(?P<ids>[^\]]*)\]\s*$")


def parse_sensor_label(label: str) -> tuple[str, str]:
    """Split a ``New_Sensor_Name`` label into (sensor_id, sensor_name).

    The sensor code is the stable identifier across files; combined sensors
    (``"FedPed_T, FedCycle_T"``) become one id joined with ``+``.
    """
    label = " ".join(str(label).split())
    match = LABEL_RE.match(label)
    if not match:
        raise ValueError(f"sensor label {label!r} is not 'Description | Code [Id]'")
    codes = "+".join(c.strip() for c in match["codes"].split(",") if c.strip())
    return codes, match["desc"]


def read_wide_csv(path: str | Path) -> pd.DataFrame:
    """Read one wide export into long rows (city, sensor_id, sensor_name, timestamp_local, count).

    Empty cells are missing hours and produce no row.
    """
    wide = pd.read_csv(path, index_col=0)
    if wide.index.name != "New_Sensor_Name":
        raise ValueError(f"{path}: first column is {wide.index.name!r}, expected 'New_Sensor_Name'")
    stamps = pd.to_datetime(pd.Index(wide.columns), format="%Y-%m-%d %H:%M:%S")
    wide.columns = stamps
    parsed = [parse_sensor_label(label) for label in wide.index]
    wide.index = pd.Index([p[0] for p in parsed], name="sensor_id")
    names = dict(parsed)
    long = wide.stack(future_stack=True).dropna().rename("count").reset_index()
    long.columns = ["sensor_id", "timestamp_local", "count"]
    long.insert(0, "city", CITY)
    long.insert(2, "sensor_name", long["sensor_id"].map(names))
    return long


def read_wide_exports(paths: list[Path]) -> pd.DataFrame:
    """Read several wide exports; a later file wins where periods overlap."""
    if not paths:
        raise FileNotFoundError("no Melbourne wide exports (grouped_data_*.csv) given")
    frames = [read_wide_csv(p) for p in sorted(paths)]
    long = pd.concat(frames, ignore_index=True)
    return long.drop_duplicates(["city", "sensor_id", "timestamp_local"], keep="last")


def read_sensor_locations(path: str | Path) -> pd.DataFrame:
    """Sensor metadata: id, description, installation date, direction labels, coordinates."""
    loc = pd.read_csv(path)
    out = pd.DataFrame(
        {
            "city": CITY,
            "sensor_id": loc["Sensor_Name"].astype(str).str.strip(),
            "location_id": loc["Location_ID"],
            "sensor_name": loc["Sensor_Description"],
            "installation_date": pd.to_datetime(loc["Installation_Date"], errors="coerce"),
            "latitude": loc["Latitude"],
            "longitude": loc["Longitude"],
        }
    )
    return out

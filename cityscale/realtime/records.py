"""The push schema: what an edge sensor may send, validated before anything is written.

A record is one hourly count ``{city, sensor_id, hour, count, sensor_name?, event_id?}``. ``hour`` is
the start of the counted hour, ISO 8601, either the city's wall-clock hour (no offset, as the sources
report it) or an instant with an offset, converted to the city's wall clock. A repeated DST hour is
read as daylight time and a local hour that does not exist (the DST gap) is refused: both exactly as
the batch ingest places them (``cityscale.ingestion.quality``), so a pushed row equals the batch row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from cityscale.cities import CITIES, get_city
from cityscale.ingestion.quality import MAX_PLAUSIBLE_HOURLY_COUNT

EPOCH = pd.Timestamp("1970-01-01")
Count = Annotated[StrictInt, Field(ge=0, le=MAX_PLAUSIBLE_HOURLY_COUNT)]


class PushRecord(BaseModel):
    """One hourly count as an edge sensor sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    city: str
    sensor_id: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    hour: str = Field(min_length=10, max_length=40)
    count: Count
    sensor_name: str | None = Field(default=None, max_length=500)
    event_id: str | None = Field(default=None, max_length=200)

    @field_validator("city")
    @classmethod
    def _known_city(cls, value: str) -> str:
        if value not in CITIES:
            raise ValueError(f"unknown city {value!r}; known: {sorted(CITIES)}")
        return value

    def local_pos(self) -> int:
        """The counted hour on the city's wall clock as a grid position, or ValueError saying what is wrong."""
        return _local_pos(self.city, self.hour)


@lru_cache(maxsize=65_536)
def _local_pos(city: str, hour: str) -> int:
    """Cached: a batch from many sensors repeats the same few hours, and time-zone placement costs ~100 us."""
    try:
        stamp = pd.Timestamp(hour)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"hour {hour!r} is not an ISO 8601 date-time") from exc
    if pd.isna(stamp):
        raise ValueError(f"hour {hour!r} is not a date-time")
    tz = get_city(city).timezone
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(tz).tz_localize(None)
    if stamp != stamp.floor("h"):
        raise ValueError(f"hour {hour!r} is not the start of an hour")
    if pd.isna(pd.DatetimeIndex([stamp]).tz_localize(tz, ambiguous=np.ones(1, bool), nonexistent="NaT")[0]):
        raise ValueError(f"hour {hour!r} does not exist in {tz} (daylight-saving gap)")
    return int((stamp - EPOCH) // pd.Timedelta(hours=1))


class PushRequest(BaseModel):
    """``POST /v1/push`` body: a batch of records, accepted or refused as a whole."""

    model_config = ConfigDict(extra="forbid")

    records: list[PushRecord] = Field(min_length=1)


@dataclass(frozen=True)
class CountRow:
    """A validated count keyed on (city, sensor_id, hour position on the local grid)."""

    city: str
    sensor_id: str
    pos: int  # hours since 1970-01-01 on the city's wall clock
    count: int
    sensor_name: str | None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.city, self.sensor_id, self.pos)

    def to_json(self) -> dict:
        return {"c": self.city, "s": self.sensor_id, "p": self.pos, "n": self.count, "m": self.sensor_name}

    @classmethod
    def from_json(cls, d: dict) -> CountRow:
        return cls(d["c"], d["s"], int(d["p"]), int(d["n"]), d.get("m"))


def to_rows(request: PushRequest) -> tuple[list[CountRow], list[dict]]:
    """Validated rows, or the problems (one per bad record, with its index) when any record is bad."""
    rows, problems = [], []
    for i, record in enumerate(request.records):
        try:
            pos = record.local_pos()
        except ValueError as exc:
            problems.append({"record": i, "field": "hour", "error": str(exc)})
            continue
        rows.append(CountRow(record.city, record.sensor_id, pos, record.count, record.sensor_name))
    return rows, problems

"""Entities (cityscale/features/spec.py ENTITIES): a sensor (ids unique across cities) and a city."""

from tecton import Entity
from tecton.types import Field, String

sensor = Entity(
    name="sensor",
    join_keys=[Field("sensor_id", String)],
    description="A pedestrian-counting sensor. Ids are unique across cities; its city is a feature.",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall"},
)

city = Entity(
    name="city",
    join_keys=[Field("city", String)],
    description="A city (region) with its own public-holiday calendar and lockdown windows.",
    owner="cityscale-ml-platform",
    tags={"domain": "calendar"},
)

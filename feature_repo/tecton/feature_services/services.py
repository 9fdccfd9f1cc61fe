"""Feature services (spec SERVICES): what training joins and what the predictor fetches online."""

from features.region_calendar import region_calendar
from features.sensor_aggregates import sensor_aggregates
from features.sensor_metadata import sensor_metadata
from features.sensor_window import sensor_window
from tecton import FeatureService

sensor_training = FeatureService(
    name="sensor_training",
    features=[sensor_window, sensor_aggregates, sensor_metadata, region_calendar],
    description="Everything the model trains on at a forecast origin (labels come from the spine).",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall"},
)

sensor_online = FeatureService(
    name="sensor_online",
    features=[sensor_window, sensor_aggregates, sensor_metadata],
    online_serving_enabled=True,
    description="What the predictor fetches per sensor at request time (the calendar is computed in process).",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall"},
)

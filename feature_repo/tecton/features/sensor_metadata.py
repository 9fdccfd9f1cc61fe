"""Static sensor metadata: city, location and installation date (spec view `sensor_metadata`)."""

from datetime import datetime, timedelta

from data_sources.sensor_locations import sensor_locations
from entities import sensor
from tecton import Attribute, batch_feature_view
from tecton.types import Float64, Int64, String


@batch_feature_view(
    name="sensor_metadata",
    sources=[sensor_locations],
    entities=[sensor],
    mode="pandas",
    timestamp_field="installation_date",
    batch_schedule=timedelta(days=1),
    features=[
        Attribute("city", String),
        Attribute("location_id", Int64),
        Attribute("latitude", Float64),
        Attribute("longitude", Float64),
        Attribute("installation_date", String),
    ],
    online=True,
    offline=True,
    feature_start_time=datetime(2009, 1, 1),
    description="Static sensor metadata: city, location and installation date.",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "kind": "metadata"},
)
def sensor_metadata(sensor_locations):
    df = sensor_locations.rename(columns={"Sensor_Name": "sensor_id", "Location_ID": "location_id"})
    df["installation_date"] = df["installation_date"].astype(str).str[:10]
    return df[["sensor_id", "city", "location_id", "latitude", "longitude", "installation_date"]]

"""City of Melbourne sensor locations (CC BY 4.0): location id, installation date, latitude, longitude."""

import os

from tecton import BatchSource, FileConfig

sensor_locations = BatchSource(
    name="sensor_locations",
    batch_config=FileConfig(
        uri=os.environ.get("CITYSCALE_SENSOR_LOCATIONS_URI", "gs://cityscale-raw/reference/sensor_locations.parquet"),
        file_format="parquet",
        timestamp_field="installation_date",
    ),
    description="City of Melbourne sensor locations (CC BY 4.0).",
    owner="cityscale-ml-platform",
    tags={"domain": "footfall", "licence": "CC-BY-4.0"},
)

"""CityScale: hourly pedestrian foot-traffic forecasting for city centres.

The domain library: everything the KFP components, the KServe predictor and the CLI do is
implemented here as plain functions, so it can be tested without an orchestrator.
"""

__version__ = "0.1.0"

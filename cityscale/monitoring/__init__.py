"""Forecast monitoring: the served-forecast log, accuracy against actuals, drift, outages, the daily run."""

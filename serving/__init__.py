"""KServe serving for CityScale: the V2 predictor and its entry point (``python -m serving``)."""

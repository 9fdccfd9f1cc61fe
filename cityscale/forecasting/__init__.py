"""Using a trained model: ``forecaster`` (a loaded model), ``service`` (online forecasts over a history source,
what the predictor serves) and ``batch`` (forecasts for a file of counts)."""

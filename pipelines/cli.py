"""``cityscale run``, ``compile`` and ``deploy``: the pipelines' commands, plugged into the ``cityscale`` CLI.

Registered through the ``cityscale.commands`` entry point (``pyproject.toml``): the library's CLI does not
import ``pipelines`` or ``serving``; this module, one layer up, uses all three.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import typer
from rich.console import Console
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cityscale.config import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.local_run import LocalRunResult

console = Console()


def run(
    source: str = typer.Option("", help="Snapshot to ingest (default: the bundled Melbourne sample)."),
    test_start: str = typer.Option("2022-07-01", help="First held-out day of the backtest."),
    sensor: str = typer.Option("", help="Sensor to forecast at the end (default: the one with the longest history)."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Print kfp.local's full output (task inputs, logs, warnings) as it comes."
    ),
) -> None:
    """Run the training pipeline under kfp.local, serve the model and ask it for a 24-hour forecast."""
    from cityscale import raw_zone
    from serving.client import infer_rest
    from serving.local_server import local_model_server

    settings = get_settings()
    started = time.monotonic()
    console.rule("[bold]1/3 Training pipeline (kfp.local)")
    log_path = None if verbose else settings.workdir.absolute() / "logs" / f"run-{datetime.now():%Y%m%d-%H%M%S}.log"
    result = _train(settings, source, test_start, log_path)
    console.print(f"run directory: {result.run_dir}", soft_wrap=True)
    _print_metrics(result.metrics)
    console.print(f"gate: {'[green]passed' if result.passed else '[red]failed'}[/] — {result.reason}", soft_wrap=True)
    if result.deployed_version is None:
        console.print("[yellow]the model did not pass the gate; serving the previous production model, if any")

    sensor, start = next_forecast(raw_zone.sensors(settings.resolved_store_uri), sensor)
    console.rule("[bold]2/3 KServe model server (V2 REST + gRPC on loopback)")
    with contextlib.ExitStack() as stack:
        with console.status("starting the model server ..."):
            server = stack.enter_context(local_model_server(env={"CITYSCALE_WORKDIR": str(settings.workdir)}))
        console.print(f"ready at {server.http_url} (gRPC {server.grpc_target})")
        console.rule(f"[bold]3/3 Forecast for {sensor} from {start:%Y-%m-%d %H:%M}")
        response = infer_rest(server.http_url, settings.model_name, [sensor], f"{start:%Y-%m-%dT%H:%M:%S}")
    _print_forecast(response, sensor)

    console.rule(f"[bold]Done in {time.monotonic() - started:.0f} s")
    report = html_report(result.run_dir)
    if report is not None:
        console.print(f"backtest report (HTML): {report}", soft_wrap=True)
    console.print(f"model server log: {server.log_path}", soft_wrap=True)
    if log_path is not None:
        console.print(f"pipeline log: {log_path} (or run with --verbose)", soft_wrap=True)


def _train(settings: Settings, source: str, test_start: str, log_path: Path | None) -> LocalRunResult:
    """Run the pipeline: under a progress display with the output in ``log_path``, or printing everything."""
    from pipelines.local_run import PipelineFailed, run_training_locally

    if log_path is None:
        with console.status("ingest -> features -> train -> evaluate -> register -> deploy ..."):
            return run_training_locally(settings, source=source, test_start=test_start)

    progress = Progress(
        TextColumn("  {task.fields[mark]}"),
        TextColumn("{task.description:<16}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        # bound to the real stdout: while the pipeline runs, sys.stdout is its log file
        console=Console(file=sys.stdout),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    steps: dict[str, TaskID] = {}

    def on_task(name: str, status: str, seconds: float) -> None:
        if status == "started" and name in steps:  # a retry (ingest and features are retried)
            progress.reset(steps[name], mark="[cyan]>[/]", note="[yellow]retrying")
            return
        if status == "started":
            steps[name] = progress.add_task(name, total=1, mark="[cyan]>[/]", note="[dim]running")
            return
        mark, note = ("[green]✓[/]", "") if status == "SUCCESS" else ("[red]✗[/]", f"[red]{status.lower()}")
        progress.update(steps[name], completed=1, mark=mark, note=note)
        progress.stop_task(steps[name])

    try:
        with progress:
            return run_training_locally(
                settings, source=source, test_start=test_start, log_path=log_path, on_task=on_task
            )
    except PipelineFailed as failed:
        console.print(f"[red bold]pipeline failed[/]: {failed}")
        if failed.tail:
            console.rule(f"[red]last {len(failed.tail)} lines of task {failed.task!r}", style="red")
            for line in failed.tail:
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            console.rule(style="red")
        console.print(f"full log: {failed.log_path} (rerun with --verbose to see it live)")
        raise typer.Exit(1) from failed


def html_report(run_dir: Path) -> Path | None:
    """The evaluate task's HTML report as ``<run_dir>/backtest-report.html`` (kfp.local names it ``html_report``)."""
    artifact = run_dir / "evaluate" / "html_report"
    if not artifact.is_file():
        return None
    report = run_dir / "backtest-report.html"
    shutil.copyfile(artifact, report)
    return report


def next_forecast(sensors: pd.DataFrame, sensor: str = "") -> tuple[str, pd.Timestamp]:
    """The sensor to forecast (default: the most rows) and the hour after *its own* last count.

    ``sensors`` is ``raw_zone.sensors()``. The raw zone can hold sensors whose data ends years apart (Melbourne
    to 2022 and Auckland to 2025 after ``make train-full``): a start after the zone's overall last hour would
    leave most sensors without history.
    """
    per_sensor = sensors.groupby("sensor_id").agg(rows=("rows", "sum"), last=("last", "max"))
    sensor = sensor or str(per_sensor["rows"].idxmax())
    if sensor not in per_sensor.index:
        raise typer.BadParameter(f"sensor {sensor!r} has no rows in the raw zone", param_hint="--sensor")
    return sensor, (per_sensor.loc[sensor, "last"] + pd.Timedelta(hours=1)).floor("h")


def _print_metrics(metrics: dict[str, float]) -> None:
    title = "Backtest (held-out period, daily origins, 24 h horizon)"
    table = Table(title=title, min_width=len(title))
    for col in ("method", "WAPE", "MASE"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("model", f"{metrics['wape']:.3f}", f"{metrics['mase']:.3f}")
    for base in sorted(k.removesuffix("_wape") for k in metrics if k.endswith("_wape")):
        table.add_row(base, f"{metrics[f'{base}_wape']:.3f}", f"{metrics[f'{base}_mase']:.3f}")
    console.print(table)
    console.print(f"P10-P90 coverage {metrics['coverage']:.1%} over {metrics['n_pairs']:.0f} (sensor, day) pairs")


def _print_forecast(response: dict, sensor: str) -> None:
    outputs = {o["name"]: o["data"] for o in response["outputs"]}
    title = f"{sensor}: next 24 hours (model version {response.get('model_version')})"
    table = Table(title=title, min_width=len(title))
    for col in ("hour (local)", "P10", "P50", "P90"):
        table.add_column(col, justify="right")
    for i, when in enumerate(outputs["target_time"]):
        table.add_row(when.replace("T", " ")[:16], *(f"{outputs[q][i]:,.0f}" for q in ("p10", "p50", "p90")))
    console.print(table)


def compile_pipelines(
    out_dir: Path = typer.Option(
        None,
        "--out-dir",
        help="Where to write the YAML (default: pipelines/compiled/, the committed YAML with image cityscale:dev). "
        "Any other folder gets CITYSCALE_IMAGE, which must then be immutable (a git-SHA tag or a digest).",
    ),
) -> None:
    """Compile the pipelines to pipelines/compiled/*.yaml, or with CITYSCALE_IMAGE to --out-dir."""
    from components import IMAGE
    from pipelines.compile import COMPILED_DIR, CompileError, check_output, compile_all
    from pipelines.publish import mutable_image_problem

    out_dir = out_dir or COMPILED_DIR
    try:
        check_output(out_dir, IMAGE, Settings())
        problem = None if out_dir.resolve() == COMPILED_DIR.resolve() else mutable_image_problem(IMAGE)
        if problem:
            raise CompileError(f"{problem}: set CITYSCALE_IMAGE=<registry>/cityscale:<sha> to compile into {out_dir}")
        paths = compile_all(out_dir)
    except CompileError as exc:  # printed as is: an image tag like ":abc:" is no emoji code, "[...]" no markup
        console.print(f"compile: {exc}", style="red", soft_wrap=True, markup=False, emoji=False)
        raise typer.Exit(1) from exc
    for path in paths:
        console.print(f"wrote {path} (image {IMAGE})", soft_wrap=True, markup=False, emoji=False)


def deploy(
    compile_first: bool = typer.Option(
        False, "--compile", help="Compile into --compiled-dir first, with image $REGISTRY/cityscale:$GIT_SHA."
    ),
    compiled_dir: Path = typer.Option(None, help="Compiled pipeline YAML to upload (default: build/pipelines)."),
    schedules: Path = typer.Option(None, help="Recurring runs to apply (default: pipelines/schedules.yaml)."),
    pipeline_config: Path = typer.Option(
        None, help="Pipeline parameters (default: $PIPELINE_CONFIG or build/terraform/$ENV.pipeline-config.json)."
    ),
) -> None:
    """Upload the pipelines to KFP_HOST as version GIT_SHA and apply the recurring runs (make deploy).

    Configured by the environment: KFP_HOST, KFP_TOKEN, KFP_NAMESPACE, ENV, GIT_SHA, REGISTRY, DRY_RUN=1 (plan only).
    """
    from pipelines.publish import deploy as run_deploy

    code = run_deploy(compile_first, compiled_dir, schedules, pipeline_config)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Attach ``run``, ``compile`` and ``deploy`` to the ``cityscale`` CLI."""
    app.command("run")(run)
    app.command("compile")(compile_pipelines)
    app.command("deploy")(deploy)

"""Run the training pipeline on this machine with ``kfp.local`` (the embedded default).

Each task runs as a subprocess of the current interpreter (``use_venv=False``), so the installed
``cityscale`` package is what every component imports, exactly as in the project image.

kfp.local writes everything to the terminal: its orchestration log (the root logger, on ``sys.stdout``), every
task's executor input and streamed output (``print``), and its own warnings (``sys.stderr``). Given a ``log_path``,
``run_training_locally`` sends all of that to the file instead, reports each task's start and end to ``on_task``,
and, if the pipeline fails, raises ``PipelineFailed`` with the failing task's last lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from kfp import local

from cityscale import registry
from cityscale.config import Settings
from pipelines.training import PIPELINE_NAME, training_pipeline

# Known noise in quiet mode: library deprecations in the task processes (Lightning, Feast, pandas ...) and
# kfp.local's notices that cluster-only task settings and the project image do not apply locally.
QUIET_CHILD_WARNINGS = "ignore::DeprecationWarning,ignore::FutureWarning"
_QUIET_PARENT_WARNINGS = (
    r"Task '.*': settings \[.*\] have no effect in the current local runner",
    r"You may be attemping to run a task that uses custom or non-Python base image",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
TAIL_LINES = 40

# on_task(task name, "started" | "SUCCESS" | "FAILURE", seconds since the task started; 0.0 when it starts)
TaskCallback = Callable[[str, str, float], None]


@dataclass
class LocalRunResult:
    run_dir: Path
    passed: bool
    reason: str
    metrics: dict[str, float]
    deployed_version: str | None


class PipelineFailed(RuntimeError):
    """The pipeline (or the run around it) failed; ``tail`` is the last lines the failing task wrote."""

    def __init__(self, message: str, task: str | None, tail: list[str], log_path: Path) -> None:
        super().__init__(message)
        self.task = task
        self.tail = tail
        self.log_path = log_path


class _PipelineLog(io.TextIOBase):
    """A text stream that writes whole lines to a log file and follows kfp.local's task markers."""

    def __init__(self, file: io.TextIOBase, on_task: TaskCallback | None) -> None:
        self._file = file
        self._on_task = on_task
        self._partial = ""
        self.task: str | None = None
        self.failed_task: str | None = None
        self._started = 0.0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def close_partial(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        self.flush()

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        self._file.write(plain + "\n")
        if started := _STARTED.search(plain):
            self.task, self._started = started.group(1), time.monotonic()
            self.tail.clear()
            if self._on_task:
                self._on_task(self.task, "started", 0.0)
        elif finished := _FINISHED.search(plain):
            name, status = finished.groups()
            if status != "SUCCESS":
                self.failed_task = name
            if self._on_task:
                self._on_task(name, status, time.monotonic() - self._started)
        elif plain.strip():
            self.tail.append(plain)


@contextlib.contextmanager
def _quiet(log_path: Path, on_task: TaskCallback | None) -> Iterator[_PipelineLog]:
    """Route stdout, stderr and kfp.local's logging to ``log_path``; quieten known warnings."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("a", encoding="utf-8") as file,
        warnings.catch_warnings(),
        mock.patch.dict(os.environ, {"PYTHONWARNINGS": QUIET_CHILD_WARNINGS}),  # the task subprocesses inherit it
    ):
        for message in _QUIET_PARENT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        stream = _PipelineLog(file, on_task)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield stream
        finally:
            stream.close_partial()


def run_training_locally(
    settings: Settings,
    source: str = "",
    data_start: str = "",
    data_end: str = "",
    test_start: str = "2022-07-01",
    test_end: str = "",
    log_path: Path | None = None,
    on_task: TaskCallback | None = None,
) -> LocalRunResult:
    """Run the whole training pipeline under kfp.local and report what the gate decided.

    Without ``log_path`` kfp.local prints everything as usual; with it, see the module docstring.
    """
    root = Path(settings.resolved_pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.glob(f"{PIPELINE_NAME}-*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    kwargs = dict(
        store_uri=settings.resolved_store_uri,
        registry_uri=settings.resolved_registry_uri,
        source=source or str(settings.sample_data),
        data_start=data_start,
        data_end=data_end,
        test_start=test_start,
        test_end=test_end,
        max_epochs=settings.max_epochs,
        deploy_target="local",
    )
    if log_path is None:
        training_pipeline(**kwargs)
    else:
        with _quiet(log_path, on_task) as stream:
            try:
                training_pipeline(**kwargs)
            except Exception as error:
                message = _ANSI.sub("", str(error)) or type(error).__name__
                task = stream.failed_task or stream.task
                raise PipelineFailed(message, task, list(stream.tail), log_path) from error
    (run_dir,) = set(root.glob(f"{PIPELINE_NAME}-*")) - before
    verdict = json.loads((run_dir / "evaluate" / "evaluation").read_text())
    production = registry.get_alias(settings.resolved_registry_uri, settings.model_name, "production")
    deployed = production["version"] if verdict["passed"] and production else None
    return LocalRunResult(run_dir, verdict["passed"], verdict["reason"], verdict["metrics"], deployed)

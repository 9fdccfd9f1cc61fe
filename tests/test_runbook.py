"""docs/runbook.md names only things that exist: make targets and variables, cityscale commands, paths, sensors.

A runbook is read when something is on fire; a step that names a target, a variable or a command that is gone
wastes that time (it used to pass ``MODEL_URI=`` that no target read and to forecast sensor "41", which no
data has). Each check below collects what the runbook names and compares it with the source of truth.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer

from cityscale.cli.main import app
from cityscale.config import PACKAGE_DATA

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "docs" / "runbook.md"
MAKEFILE = REPO / "Makefile"
SAMPLE = PACKAGE_DATA / "melbourne_sample.parquet"
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Top-level folders whose paths the runbook may name; other slash-words are URLs, buckets or Kubernetes objects.
REPO_DIRS = (
    "cityscale",
    "components",
    "docs",
    "feature_repo",
    "helmfile.d",
    "pipelines",
    "serving",
    "terraform",
    "tests",
)
GENERATED = ("tfplan", "terraform.tfvars")  # written by the steps themselves


# --- What the runbook names -------------------------------------------------------------------------------------


def code_regions(text: str) -> list[str]:
    """Fenced code blocks and inline code spans: where commands are written."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def commands(text: str) -> list[list[str]]:
    """Every simple shell command in the code regions, as words, leading ``VAR=value`` assignments dropped."""
    found = []
    for region in code_regions(text):
        for line in region.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)  # a comment
            for part in re.split(r"&&|\|\||[;|&()]", line):
                try:
                    words = shlex.split(part)
                except ValueError:  # an unbalanced quote of a multi-line JSON body: not a command we check
                    continue
                while words and ENV_ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if words:
                    found.append(words)
    return found


def make_calls(text: str) -> list[tuple[list[str], list[str]]]:
    """(targets, VAR names) of every ``make ...`` command."""
    calls = []
    for words in commands(text):
        if words[0] != "make":
            continue
        args = [w for w in words[1:] if not w.startswith("-")]
        calls.append(([a for a in args if "=" not in a], [a.split("=", 1)[0] for a in args if "=" in a]))
    return calls


def cityscale_calls(text: str) -> list[list[str]]:
    """The words after ``cityscale`` (or ``.venv/bin/cityscale``) of every such command.

    A lone `cityscale` is a name (the namespace, the InferenceService, the repository), not a command.
    """
    return [words[1:] for words in commands(text) if Path(words[0]).name == "cityscale" and len(words) > 1]


def sensor_ids(text: str) -> set[str]:
    """Sensor ids in V2 requests (``"name": "sensor_id", ... "data": [...]``), entity maps and ``--sensor``."""
    ids: set[str] = set()
    for data in re.findall(r'"name":\s*"sensor_id"[^}]*?"data":\s*\[([^\]]*)\]', text):
        ids |= set(re.findall(r'"([^"]*)"', data))
    for data in re.findall(r'"sensor_id":\s*\[([^\]]*)\]', text):
        ids |= set(re.findall(r'"([^"]*)"', data))
    ids |= set(re.findall(r"--sensor[ =]([\w.-]+)", text))
    return ids


def repo_paths(text: str) -> set[str]:
    """Repository paths in the code regions (``$ENV`` as ``dev``; placeholders, globs and build outputs skipped)."""
    paths = set()
    for region in code_regions(text):
        for token in re.findall(r"[\w.${}/*<>,-]+", region):
            token = token.replace("$ENV", "dev").rstrip(".,")
            if not token.startswith(tuple(d + "/" for d in REPO_DIRS)):
                continue
            if any(c in token for c in "$<>*{}") or token.endswith(GENERATED):
                continue
            paths.add(token)
    return paths


# --- The sources of truth ---------------------------------------------------------------------------------------


@cache
def makefile_targets() -> frozenset[str]:
    text = MAKEFILE.read_text()
    heads = re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE)
    phony = [name for line in re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE) for name in line.split()]
    return frozenset(heads + phony)


@cache
def makefile_variables() -> frozenset[str]:
    """Variables the Makefile reads: ``$(NAME)`` in make, ``$$NAME`` / ``$${NAME...}`` in a recipe's shell."""
    text = MAKEFILE.read_text()
    names = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text)
    names += re.findall(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
    names += re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[?:]?=", text, re.MULTILINE)
    return frozenset(names)


@cache
def cli() -> Any:
    """The installed ``cityscale`` command as typer builds it (plug-ins from the entry points included)."""
    return typer.main.get_command(app)


def cli_problem(words: list[str]) -> str | None:
    """Why ``cityscale <words>`` names no real command (None when it does), walking into command groups."""
    command, path = cli(), ["cityscale"]
    for word in words:
        subcommands = getattr(command, "commands", None)  # a group; typer's click has no public Group to check
        if subcommands is None or word.startswith("-"):
            return None
        if word not in subcommands:
            return f"`{' '.join(path)} {word}` is not a command (known: {', '.join(sorted(subcommands))})"
        command, path = subcommands[word], [*path, word]
    return f"`{' '.join(path)}` needs a sub-command" if hasattr(command, "commands") else None


@cache
def sample_sensors() -> frozenset[str]:
    return frozenset(pd.read_parquet(SAMPLE, columns=["sensor_id"])["sensor_id"].unique())


def problems(text: str) -> list[str]:
    """Everything the runbook ``text`` names that does not exist (empty: all of it does)."""
    found = []
    for targets, variables in make_calls(text):
        found += [f"make target {t!r} is not in the Makefile" for t in targets if t not in makefile_targets()]
        found += [f"make variable {v}= is not read by the Makefile" for v in variables if v not in makefile_variables()]
    found += [p for words in cityscale_calls(text) if (p := cli_problem(words))]
    found += [f"sensor {s!r} is not in {SAMPLE.name}" for s in sorted(sensor_ids(text) - sample_sensors())]
    found += [f"path {p} does not exist" for p in sorted(repo_paths(text)) if not (REPO / p).exists()]
    return found


# --- Tests ------------------------------------------------------------------------------------------------------


def test_the_runbook_names_only_what_exists() -> None:
    assert problems(RUNBOOK.read_text()) == []


def test_the_runbook_is_read_at_all() -> None:
    """Guards the parsers: a regex that silently matched nothing would pass the test above."""
    text = RUNBOOK.read_text()
    targets = {t for ts, _ in make_calls(text) for t in ts}
    assert {"infra-plan", "infra-apply", "images", "platform-sync", "deploy", "deploy-serving"} <= targets
    assert {"DRY_RUN", "MODEL_VERSION", "GIT_SHA"} <= {v for _, vs in make_calls(text) for v in vs}
    assert ["report", "--store", "gs://<prefix>-raw", "--out", "report.html"] in cityscale_calls(text)
    assert {"FliS_T", "Bou283_T"} <= sensor_ids(text)
    assert "pipelines/schedules.yaml" in repo_paths(text)


@pytest.mark.parametrize(
    "original, mistake, expected",
    [
        ("make deploy-serving MODEL_VERSION=0001", "make deploy-models MODEL_VERSION=1", "make target 'deploy-models'"),
        ("make deploy-serving MODEL_VERSION=0001", "make deploy-serving MODEL_URI=gs://b/1", "variable MODEL_URI= is"),
        ("cityscale report --store", "cityscale reports --store", "`cityscale reports` is not a command"),
        ('"data": ["FliS_T", "Bou283_T"]', '"data": ["41"]', "sensor '41' is not in melbourne_sample.parquet"),
        ("`pipelines/schedules.yaml`", "`pipelines/schedule.yaml`", "path pipelines/schedule.yaml does not exist"),
    ],
)
def test_a_deliberate_mistake_is_caught(original: str, mistake: str, expected: str) -> None:
    text = RUNBOOK.read_text()
    assert original in text
    found = problems(text.replace(original, mistake, 1))
    assert any(expected in p for p in found), found


def test_sub_commands_are_checked_too() -> None:
    assert cli_problem(["features", "build"]) is None
    assert "`cityscale features rebuild` is not a command" in (cli_problem(["features", "rebuild"]) or "")
    assert cli_problem(["deploy-serving", "--version", "0001"]) is None

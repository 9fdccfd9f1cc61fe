"""Reliability tests: the ``reliability`` marker and one real model server shared by the session.

Sizes per profile: reliability_profile.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.local_server import RunningServer, local_model_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability: fuzz, soak and fault-injection tests (tests/reliability)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def model_server(trained_workdir) -> Iterator[RunningServer]:
    """The real ``python -m serving`` process (REST + gRPC on free ports), shared by the fuzz and the soak."""
    env = {"CITYSCALE_WORKDIR": str(trained_workdir), "CITYSCALE_FEATURE_SERVER_URL": ""}
    env["FEAST_FEATURE_SERVER_URL"] = ""
    with local_model_server(env=env) as running:
        yield running

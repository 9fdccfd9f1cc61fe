"""Ingestion state kept next to the data it describes: ``<store>/_ingest/<connector>.json``.

Keeping the cursor with the raw zone (not in a local file or the orchestrator) means any process
that can write the raw zone can resume the sync, and the state is only advanced after the rows it
covers are committed: a crash between the two re-reads a window, which the raw zone's upserts make
harmless, instead of skipping one.
"""

from __future__ import annotations

from typing import Any

from cityscale import storage

STATE_PREFIX = "_ingest"


def state_uri(store_uri: str, connector: str) -> str:
    return storage.join(store_uri, STATE_PREFIX, f"{connector}.json")


def read_state(store_uri: str, connector: str) -> dict[str, Any]:
    """The saved state (``{"airbyte_state": [...], "landed_files": [...], ...}``), empty when none."""
    uri = state_uri(store_uri, connector)
    return storage.read_json(uri) if storage.exists(uri) else {}


def write_state(store_uri: str, connector: str, state: dict[str, Any]) -> None:
    storage.write_json(state_uri(store_uri, connector), state)

"""Embedded mode: run a connector's low-code manifest in-process with airbyte-cdk.

The same manifest and configuration an Airbyte server would run, without a server: the
``ConcurrentDeclarativeSource`` reads every selected stream, and this module turns its messages into
compact frames. Records are buffered in chunks and converted to columns as they arrive, so the full
Melbourne history (4 M records) never sits in memory as Python dicts. Nothing is returned unless
the whole read succeeded: a stream error, a failed request or an error trace raises
``ConnectorError`` and the caller writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

CHUNK_RECORDS = 100_000
logger = logging.getLogger("cityscale.ingestion.embedded")


class ConnectorError(RuntimeError):
    """The connector could not read its source completely; nothing may land."""


@dataclass
class StreamOutput:
    """What one stream produced: its records as Arrow chunks (compact strings), values as emitted."""

    chunks: list[pa.Table] = field(default_factory=list)
    records: int = 0
    field_sets: set[tuple[str, ...]] = field(default_factory=set)

    def frame(self) -> pd.DataFrame:
        if not self.chunks:
            return pd.DataFrame()
        return pa.concat_tables(self.chunks, promote_options="permissive").to_pandas()


@dataclass
class SyncOutput:
    streams: dict[str, StreamOutput]
    state: list[dict[str, Any]]  # Airbyte per-stream state messages (JSON), to pass to the next run
    requests_made: int | None = None


def _catalog(source: Any, config: Mapping[str, Any], streams: Iterable[str]) -> Any:
    from airbyte_cdk.models import (
        ConfiguredAirbyteCatalog,
        ConfiguredAirbyteStream,
        DestinationSyncMode,
        SyncMode,
    )

    wanted = list(streams)
    found = {s.name: s for s in source.discover(logger, config).streams}
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise ConnectorError(f"the manifest has no streams {unknown}; it has {sorted(found)}")
    configured = []
    for name in wanted:
        stream = found[name]
        incremental = SyncMode.incremental in (stream.supported_sync_modes or [])
        configured.append(
            ConfiguredAirbyteStream(
                stream=stream,
                sync_mode=SyncMode.incremental if incremental else SyncMode.full_refresh,
                destination_sync_mode=DestinationSyncMode.append,
                cursor_field=stream.default_cursor_field if incremental else None,
            )
        )
    return ConfiguredAirbyteCatalog(streams=configured)


def run_manifest(
    manifest: dict[str, Any],
    config: dict[str, Any],
    streams: Iterable[str],
    state: list[dict[str, Any]] | None = None,
    columns: Mapping[str, list[str] | None] | None = None,
) -> SyncOutput:
    """Read ``streams`` with the manifest; ``state`` (from a previous run) makes it incremental.

    ``columns`` optionally limits the fields kept per stream (None = all), which is what keeps the
    full history small in memory.
    """
    from airbyte_cdk.models import AirbyteStateMessageSerializer, Level, TraceType, Type
    from airbyte_cdk.sources.declarative.concurrent_declarative_source import ConcurrentDeclarativeSource
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    # The CDK logs every stream transition as an Airbyte LOG message on stdout: keep warnings and errors.
    logging.getLogger("airbyte").setLevel(logging.WARNING)
    state_messages = [AirbyteStateMessageSerializer.load(s) for s in state or []]
    source = ConcurrentDeclarativeSource(
        catalog=None, config=config, state=state_messages, source_config=manifest, emit_connector_builder_messages=False
    )
    catalog = _catalog(source, config, streams)
    source = ConcurrentDeclarativeSource(catalog=catalog, config=config, state=state_messages, source_config=manifest)
    outputs = {s.stream.name: StreamOutput() for s in catalog.streams}
    buffers: dict[str, list[Mapping[str, Any]]] = {name: [] for name in outputs}
    keep = dict(columns or {})
    latest_state: dict[str, dict[str, Any]] = {}
    errors: list[str] = []

    def flush(name: str) -> None:
        buf = buffers[name]
        if buf:
            frame = pd.DataFrame.from_records(buf, columns=keep.get(name))
            outputs[name].chunks.append(pa.Table.from_pandas(frame, preserve_index=False))
            buf.clear()

    try:
        for message in source.read(logger, config, catalog, state_messages):
            if message.type == Type.RECORD:
                record = message.record
                data = record.data
                out = outputs[record.stream]
                out.records += 1
                out.field_sets.add(tuple(data))
                buf = buffers[record.stream]
                buf.append(data)
                if len(buf) >= CHUNK_RECORDS:
                    flush(record.stream)
            elif message.type == Type.STATE:
                stream_state = message.state.stream
                if stream_state is not None:
                    latest_state[stream_state.stream_descriptor.name] = AirbyteStateMessageSerializer.dump(
                        message.state
                    )
            elif message.type == Type.TRACE and message.trace.type == TraceType.ERROR:
                errors.append(message.trace.error.message or str(message.trace.error.internal_message))
            elif message.type == Type.LOG and message.log.level in (Level.ERROR, Level.FATAL):
                errors.append(message.log.message)
    except AirbyteTracedException as exc:
        errors.append(exc.message or str(exc))
    except Exception as exc:  # the CDK raises plain exceptions for failed streams at the end of a read
        errors.append(f"{type(exc).__name__}: {exc}")
    if errors:
        detail = "; ".join(dict.fromkeys(e for e in errors if e))
        raise ConnectorError(f"connector read failed, nothing landed: {detail}")
    for name in outputs:
        flush(name)
    return SyncOutput(streams=outputs, state=list(latest_state.values()))

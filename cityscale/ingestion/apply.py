"""``make airbyte-apply``: create or update the airbyte/ definitions on an Airbyte server, idempotently.

Everything is matched by name inside the workspace, so applying twice changes nothing the second
time and renaming is an explicit act. Per connection file, in dependency order:

1. the declarative source definition (the manifest itself; updated only when it changed),
2. the GCS destination (``airbyte/destinations/<name>.yaml``, secrets from ``${ENV}``),
3. the source (definition + configuration),
4. the connection (stream selection with sync modes, cursor and primary keys, schedule, namespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cityscale.config import Settings
from cityscale.ingestion import connectors
from cityscale.ingestion.server import make_client, paged, quiet, unvalidated


@dataclass(frozen=True)
class Action:
    kind: str  # definition | destination | source | connection
    name: str
    action: str  # created | updated | unchanged
    id: str


def _definitions(client: Any, ws: str) -> dict[str, Any]:
    from airbyte_api import api

    response = client.declarative_source_definitions.list_declarative_source_definitions(
        request=api.ListDeclarativeSourceDefinitionsRequest(workspace_id=ws)
    ).declarative_source_definitions_response
    return {d.name: d for d in (response.data if response else [])}


def _by_name(client: Any, ws: str, kind: str) -> dict[str, Any]:
    from airbyte_api import api

    def fetch(limit: int, offset: int) -> Any:
        if kind == "source":
            req = api.ListSourcesRequest(workspace_ids=[ws], limit=limit, offset=offset)
            return client.sources.list_sources(request=req).sources_response
        if kind == "destination":
            req = api.ListDestinationsRequest(workspace_ids=[ws], limit=limit, offset=offset)
            return client.destinations.list_destinations(request=req).destinations_response
        req = api.ListConnectionsRequest(workspace_ids=[ws], limit=limit, offset=offset)
        return client.connections.list_connections(request=req).connections_response

    return {item.name: item for item in paged(fetch)}


def apply_definition(client: Any, ws: str, conn: connectors.Connection) -> Action:
    from airbyte_api import api, models

    manifest = conn.manifest()
    existing = _definitions(client, ws).get(conn.definition_name)
    if existing is None:
        created = client.declarative_source_definitions.create_declarative_source_definition(
            request=api.CreateDeclarativeSourceDefinitionRequest(
                workspace_id=ws,
                create_declarative_source_definition_request=models.CreateDeclarativeSourceDefinitionRequest(
                    name=conn.definition_name, manifest=manifest
                ),
            )
        ).declarative_source_definition_response
        return Action("definition", conn.definition_name, "created", created.id)
    if existing.manifest == manifest:
        return Action("definition", conn.definition_name, "unchanged", existing.id)
    client.declarative_source_definitions.update_declarative_source_definition(
        request=api.UpdateDeclarativeSourceDefinitionRequest(
            workspace_id=ws,
            definition_id=existing.id,
            update_declarative_source_definition_request=models.UpdateDeclarativeSourceDefinitionRequest(
                manifest=manifest
            ),
        )
    )
    return Action("definition", conn.definition_name, "updated", existing.id)


def apply_destination(client: Any, ws: str, name: str, settings: Settings, environ: dict | None) -> Action:
    from airbyte_api import api, models

    spec = connectors.load_destination(name, settings, environ)
    config = models.DestinationGcs.model_validate(spec["configuration"])  # a typed destination: validate it
    existing = _by_name(client, ws, "destination").get(spec["name"])
    if existing is None:
        created = client.destinations.create_destination(
            request=models.DestinationCreateRequest(name=spec["name"], workspace_id=ws, configuration=config)
        ).destination_response
        return Action("destination", spec["name"], "created", created.destination_id)
    client.destinations.patch_destination(
        request=api.PatchDestinationRequest(
            destination_id=existing.destination_id,
            destination_patch_request=models.DestinationPatchRequest(name=spec["name"], configuration=config),
        )
    )
    return Action("destination", spec["name"], "updated", existing.destination_id)


def apply_source(client: Any, ws: str, conn: connectors.Connection, definition_id: str) -> Action:
    from airbyte_api import api, models

    config = connectors.source_config(conn)
    existing = _by_name(client, ws, "source").get(conn.source_name)
    with quiet():
        if existing is None:
            request = unvalidated(
                models.SourceCreateRequest,
                name=conn.source_name,
                workspace_id=ws,
                definition_id=definition_id,
                configuration=config,
            )
            created = client.sources.create_source(request=request).source_response
            return Action("source", conn.source_name, "created", created.source_id)
        patch = unvalidated(models.SourcePatchRequest, name=conn.source_name, configuration=config)
        client.sources.patch_source(
            request=api.PatchSourceRequest(source_id=existing.source_id, source_patch_request=patch)
        )
    return Action("source", conn.source_name, "updated", existing.source_id)


def _stream_configurations(conn: connectors.Connection) -> Any:
    from airbyte_api import models

    streams = [
        models.StreamConfiguration(
            name=s["name"],
            sync_mode=models.ConnectionSyncModeEnum(s["sync_mode"]),
            cursor_field=s.get("cursor_field"),
            primary_key=s.get("primary_key"),
        )
        for s in conn.streams
    ]
    return models.StreamConfigurations(streams=streams)


def _schedule(conn: connectors.Connection) -> Any:
    from airbyte_api import models

    return models.AirbyteAPIConnectionSchedule(
        schedule_type=models.ScheduleTypeEnum(conn.schedule["schedule_type"]),
        cron_expression=conn.schedule.get("cron_expression"),
    )


def apply_connection(client: Any, ws: str, conn: connectors.Connection, source_id: str, destination_id: str) -> Action:
    from airbyte_api import api, models

    existing = _by_name(client, ws, "connection").get(conn.name)
    common = {
        "name": conn.name,
        "configurations": _stream_configurations(conn),
        "schedule": _schedule(conn),
        "namespace_definition": "custom_format",
        "namespace_format": conn.namespace_format,
        "status": models.ConnectionStatusEnum.ACTIVE,
    }
    if existing is None:
        created = client.connections.create_connection(
            request=models.ConnectionCreateRequest(source_id=source_id, destination_id=destination_id, **common)
        ).connection_response
        return Action("connection", conn.name, "created", created.connection_id)
    client.connections.patch_connection(
        request=api.PatchConnectionRequest(
            connection_id=existing.connection_id, connection_patch_request=models.ConnectionPatchRequest(**common)
        )
    )
    return Action("connection", conn.name, "updated", existing.connection_id)


def apply(settings: Settings, names: list[str] | None = None, environ: dict[str, str] | None = None) -> list[Action]:
    """Apply the named connection files (default: all of airbyte/connections/) to the configured server."""
    if not settings.airbyte_workspace_id:
        raise ValueError("CITYSCALE_AIRBYTE_WORKSPACE_ID is not set")
    client, ws = make_client(settings), settings.airbyte_workspace_id
    actions: list[Action] = []
    destinations: dict[str, Action] = {}
    for key in names or connectors.available(settings):
        conn = connectors.load_connection(key, settings)
        definition = apply_definition(client, ws, conn)
        if conn.destination not in destinations:
            destinations[conn.destination] = apply_destination(client, ws, conn.destination, settings, environ)
            actions.append(destinations[conn.destination])
        source = apply_source(client, ws, conn, definition.id)
        connection = apply_connection(client, ws, conn, source.id, destinations[conn.destination].id)
        actions += [definition, source, connection]
    return actions


def main() -> None:
    """Entry point of ``make airbyte-apply`` (``python -m cityscale.ingestion.apply [connector ...]``)."""
    import sys

    from cityscale.config import get_settings

    for action in apply(get_settings(), sys.argv[1:] or None):
        print(f"{action.kind:<12} {action.action:<9} {action.name} ({action.id})")


if __name__ == "__main__":
    main()

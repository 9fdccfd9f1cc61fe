"""The ingestion layer: Airbyte connectors run in-process or on a server, and file snapshots.

``run`` is the one entry point (``ingest(mode, source, store_uri)``); the modules here
hold the parts: ``connectors`` (the definitions in ``airbyte/``), ``embedded`` (airbyte-cdk),
``server`` (airbyte-api sync + reading what landed in GCS), ``apply`` (``make airbyte-apply``),
``state`` (cursor state next to the raw zone), ``quality`` (the data-quality checks every batch passes).
"""

"""Readers that turn real source exports into the raw counts contract (see ``cityscale.schema``)."""

"""CityScale's feature platform: one feature spec, Feast as the open default, Tecton for licensees.

- :mod:`~cityscale.features.spec`: the one declarative definition (entities, sources, views, services);
- :mod:`~cityscale.features.compute`: DuckDB SQL over the raw zone at the requested event times;
- :mod:`~cityscale.features.feast_backend`: the Feast store (point-in-time join, materialize, server);
- :mod:`~cityscale.features.training_set`: the training-set format (``Examples`` + extras, validated schema);
- :mod:`~cityscale.features.retrieval`: a point-in-time training set from the configured backend;
- :mod:`~cityscale.features.online`: ``HistorySource`` clients over the Feast feature server and Tecton;
- :mod:`~cityscale.features.tecton_backend`: opt-in Tecton SDK path (needs a Tecton licence).

Nothing here imports ``tecton`` unless ``feature_backend == "tecton"``.
"""

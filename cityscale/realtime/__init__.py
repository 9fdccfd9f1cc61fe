"""The real-time path: edge sensors push hourly counts; forecasts see them at once.

``records`` validates pushed counts, ``journal`` makes them durable, ``state`` holds recent counts and
recomputes the pushed feature rows, ``gateway`` ties those to the feature server and the raw zone,
``app`` is its HTTP API, ``process`` runs it as a loopback child and ``replay`` is the edge simulator.
"""

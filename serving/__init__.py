"""KServe serving for CityScale.

- ``predictor`` / ``__main__``: the V2 + V1 forecast model (``python -m serving``), history from the feature
  platform or the raw zone; ``server``: kserve's ModelServer with model versions in the metadata and reload;
- ``transformer``: the optional feature-fetching transformer (``python -m serving.transformer``);
- ``metrics``: Prometheus metrics on ``/metrics``;
- ``inference_service`` / ``deploy``: the InferenceService builder, create-or-patch deployer and CLI;
- ``local_server``, ``client``, ``constant_model``: loopback runner, V2 client, benchmark baseline.
"""

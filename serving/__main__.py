"""Start the CityScale model server: ``python -m serving [--model production|latest|N|URI]``.

Ports come from the settings (``HTTP_PORT``/``GRPC_PORT``). kserve parses ``sys.argv`` on import
with its own flags, so ours are parsed with ``parse_known_args`` and named to avoid collisions.
"""

from __future__ import annotations

import argparse

from cityscale.config import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="production", help="registry alias, version number or model URI")
    args, _ = parser.parse_known_args()

    from serving import server
    from serving.predictor import CityScalePredictor, set_gil_switch_interval

    settings = get_settings()
    set_gil_switch_interval(settings.serving_gil_switch_interval_ms)
    predictor = CityScalePredictor(settings, model_uri=args.model)
    predictor.load()  # ready (and the readiness probe green) only once model and history source are loaded
    server.start(
        [predictor],
        settings.http_port,
        settings.grpc_port,
        grpc_own_loop=settings.serving_grpc_own_loop,
        log_grpc_calls=settings.serving_log_grpc_calls,
    )


if __name__ == "__main__":
    main()

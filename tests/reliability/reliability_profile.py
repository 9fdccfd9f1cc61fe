"""Sizes of the reliability tests, picked by ``CITYSCALE_RELIABILITY_PROFILE``.

``ci`` (the default, part of the normal ``make test``: well under 90 s on 2 cores) or ``full``
(``make test-reliability``: >= 10,000 fuzz requests, a two-minute soak per protocol).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROFILE = os.environ.get("CITYSCALE_RELIABILITY_PROFILE", "ci")
if PROFILE not in ("ci", "full"):
    raise ValueError(f"CITYSCALE_RELIABILITY_PROFILE must be ci or full, got {PROFILE!r}")


@dataclass(frozen=True)
class Sizes:
    """How much each reliability test does under the chosen profile."""

    rest_fuzz_examples: int
    grpc_fuzz_examples: int
    soak_seconds: float
    soak_concurrency: int


SIZES = {
    "ci": Sizes(rest_fuzz_examples=600, grpc_fuzz_examples=400, soak_seconds=12, soak_concurrency=8),
    "full": Sizes(rest_fuzz_examples=6000, grpc_fuzz_examples=4500, soak_seconds=120, soak_concurrency=16),
}[PROFILE]

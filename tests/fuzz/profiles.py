"""Hypothesis settings of the fuzz tests, by profile (``MODELYARD_FUZZ_PROFILE``).

- ``bounded`` (default, what ``make test`` runs): a fixed seed per test (``derandomize``), no
  example database, a few thousand cases per entry point in all: the same cases on every run.
- ``long`` (``make fuzz``): twenty times the cases, a fresh random seed per run, the example
  database under ``.hypothesis/`` so a failure found once is tried first next time.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "fuzz_settings"]

PROFILE = os.environ.get("MODELYARD_FUZZ_PROFILE", "bounded")
_SCALE = {"bounded": 1, "long": 20}
_SLOW_IS_FINE = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
settings.register_profile(
    "fuzz-bounded",
    derandomize=True,
    database=None,
    deadline=None,  # a shared CI machine: a case's time is checked by the targets instead
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
)
settings.register_profile(
    "fuzz-long",
    derandomize=False,
    deadline=None,
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
)


def fuzz_settings(examples: int) -> settings:
    """``examples`` cases in the bounded profile (scaled up in the long one)."""
    if PROFILE not in _SCALE:
        raise ValueError(f"MODELYARD_FUZZ_PROFILE must be one of {sorted(_SCALE)}, not {PROFILE}")
    parent = settings.get_profile(f"fuzz-{PROFILE}")
    return settings(parent, max_examples=examples * _SCALE[PROFILE])

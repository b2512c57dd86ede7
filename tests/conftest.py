"""Hypothesis profiles, and the stand-in for the kernels' StructRef when the JIT is off.

Profiles: `ci` (the default: derandomized, bounded), `long` (by hand:
`HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_ledger_model.py`) and `nojit` (the
short run tests/test_determinism.py starts with NUMBA_DISABLE_JIT=1).
"""

from __future__ import annotations

import os
import types

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=700,
    stateful_step_count=50,
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=3_000,
    stateful_step_count=100,
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)
settings.register_profile(
    "nojit",
    derandomize=True,
    deadline=None,
    max_examples=30,
    stateful_step_count=30,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if os.environ.get("NUMBA_DISABLE_JIT") == "1":
    # A numba StructRef cannot be built without the JIT (its constructor is itself jitted and
    # recurses). The kernels only read fields of `st`, so a namespace holding the same arrays
    # lets them run as plain Python: same kernel code, no compiled container.
    import engine.kernels.reserve
    import engine.ledger
    from engine.state import FIELDS

    assert isinstance(engine.kernels.reserve.reserve, types.FunctionType), "JIT still on"

    def _namespace_state(arrays: dict) -> types.SimpleNamespace:
        return types.SimpleNamespace(**{name: arrays[name] for name in FIELDS})

    engine.ledger.make_state = _namespace_state

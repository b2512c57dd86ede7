"""bench/stalls.py: the gap accounting of the machine-stall probe, on a scripted clock."""

from __future__ import annotations

import pytest

from bench import stalls


def test_gaps_are_counted_by_length() -> None:
    # Clock reads (s): steady 10 µs steps, with gaps of 60 µs, 300 µs, 1.2 ms and 2 ms.
    reads = [0.0, 1e-5, 2e-5, 8e-5, 9e-5, 3.9e-4, 4e-4, 1.6e-3, 1.61e-3, 3.61e-3, 3.62e-3, 1.0]
    clock = iter(reads)
    r = stalls.probe_cpu(0.5, clock=lambda: next(clock))
    assert r["gaps"] == 5  # the four, and the final jump from 3.62 ms past the end (1.0 s)
    assert r["over_250us"] == 4 and r["over_1000us"] == 3
    assert r["longest_us"] == pytest.approx(996_380, abs=1)
    assert r["seconds"] == pytest.approx(1.0)
    stalled = 60e-6 + 300e-6 + 1.2e-3 + 2e-3 + (1.0 - 3.62e-3)
    assert r["stalled_fraction"] == pytest.approx(stalled, abs=1e-5)


def test_steady_clock_has_no_gaps() -> None:
    clock = iter([i * 1e-6 for i in range(2_000)])
    r = stalls.probe_cpu(1e-3, clock=lambda: next(clock))
    assert r["gaps"] == 0 and r["over_1000us_per_s"] == 0 and r["longest_us"] == 0
    assert r["seconds"] == pytest.approx(1e-3, abs=2e-6)


def test_probe_is_bounded_in_time() -> None:
    assert stalls.probe_cpu(-1.0)["seconds"] < 0.01
    # A request for longer than SECONDS_MAX spins SECONDS_MAX at most: checked on a fake clock
    # that jumps 1 s per read.
    clock = iter(float(i) for i in range(1_000))
    r = stalls.probe_cpu(10_000.0, clock=lambda: next(clock))
    assert r["seconds"] == stalls.SECONDS_MAX

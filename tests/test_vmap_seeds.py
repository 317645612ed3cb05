"""``benchmarks/vmap_seeds.py`` compares one-at-a-time and vmapped training of a client's
restarts; its figures mean something only if both paths train the same parameter sets on
the same minibatches with the same anchors. A mix-up in that harness shows as a difference
of the order of a step, not of roundoff."""

from __future__ import annotations

import numpy as np

from benchmarks.vmap_seeds import measure
from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.spec import CircuitSpec


def test_one_at_a_time_and_vmapped_restarts_follow_the_same_trajectories():
    spec = CircuitSpec(2, 1, "amplitude", tuple(entangling_pairs("linear", 2)), 0.01, 0.0, 0.01)
    single, batched, diff = measure(spec, restarts=3, steps=6)
    assert single > 0 and batched > 0
    assert np.isfinite(diff) and diff < 1e-10, diff

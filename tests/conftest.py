"""Shared test setup.

Importing ``pqfl.quantum`` turns on JAX float64 before any test touches JAX, so results
do not depend on which test module happens to run first.
"""

import numpy as np
import pytest

import pqfl.quantum  # noqa: F401  (enables jax_enable_x64)


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(12345)

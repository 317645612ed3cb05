"""Shared test setup.

Importing ``pqfl.quantum`` turns on JAX float64 before any test touches JAX, so results
do not depend on which test module happens to run first.
"""

import pqfl.quantum  # noqa: F401  (enables jax_enable_x64)

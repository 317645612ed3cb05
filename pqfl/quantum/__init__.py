"""Quantum model pieces: encodings, the variational block, simulators."""

import jax

# Exact simulation and gradient checks need float64 throughout.
jax.config.update("jax_enable_x64", True)

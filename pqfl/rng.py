"""Seed derivation: every random draw comes from (seed, stream, client, round, ...)."""

from __future__ import annotations

import zlib

import numpy as np


def _key(part) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def derive_seed(seed: int, *parts) -> int:
    """A 32-bit seed determined by the run seed and the named stream parts."""
    return int(np.random.SeedSequence([int(seed), *(_key(p) for p in parts)]).generate_state(1)[0])


def derive_rng(seed: int, *parts) -> np.random.Generator:
    """A NumPy generator for the stream (seed, *parts)."""
    return np.random.default_rng(derive_seed(seed, *parts))

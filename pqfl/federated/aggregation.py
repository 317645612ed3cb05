"""Masked weighted averaging over heterogeneous parameter blocks (HeteroFL-style FedAvg)."""

from __future__ import annotations

import numpy as np


def masked_average(previous: np.ndarray, blocks: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Average each entry of the global tensor over the clients whose block holds it.

    ``previous`` is the global tensor (L_max, Q_max, 3); client n's block has shape
    (l_n, q_n, 3) and sits at [:l_n, :q_n, :]. Entries are weighted by ``weights``
    (training-set sizes); an entry no client holds keeps its previous value.
    """
    total = np.zeros_like(previous, dtype=np.float64)
    mass = np.zeros_like(previous, dtype=np.float64)
    for block, w in zip(blocks, weights):
        if w < 0:
            raise ValueError("aggregation weights must be non-negative")
        sl = tuple(slice(0, s) for s in block.shape)
        total[sl] += w * np.asarray(block, dtype=np.float64)
        mass[sl] += w
    return np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), previous)


def block_of(global_theta: np.ndarray, layers: int, qubits: int) -> np.ndarray:
    """A client's (layers, qubits, 3) view of the global tensor, copied."""
    return np.array(global_theta[:layers, :qubits, :], dtype=np.float64)

"""Masked weighted averaging over heterogeneous parameter blocks (HeteroFL-style FedAvg).

The server holds one global tensor per sharing group, stacked as (groups, L_max, Q_max, 3):
with ``federation.share: fleet`` one group holds every client (the paper); with
``encoding`` clients share θ only with clients of the same data encoding; with
``hardware`` only with clients of the same encoding and qubit count, whose blocks act on
the same kind of input state in registers of the same size.
"""

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


SHARE_KEYS = {
    "fleet": lambda profile: 0,
    "encoding": lambda profile: profile.encoding,
    "hardware": lambda profile: (profile.encoding, profile.qubits),
}


def share_groups(profiles: list, share: str) -> list[int]:
    """Each client's sharing group, numbered in order of first appearance: one group for the
    whole ``fleet``, one per distinct ``encoding``, or one per (encoding, qubits) with
    ``hardware``. ``profiles`` are the clients' hardware profiles (``ClientProfile``)."""
    if share not in SHARE_KEYS:
        raise ValueError(f"unknown share {share!r}; use {', '.join(SHARE_KEYS)}")
    keys = [SHARE_KEYS[share](p) for p in profiles]
    order = list(dict.fromkeys(keys))
    return [order.index(k) for k in keys]

"""Server-side pieces: global initialisation and client sampling."""

from __future__ import annotations

import math

import numpy as np

from pqfl.rng import derive_rng


def init_global(layers: int, qubits: int, seed: int, scale: float = 0.3, replica: int = 0) -> np.ndarray:
    """Initial shared tensor (L_max, Q_max, 3): angles ~ N(0, scale²), small so circuits
    start near the encoding (scale 0: every Rot is the identity, only the CNOTs remain).
    Restart ``replica`` > 0 (``federation.restarts``) draws its own."""
    rng = derive_rng(seed, "init-global", *((replica,) if replica else ()))
    return rng.normal(0.0, 1.0, size=(layers, qubits, 3)) * scale


def init_shared(layers: int, qubits: int, seed: int, scale: float, groups: list[int], restarts: int = 1) -> np.ndarray:
    """The server's initial state, (restarts · n_groups, L_max, Q_max, 3): one ``init_global``
    tensor per sharing group (``groups[n]`` = client n's group), every group of a restart from
    the same draw; restart r's groups follow restart r − 1's (``replica_groups``)."""
    n_groups = max(groups, default=0) + 1
    return np.stack([init_global(layers, qubits, seed, scale, r) for r in range(restarts) for _ in range(n_groups)])


def replica_groups(groups: list[int], restarts: int) -> list[int]:
    """The sharing group of each virtual client r·N + n (restart r of client n): restarts
    never share θ with each other."""
    n_groups = max(groups, default=0) + 1
    return [g + r * n_groups for r in range(restarts) for g in groups]


def sample_clients(n_clients: int, fraction: float, min_clients: int, seed: int, round_index: int) -> list[int]:
    """Indices of the clients taking part in a round: ⌈fraction·N⌉, at least ``min_clients``."""
    k = min(n_clients, max(min_clients, math.ceil(fraction * n_clients)))
    if k == n_clients:
        return list(range(n_clients))
    return sorted(derive_rng(seed, "sample", round_index).choice(n_clients, size=k, replace=False).tolist())

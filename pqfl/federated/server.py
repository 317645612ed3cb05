"""Server-side pieces: global initialisation, client sampling and the aggregation rule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pqfl.federated.robust import grouped_robust_average
from pqfl.privacy.dp import clipped_noisy_mean
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


@dataclass(frozen=True)
class ServerRule:
    """How the server combines the uploads of each sharing group (``federation.aggregator``
    and ``federation.privacy``): the weighted masked mean (the paper's), a Byzantine-robust
    rule of :mod:`pqfl.federated.robust`, or the DP mean of clipped updates with Gaussian
    noise of standard deviation ``noise_std`` on their sum (:mod:`pqfl.privacy.dp`)."""

    rule: str = "mean"
    trim: float = 0.1
    byzantine: int = 0
    keep: int | None = None
    clip: float | None = None
    dp: bool = False  # the DP mean: unweighted, updates clipped to ``clip``
    noise_std: float = 0.0  # server-side noise on the sum of clipped updates (0 with noise: local)
    seed: int = 0

    @classmethod
    def from_config(cls, federation, attackers: int = 0) -> ServerRule:
        """The rule ``federation`` configures; Krum tolerates ``attackers`` unless
        ``aggregator.byzantine`` says otherwise."""
        agg, dp = federation.aggregator, federation.privacy
        byzantine = agg.byzantine if agg.byzantine is not None else attackers
        if dp is None:
            return cls(agg.rule, agg.trim, byzantine, agg.keep, agg.clip, seed=federation.seed)
        std = dp.noise_multiplier * dp.clip if dp.noise == "server" else 0.0
        return cls(clip=dp.clip, dp=True, noise_std=std, seed=federation.seed)

    def combine(
        self, previous: np.ndarray, blocks: list[np.ndarray], weights: list[float], groups: list[int], round_index: int
    ) -> np.ndarray:
        """The new (groups, L_max, Q_max, 3) tensors; group g's noise is drawn from
        (seed, "dp-noise", round, g), so a resumed run adds the same noise."""
        if not self.dp:
            return grouped_robust_average(
                previous,
                blocks,
                weights,
                groups,
                rule=self.rule,
                trim=self.trim,
                byzantine=self.byzantine,
                keep=self.keep,
                clip=self.clip,
            )
        out = np.array(previous, dtype=np.float64)
        for g in range(len(out)):
            mine = [b for b, gn in zip(blocks, groups) if gn == g]
            if mine:
                rng = derive_rng(self.seed, "dp-noise", round_index, g)
                out[g] = clipped_noisy_mean(previous[g], mine, self.clip, self.noise_std, rng)
        return out

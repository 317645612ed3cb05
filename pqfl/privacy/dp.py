"""Client-level differential privacy for the server's average (DP-FedAvg, McMahan et al. 2018).

Each client's update Δ_n = upload − its global block is clipped to L2 norm C, so adding or
removing one client moves the sum of clipped updates by at most C. Gaussian noise
N(0, (σC)²) on every entry of that sum (``noise: server``) makes each round a Gaussian
mechanism with noise multiplier σ; with ``noise: local`` every honest client adds the same
noise to its own clipped update before uploading, which protects it from the server too
(the server's sum then carries n times the noise variance). The sum is divided by the
number of clients holding each entry: a client's block shape is public, the noise is not.

The (ε, δ) spent is computed by Google's ``dp_accounting`` (Rényi DP accountant): one
Gaussian event per round, Poisson-subsampled at rate q = sampled clients / all clients when
``federation.client_fraction`` < 1. pqfl samples a fixed number of clients without
replacement; treating it as Poisson sampling at the same rate is the approximation
DP-FedAvg's analysis makes, and docs/robustness.md says so.
"""

from __future__ import annotations

import numpy as np

from pqfl.federated.robust import clip_update


def clipped_noisy_mean(
    previous: np.ndarray,
    blocks: list[np.ndarray],
    clip: float,
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One group's new tensor: ``previous`` plus the mean of the clipped updates, with
    N(0, noise_std²) added to their sum on every entry some block holds (0: no noise)."""
    total = np.zeros_like(previous, dtype=np.float64)
    count = np.zeros_like(previous, dtype=np.float64)
    for block in blocks:
        sl = tuple(slice(0, s) for s in np.shape(block))
        total[sl] += clip_update(np.asarray(block, dtype=np.float64) - previous[sl], clip)
        count[sl] += 1
    held = count > 0
    if noise_std > 0:
        total = total + np.where(held, rng.normal(0.0, noise_std, size=previous.shape), 0.0)
    return np.where(held, previous + total / np.where(held, count, 1.0), previous)


def local_noise(
    upload: np.ndarray, global_block: np.ndarray, clip: float, noise_std: float, rng: np.random.Generator
) -> np.ndarray:
    """What an honest client uploads under ``noise: local``: its global block plus its
    clipped update with N(0, noise_std²) on every entry."""
    update = clip_update(np.asarray(upload, dtype=np.float64) - global_block, clip)
    return global_block + update + rng.normal(0.0, noise_std, size=np.shape(update))


def epsilon_spent(noise_multiplier: float, rounds: int, delta: float, sample_rate: float = 1.0, orders=None) -> float:
    """The ε of (ε, δ)-DP after ``rounds`` Gaussian rounds with ``noise_multiplier`` σ,
    each over clients sampled at ``sample_rate``; ``orders`` are the RDP orders (the
    accountant's defaults when None). σ = 0 is no privacy: ε = ∞. Zero rounds spend 0."""
    if noise_multiplier == 0:
        return float("inf")
    if rounds == 0:
        return 0.0
    import dp_accounting  # imported on use: 0.9 s, and only DP runs need it
    from dp_accounting.rdp import RdpAccountant

    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sample_rate, event)
    accountant = RdpAccountant(orders) if orders is not None else RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(delta))

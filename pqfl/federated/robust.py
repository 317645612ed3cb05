"""Byzantine-robust server rules over heterogeneous (masked) parameter blocks.

``masked_average`` lets a single client move any entry it holds arbitrarily far. The rules
here bound that influence, on the same layout: the global tensor of a group is
(L_max, Q_max, 3), client n's block (l_n, q_n, 3) sits at [:l_n, :q_n, :], and an entry no
client holds keeps its previous value.

* ``median`` / ``trimmed_mean``: per entry, over the blocks that hold it (unweighted), so a
  minority of arbitrary values cannot drag an entry outside the honest range.
* ``krum`` / ``multi_krum`` (Blanchard et al. 2017): drop whole blocks that are far from
  their nearest neighbours, then ``masked_average`` the rest with the usual weights.
* ``clip``: before any rule, each client's update (block minus the global block it started
  from) is scaled down to L2 norm at most ``clip``.

For the per-entry rules a NaN in a block counts as an entry that block does not hold.
"""

from __future__ import annotations

import numpy as np

from pqfl.federated.aggregation import masked_average

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def clip_update(update: np.ndarray, clip: float) -> np.ndarray:
    """``update`` scaled by min(1, clip / ‖update‖₂), the L2 norm taken over the whole block,
    so no client can move the global tensor further than ``clip`` in one round."""
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip!r}")
    update = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(update))
    return update * (clip / norm) if norm > clip else update.copy()


def _stack(previous: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Blocks as one (n, L_max, Q_max, 3) float array, NaN where a block does not hold the entry."""
    stacked = np.full((len(blocks), *previous.shape), np.nan)
    for i, block in enumerate(blocks):
        block = np.asarray(block, dtype=np.float64)
        if block.ndim != previous.ndim or any(b > p for b, p in zip(block.shape, previous.shape)):
            raise ValueError(f"block {i} of shape {block.shape} does not fit the global tensor {previous.shape}")
        stacked[(i, *(slice(0, s) for s in block.shape))] = block
    return stacked


def coordinate_median(previous: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Per entry of ``previous`` (L_max, Q_max, 3), the median over the blocks that hold it
    (unweighted; the mean of the two middle values for an even count). Entries nobody holds
    keep ``previous``."""
    out = np.array(previous, dtype=np.float64)
    if not blocks:
        return out
    stacked = _stack(out, blocks)
    held = (~np.isnan(stacked)).any(axis=0)
    out[held] = np.nanmedian(stacked[:, held], axis=0)
    return out


def trimmed_mean(previous: np.ndarray, blocks: list[np.ndarray], trim: float) -> np.ndarray:
    """Per entry, over the m blocks that hold it: sort, drop the floor(trim·m) lowest and the
    floor(trim·m) highest values, and average the rest (unweighted; the rule of
    ``scipy.stats.trim_mean``). ``trim`` = 0 is the plain unweighted mean. Entries nobody holds
    keep ``previous``."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must satisfy 0 <= trim < 0.5, got {trim!r}")
    out = np.array(previous, dtype=np.float64)
    if not blocks:
        return out
    stacked = _stack(out, blocks)
    count = (~np.isnan(stacked)).sum(axis=0)
    held = count > 0
    values = np.sort(stacked[:, held], axis=0)  # NaN (not held) sorts last
    m = count[held]
    cut = np.floor(trim * m).astype(int)
    rank = np.arange(len(blocks))[:, None]
    kept = (rank >= cut) & (rank < m - cut)
    out[held] = np.where(kept, values, 0.0).sum(axis=0) / (m - 2 * cut)
    return out


def krum_scores(blocks: list[np.ndarray], byzantine: int) -> np.ndarray:
    """Krum score of each block: the sum of squared L2 distances to its n - f - 2 nearest other
    blocks (n blocks, f = ``byzantine``). Distances use only the entries every block holds,
    the common prefix [:min l_n, :min q_n, :], so blocks of different sizes are compared on the
    same coordinates. Needs n >= 2f + 3."""
    n, f = len(blocks), byzantine
    if f < 0:
        raise ValueError(f"byzantine (f) must be >= 0, got {f}")
    if n < 2 * f + 3:
        raise ValueError(f"Krum needs n >= 2f + 3 blocks: got n={n} blocks for byzantine f={f} (needs {2 * f + 3})")
    common = tuple(slice(0, min(np.shape(b)[axis] for b in blocks)) for axis in range(np.ndim(blocks[0])))
    flat = np.stack([np.asarray(b, dtype=np.float64)[common].ravel() for b in blocks])
    dist = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(dist, np.inf)
    return np.sort(dist, axis=1)[:, : n - f - 2].sum(axis=1)


def multi_krum(
    previous: np.ndarray, blocks: list[np.ndarray], weights: list[float], byzantine: int, keep: int | None = None
) -> np.ndarray:
    """Multi-Krum: keep the ``keep`` blocks with the lowest Krum scores (None -> n - f; 1 is
    plain Krum; ties go to the lower index) and ``masked_average`` them with their weights."""
    scores = krum_scores(blocks, byzantine)
    n = len(blocks)
    keep = n - byzantine if keep is None else keep
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be between 1 and the number of blocks ({n}), got {keep}")
    chosen = np.argsort(scores, kind="stable")[:keep]
    return masked_average(previous, [blocks[i] for i in chosen], [weights[i] for i in chosen])


def _clip_block(previous: np.ndarray, block: np.ndarray, clip: float) -> np.ndarray:
    """``block`` with its update relative to the global block it started from norm-clipped."""
    base = np.asarray(previous[tuple(slice(0, s) for s in np.shape(block))], dtype=np.float64)
    return base + clip_update(np.asarray(block, dtype=np.float64) - base, clip)


def robust_average(
    previous: np.ndarray,
    blocks: list[np.ndarray],
    weights: list[float],
    *,
    rule: str = "mean",
    trim: float = 0.1,
    byzantine: int = 0,
    keep: int | None = None,
    clip: float | None = None,
) -> np.ndarray:
    """One group's new tensor (L_max, Q_max, 3) from its clients' blocks under ``rule``.

    With ``clip``, each block is first replaced by previous_block + clip_update(block -
    previous_block, clip), previous_block = previous[:l, :q, :], i.e. each client's update is
    norm-clipped. Then ``mean`` is ``masked_average`` (weighted), ``median`` and
    ``trimmed_mean`` are per entry (unweighted, ``trim``), ``krum`` is ``multi_krum`` with
    keep=1 and ``multi_krum`` keeps ``keep`` blocks, both for ``byzantine`` faulty clients.
    With no blocks the tensor is returned unchanged (copied).
    """
    if rule not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; use {', '.join(RULES)}")
    if len(blocks) != len(weights):
        raise ValueError("robust_average needs one weight per block")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive, got {clip!r}")
    if not blocks:
        return np.array(previous, dtype=np.float64)
    if clip is not None:
        blocks = [_clip_block(previous, b, clip) for b in blocks]
    if rule == "mean":
        return masked_average(previous, blocks, weights)
    if rule == "median":
        return coordinate_median(previous, blocks)
    if rule == "trimmed_mean":
        return trimmed_mean(previous, blocks, trim)
    return multi_krum(previous, blocks, weights, byzantine, keep=1 if rule == "krum" else keep)


def grouped_robust_average(
    previous: np.ndarray, blocks: list[np.ndarray], weights: list[float], groups: list[int], **rule_kwargs
) -> np.ndarray:
    """``robust_average`` within each sharing group: ``previous`` is
    (groups, L_max, Q_max, 3) and ``groups[n]`` is block n's group; a group that uploads
    nothing keeps its tensor. A Krum group with too few blocks for ``byzantine`` raises."""
    if not (len(blocks) == len(weights) == len(groups)):
        raise ValueError("grouped_robust_average needs one weight and one group per block")
    out = np.array(previous, dtype=np.float64)
    if any(not 0 <= g < len(out) for g in groups):
        raise ValueError(f"group indices must lie in [0, {len(out)}), got {sorted(set(groups))}")
    for g in range(len(out)):
        idx = [n for n, gn in enumerate(groups) if gn == g]
        out[g] = robust_average(previous[g], [blocks[n] for n in idx], [weights[n] for n in idx], **rule_kwargs)
    return out

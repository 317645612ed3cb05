"""Adversarial clients: which clients attack, what they train on and what they upload.

Attackers are ordinary members of the fleet (their own circuits, noise and data); only
their behaviour differs. ``federation.attack.fraction`` of the clients, drawn from the
seed, run ``federation.attack.kind``:

| kind | trains on | uploads (w = its global block, v = its trained block) |
|---|---|---|
| ``label_flip`` | its training rows with 0 ↔ 1 swapped | v |
| ``sign_flip`` | its rows | w − scale·(v − w): its update reversed |
| ``model_replacement`` | its rows with labels swapped | w + boost·(v − w): boosted so the average lands near v (Bagdasaryan et al. 2020) |
| ``gaussian`` | its rows | N(0, sigma²) on every angle |
| ``free_rider`` | its rows | w unchanged: it contributes nothing and takes the average |

Labels are flipped after the federated preprocessing, whose summed statistics use the
true labels. Methods that upload nothing (``local``, ``centralized``) feel only the
flipped labels (``centralized`` pools them with everyone's rows).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pqfl.rng import derive_rng

FLIPS_LABELS = ("label_flip", "model_replacement")


def attacker_indices(n_clients: int, attack, seed: int) -> list[int]:
    """The attacking clients' indices (sorted): ``attack.attackers(n)`` of them, drawn
    from (seed, "attackers") so every method of a run faces the same attackers."""
    k = attack.attackers(n_clients)
    if k == 0:
        return []
    return sorted(derive_rng(seed, "attackers").choice(n_clients, size=k, replace=False).tolist())


def poison_fleet(fleet, attackers: list[int], kind: str):
    """``fleet`` with the attackers' training labels swapped when ``kind`` flips labels
    (the fleet itself is not changed: prepared fleets are shared between methods)."""
    if kind not in FLIPS_LABELS or not attackers:
        return fleet
    clients, datas = list(fleet.clients), list(fleet.datas)
    for n in attackers:
        clients[n] = replace(clients[n], y_train=1 - clients[n].y_train)
        datas[n] = replace(datas[n], y_train=1 - datas[n].y_train)
    return replace(fleet, clients=clients, datas=datas)


def poisoned_upload(
    attack, trained: np.ndarray, global_block: np.ndarray, uploaders: int, rng: np.random.Generator
) -> np.ndarray:
    """What an attacker uploads instead of its trained block (see the module's table);
    ``uploaders`` is how many clients upload to its group this round (the default boost)."""
    kind, update = attack.kind, np.asarray(trained) - global_block
    if kind == "sign_flip":
        return global_block - attack.scale * update
    if kind == "model_replacement":
        return global_block + (attack.boost if attack.boost is not None else uploaders) * update
    if kind == "gaussian":
        return rng.normal(0.0, attack.sigma, size=np.shape(global_block))
    if kind == "free_rider":
        return np.array(global_block, dtype=np.float64)
    return np.asarray(trained)

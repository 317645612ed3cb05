"""What the federated preprocessing's per-client sums reveal (docs/robustness.md, privacy).

Every client sends the server (n, Σx, Σxxᵀ) of its training rows, and with
``projection: fisher`` the same sums over its labelled anomalous rows. pqfl adds them up
in the clear, without secure aggregation, so the server sees each client's sums:

- the client's mean Σx / n, exactly, whatever n is;
- with n = 1, the row itself (Σx);
- with n = 2, both rows (up to their order): Σxxᵀ − (Σx)(Σx)ᵀ/2 = d dᵀ/2 with d = x₁ − x₂,
  so d is the scaled top eigenvector, and x₁,₂ = (Σx ± d)/2;
- with 3 ≤ n ≤ d, the subspace the rows span and their scatter, but not the rows.

:func:`rows_from_sums` is that reconstruction; the tests run it on the sums a client with
one labelled anomaly sends.
"""

from __future__ import annotations

import numpy as np

from pqfl.data.preprocessing import SufficientStats


def rows_from_sums(stats: SufficientStats) -> np.ndarray | None:
    """The rows behind ``stats`` when they are determined (n ≤ 2; two rows in either order),
    else None. n = 0 is no rows."""
    if stats.n == 0:
        return np.empty((0, len(stats.total)))
    if stats.n == 1:
        return stats.total[None, :].copy()
    if stats.n == 2:
        scatter = stats.outer - np.outer(stats.total, stats.total) / 2  # = d dᵀ / 2
        vals, vecs = np.linalg.eigh(scatter)
        d = np.sqrt(2 * max(vals[-1], 0.0)) * vecs[:, -1]
        return np.stack([(stats.total + d) / 2, (stats.total - d) / 2])
    return None

"""Federated preprocessing from aggregated sufficient statistics (docs/algorithm.md, privacy).

Each client reports only (n, Σx, Σxxᵀ) of its training rows; the server adds them up and
derives the standardisation and the PCA basis. No row leaves its client as a row, though
the sums of one or two rows are those rows (pqfl.privacy.statistics). Features are
then mapped to what a client's encoding takes: 2^q amplitudes (PCA down or zero-pad) or
q angles (whitened PCA scores squashed to (−π, π)).

Amplitude encoding normalises each row, so on its own it keeps only a row's direction and
drops its length — for anomaly detection usually the strongest signal (on ODDS wbc the
norm of the standardised row alone ranks anomalies with AUROC 1.0). With ``keep_norm``
the map keeps 2^q − 1 PCA features (all features, zero-padded, when they fit) — or, with
``keep_residual``, 2^q − 2 PCA features plus the norm of the residual the PCA drops — and
puts a constant ``norm_anchor`` (the training rows' RMS norm in what is kept) in the first
amplitude: the state (a, z)/‖(a, z)‖ then carries
‖z‖ as its overlap with |0…0⟩, and rows near the mean sit near |0…0⟩ — where an
angle-encoded row at the mean sits too, and where the one_class objective's centre is.

Angle and IQP encodings see only q whitened PCA scores; with ``keep_residual`` they see
q − 1 of them and, on the last qubit, the norm of the residual the PCA drops (whitened by
its RMS), which is what PCA-based detectors score. With ``angle_scale: common`` every
score is divided by the top component's standard deviation instead of its own.

With ``projection: fisher`` (supervised only) clients also report the sums over their
labelled anomalous training rows, and the first basis vector becomes the Fisher
discriminant direction of the summed classes, the rest the principal components of what
it leaves: a client that keeps k directions then reads the one that best separates the
classes linearly, plus k − 1 principal components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pqfl.errors import PQFLInputError


@dataclass(frozen=True)
class SufficientStats:
    n: int
    total: np.ndarray  # Σ x, shape (d,)
    outer: np.ndarray  # Σ x xᵀ, shape (d, d)

    @classmethod
    def of(cls, X: np.ndarray) -> SufficientStats:
        X = np.asarray(X, dtype=np.float64)
        return cls(len(X), X.sum(axis=0), X.T @ X)

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return SufficientStats(self.n + other.n, self.total + other.total, self.outer + other.outer)


@dataclass(frozen=True)
class GlobalStats:
    """Mean, scale and the eigenbasis of the standardised covariance, from summed stats."""

    mean: np.ndarray
    scale: np.ndarray
    eigvals: np.ndarray  # descending
    eigvecs: np.ndarray  # columns, matching eigvals

    @classmethod
    def from_sums(
        cls, stats: list[SufficientStats], anomalies: list[SufficientStats] | None = None, ridge: float = 1e-3
    ) -> GlobalStats:
        """The statistics of all training rows, summed over clients.

        With ``anomalies`` (each client's sums over its labelled anomalous training rows),
        the first basis vector is the Fisher discriminant direction — S_w⁻¹(μ₁ − μ₀) in
        standardised coordinates, with S_w the pooled within-class covariance plus ``ridge``
        (relative to its mean eigenvalue) — and the rest are the principal components of
        the standardised covariance restricted to what that direction leaves. The basis
        stays orthonormal, so residual norms and the eigenvalues' total keep their meaning.
        """
        s = sum(stats[1:], stats[0])
        mean = s.total / s.n
        cov = s.outer / s.n - np.outer(mean, mean)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        scale = np.where(std > 1e-12, std, 1.0)  # constant features stay at zero after centring
        corr = cov / np.outer(scale, scale)
        corr = (corr + corr.T) / 2
        if anomalies is None:
            vals, vecs = _eig(corr)
            return cls(mean, scale, vals, vecs)
        w = _fisher(s, sum(anomalies[1:], anomalies[0]), scale, ridge)
        # An orthonormal basis of w's complement (Householder reflection of e₁ onto w).
        e = np.zeros_like(w)
        e[0] = 1.0
        u = w - e
        Q = (np.eye(len(w)) - 2.0 * np.outer(u, u) / (u @ u) if u @ u > 1e-24 else np.eye(len(w)))[:, 1:]
        vals, vecs = _eig(Q.T @ corr @ Q)
        vecs = _fix_signs(Q @ vecs)
        return cls(mean, scale, np.r_[max(float(w @ corr @ w), 0.0), vals], np.column_stack([w, vecs]))


def _fix_signs(vecs: np.ndarray) -> np.ndarray:
    """Each column's largest entry positive, so the basis does not depend on the LAPACK build."""
    if vecs.size == 0:  # no columns (the Fisher direction alone spans one feature)
        return vecs
    return vecs * np.where(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])] < 0, -1.0, 1.0)


def _eig(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and sign-fixed eigenvectors of a symmetric matrix."""
    vals, vecs = np.linalg.eigh(sym)
    order = np.argsort(vals)[::-1]
    return np.clip(vals[order], 0.0, None), _fix_signs(vecs[:, order])


def _fisher(total: SufficientStats, anomalies: SufficientStats, scale: np.ndarray, ridge: float) -> np.ndarray:
    """The unit Fisher discriminant direction in standardised coordinates, anomalies scoring higher."""
    n1, n0 = anomalies.n, total.n - anomalies.n
    if n1 < 1 or n0 < 1:
        raise PQFLInputError(
            f"projection: fisher needs labelled anomalous and normal training rows (got {n1} anomalous, "
            f"{n0} normal); use projection: pca, or a partition that gives clients training anomalies"
        )
    mu1 = anomalies.total / n1
    mu0 = (total.total - anomalies.total) / n0
    # Pooled within-class scatter: Σ_c (Σxxᵀ − n_c μ_c μ_cᵀ), over n (sklearn's LDA covariance).
    within = (total.outer - n1 * np.outer(mu1, mu1) - n0 * np.outer(mu0, mu0)) / total.n
    within = within / np.outer(scale, scale)
    within = (within + within.T) / 2
    within += ridge * max(np.trace(within) / len(scale), 1e-12) * np.eye(len(scale))
    w = np.linalg.solve(within, (mu1 - mu0) / scale)
    norm = np.linalg.norm(w)
    if norm < 1e-12:
        raise PQFLInputError(
            "projection: fisher found no direction separating anomalous from normal training rows "
            "(equal class means); use projection: pca"
        )
    return w / norm


@dataclass(frozen=True)
class FeatureMap:
    """Raw features → a client's circuit input. Picklable, applied identically on every split."""

    encoding: str
    out_dim: int
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray | None  # (d, k) projection, None = keep standardised features
    whiten: np.ndarray | None  # (k,) divisors for angle encodings
    norm_anchor: float | None = None  # amplitude only: constant |0…0⟩ amplitude that keeps ‖z‖ (keep_norm)
    residual: bool = False  # with PCA: one feature (amplitude or angle) holds the norm of the part PCA drops

    def standardised(self, X: np.ndarray) -> np.ndarray:
        """Rows in the federated standardised coordinates every client shares: (x − mean) / scale."""
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def pre_squash(self, X: np.ndarray) -> np.ndarray:
        """The circuit input before its last, nonlinear step (``squash``): PCA scores (and
        the residual norm), padded, with the amplitude anchor in front; angle encodings'
        divided by ``whiten``."""
        Z = self.standardised(X)
        if self.components is not None:
            full = np.sum(Z**2, axis=1)
            Z = Z @ self.components
            if self.residual:
                Z = np.concatenate([Z, np.sqrt(np.clip(full - np.sum(Z**2, axis=1), 0.0, None))[:, None]], axis=1)
        free = self.out_dim - (self.norm_anchor is not None)
        if Z.shape[1] < free:
            Z = np.pad(Z, ((0, 0), (0, free - Z.shape[1])))
        if self.norm_anchor is not None:
            Z = np.concatenate([np.full((len(Z), 1), self.norm_anchor), Z], axis=1)
        return Z if self.encoding == "amplitude" else Z / self.whiten

    def linear_part(self) -> np.ndarray:
        """(d, out_dim) matrix L: the part of ``pre_squash`` linear in the standardised row z
        is z @ L (the PCA scores, or the features themselves); the anchor, the residual norm
        and the padding are columns of zeros."""
        d = len(self.mean)
        L = np.zeros((d, self.out_dim))
        first = int(self.norm_anchor is not None)
        basis = np.eye(d) if self.components is None else self.components
        L[:, first : first + basis.shape[1]] = basis
        return L if self.encoding == "amplitude" else L / self.whiten

    def squash(self, P: np.ndarray) -> np.ndarray:
        """``pre_squash``'s output → the circuit input: amplitude rows normalised, angles 2·arctan."""
        if self.encoding == "amplitude":
            norm = np.linalg.norm(P, axis=1, keepdims=True)
            # An all-zero row (the mean itself) has no direction; give it the uniform state.
            return np.where(norm > 1e-12, P / np.where(norm > 1e-12, norm, 1.0), 1.0 / np.sqrt(self.out_dim))
        return 2.0 * np.arctan(P)

    def transform(self, X: np.ndarray, adjust: np.ndarray | None = None) -> np.ndarray:
        """Raw rows → circuit input. ``adjust`` (d, out_dim), a trained shared encoder folded
        in (:func:`pqfl.federated.strategies.encoder_adjust`), adds z @ adjust before ``squash``."""
        P = self.pre_squash(X)
        if adjust is not None:
            P = P + self.standardised(X) @ adjust
        return self.squash(P)


def feature_map(
    stats: GlobalStats,
    encoding: str,
    out_dim: int,
    keep_norm: bool = False,
    keep_residual: bool = False,
    angle_scale: str = "whiten",
) -> FeatureMap:
    """The map for an encoding needing ``out_dim`` features, from the global statistics.

    ``keep_norm`` (amplitude only, out_dim ≥ 2): 2^q − 1 features plus the norm anchor;
    ``keep_residual`` (with keep_norm, when PCA is needed): 2^q − 2 PCA features, the norm
    of the residual and the anchor, so the state keeps the whole row's norm. For angle and
    IQP encodings (with or without keep_norm, when PCA is needed): q − 1 whitened PCA
    scores plus the whitened norm of the residual. See the module docstring.

    ``angle_scale`` (angle and IQP): ``whiten`` divides each score by its own standard
    deviation; ``common`` divides every score (and the residual) by the top component's,
    so low-variance components stay small angles — for re-uploading clients, which read
    many components and would otherwise turn noise directions into full-size rotations.
    """
    d = len(stats.mean)
    if encoding == "amplitude" and keep_norm and out_dim >= 2:
        free = out_dim - 1
        if d <= free:
            components, residual = None, False
        else:
            # With room for it, one amplitude carries ‖z − PCA(z)‖, so the state keeps the
            # whole row's norm, including what lies off the kept components (where PCA-based
            # detectors find anomalies).
            residual = keep_residual and free >= 2
            components = stats.eigvecs[:, : free - residual]
        # RMS norm of the standardised training rows in what the state keeps (Σ eigenvalues).
        kept = stats.eigvals.sum() if residual or components is None else stats.eigvals[:free].sum()
        anchor = float(np.sqrt(max(kept, 1e-12)))
        return FeatureMap(encoding, out_dim, stats.mean, stats.scale, components, None, anchor, residual)
    if encoding != "amplitude" and keep_residual and 2 <= out_dim < d:
        # q − 1 whitened PCA scores, and one angle for the norm of what they leave out
        # (whitened by its RMS): a row unusual only off the kept components still turns a
        # qubit away from |0⟩, as a row far out along them does.
        components = stats.eigvecs[:, : out_dim - 1]
        w = np.sqrt(np.r_[stats.eigvals[: out_dim - 1], stats.eigvals[out_dim - 1 :].sum()])
        w = _common(w, stats) if angle_scale == "common" else w
        return FeatureMap(
            encoding, out_dim, stats.mean, stats.scale, components, np.where(w > 1e-12, w, 1.0), None, True
        )
    components = None if d <= out_dim and encoding == "amplitude" else stats.eigvecs[:, : min(out_dim, d)]
    whiten = None
    if encoding != "amplitude":
        k = min(out_dim, d)
        w = np.sqrt(stats.eigvals[:k]) if components is not None else np.ones(k)
        w = _common(w, stats) if angle_scale == "common" else w
        whiten = np.pad(np.where(w > 1e-12, w, 1.0), (0, out_dim - k), constant_values=1.0)
    return FeatureMap(encoding, out_dim, stats.mean, stats.scale, components, whiten)


def _common(w: np.ndarray, stats: GlobalStats) -> np.ndarray:
    """One divisor for every angle: the largest standard deviation along the basis (the top
    principal component's, unless a leading Fisher direction has more)."""
    return np.full_like(w, np.sqrt(stats.eigvals.max()))


def encoder_adjust(enc, linear):
    """What a shared encoder adds to a client's ``pre_squash`` input, as a (d, out_dim) matrix.

    The encoder (``fedenc``) maps the standardised row z to z + A z / d, A (d, d) averaged
    across clients and zero at the start (the identity); the client's own linear map L
    (``FeatureMap.linear_part``) then reads z' as it read z, so its input before ``squash``
    gains z Aᵀ L / d. The 1/d keeps one Adam step on A (every entry moving by about the
    learning rate) to about a learning rate's change in each input, as a step on θ moves
    each angle. Works on NumPy and JAX arrays alike.
    """
    return enc.T @ linear / enc.shape[0]

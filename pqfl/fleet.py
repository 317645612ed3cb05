"""The fleet: every client's circuit-ready private splits, built from a config or from arrays.

Loading, partitioning and the federated preprocessing (feature maps from summed
statistics) happen once; every method of a run trains on the same :class:`Fleet`, so
methods compare on identical data. A pooled model (the centralized baseline) is built
from a fleet by its strategy (``pqfl.federated.strategies.Centralized``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pqfl.config import ClientProfile, Config, DatasetConfig
from pqfl.data.partition import ClientData, partition, shortage
from pqfl.data.preprocessing import GlobalStats, SufficientStats, feature_map
from pqfl.data.sources import Dataset, load_source
from pqfl.errors import PQFLInputError
from pqfl.federated.client import ClientSetup
from pqfl.quantum.spec import CircuitSpec
from pqfl.rng import derive_rng

# Features reach a client's encoding through the federated PCA, which needs each client's
# d x d sum of outer products and one eigendecomposition of their total: beyond this many
# features that costs more memory and time than the circuits themselves.
MAX_FEATURES = 4096


def client_setup(
    index: int, profile: ClientProfile, stats: GlobalStats, data: ClientData, dataset: DatasetConfig
) -> ClientSetup:
    """A client's setup: its circuit, and its feature map (from the federated ``stats``)
    applied to each of its splits."""
    spec = CircuitSpec.from_profile(profile)
    fmap = feature_map(
        stats, profile.encoding, spec.n_features, dataset.keep_norm, dataset.keep_residual, dataset.angle_scale
    )
    return ClientSetup(
        index=index,
        profile=profile,
        spec=spec,
        feature_map=fmap,
        X_train=fmap.transform(data.X_train),
        y_train=data.y_train,
        X_val=fmap.transform(data.X_val),
        y_val=data.y_val,
        X_test=fmap.transform(data.X_test),
        y_test=data.y_test,
        normal_classes=data.normal_classes,
    )


@dataclass(frozen=True)
class Fleet:
    """The prepared clients of a run: what each client trains and is evaluated on, plus
    what a pooled (centralized) model needs — the raw splits, the federated statistics and
    the dataset settings its feature map is built with."""

    clients: list[ClientSetup]
    datas: list[ClientData]
    stats: GlobalStats  # of the dataset's projection
    dataset: DatasetConfig

    @property
    def max_layers(self) -> int:
        return max(s.profile.layers for s in self.clients)

    @property
    def max_qubits(self) -> int:
        return max(s.profile.qubits for s in self.clients)


def prepare(cfg: Config) -> Fleet:
    """Load and partition the data, then fit every client's feature map from summed statistics."""
    return build_fleet(load_and_partition(cfg), cfg.clients, cfg.dataset)


def build_fleet(datas: list[ClientData], profiles: list[ClientProfile], dataset: DatasetConfig) -> Fleet:
    """Every client's feature map from the clients' summed statistics, applied to its splits."""
    # Each client shares only (n, Σx, Σxxᵀ) of its training rows (and, when any client keeps
    # the Fisher direction, the same sums over its labelled anomalous training rows).
    sums = [SufficientStats.of(d.X_train) for d in datas]
    projection = [p.projection or dataset.projection for p in profiles]
    used = {dataset.projection, *projection}
    anomalies = [SufficientStats.of(d.X_train[d.y_train == 1]) for d in datas] if "fisher" in used else None
    by_projection = {
        p: GlobalStats.from_sums(sums, anomalies if p == "fisher" else None, dataset.fisher_ridge) for p in used
    }
    setups = [
        client_setup(i, prof, by_projection[proj], d, dataset)
        for i, (prof, proj, d) in enumerate(zip(profiles, projection, datas))
    ]
    return Fleet(setups, datas, by_projection[dataset.projection], dataset)


def load_and_partition(cfg: Config, loaded: Dataset | None = None) -> list[ClientData]:
    """The clients' private splits: load (unless ``loaded``, the source already read),
    subsample, check the features, partition (no feature map), check the batch size."""
    ds = load_source(cfg.dataset.source) if loaded is None else loaded
    names = [c.name for c in cfg.clients]
    if cfg.dataset.max_samples and len(ds.y) > cfg.dataset.max_samples:
        keep = np.sort(
            derive_rng(cfg.federation.seed, "subsample").choice(len(ds.y), cfg.dataset.max_samples, replace=False)
        )
        full, ds = ds, type(ds)(ds.X[keep], ds.y[keep], ds.anomaly_labels, ds.name)
        missing, _ = shortage(ds, len(names), cfg.partition, cfg.dataset.normal_classes)
        if missing and not shortage(full, len(names), cfg.partition, cfg.dataset.normal_classes)[0]:
            raise PQFLInputError(
                f"dataset.max_samples: {cfg.dataset.max_samples} rows (of {len(full.y)}) leave too few for "
                f"{len(names)} clients: {missing}; raise max_samples"
            )
    n_features = ds.X.shape[1]
    if n_features > MAX_FEATURES:
        raise PQFLInputError(
            f"dataset.source: {ds.name} has {n_features} features, more than the {MAX_FEATURES} the encodings can be fed "
            f"through the federated PCA (each client would send a {n_features}x{n_features} covariance sum, "
            f"{8 * n_features**2 / 2**20:,.0f} MiB); reduce the features first (fewer columns, or a smaller image size=S)"
        )
    for c in cfg.clients:
        if c.encoding != "amplitude" and c.qubits > ds.X.shape[1]:
            raise PQFLInputError(
                f"clients.{c.name}.qubits: {c.encoding} encoding on {c.qubits} qubits needs {c.qubits} features but "
                f"{ds.name} has {ds.X.shape[1]}; use at most {ds.X.shape[1]} qubits or amplitude encoding"
            )
    datas = partition(ds, names, cfg.partition, cfg.dataset.normal_classes, cfg.federation.seed)
    # A minibatch is padded to batch_size rows (zero weight), so a batch larger than any model's
    # training rows only costs memory. The pooled (centralized) model trains on every client's
    # rows; a batch above the largest client's rows is full-batch training for the others.
    largest, pooled = max(d.n_train for d in datas), sum(d.n_train for d in datas)
    if cfg.federation.batch_size > pooled:
        raise PQFLInputError(
            f"federation.batch_size: {cfg.federation.batch_size} is more than the {pooled} training rows of all "
            f"{len(datas)} clients together (the largest client has {largest}), so every minibatch would be mostly "
            f"padding; use a batch_size of at most {largest}"
        )
    return datas

"""``FederatedDetector``: a federation of heterogeneous quantum clients trained in process,
with a scikit-learn-style API, giving each client its own fitted
:class:`~pqfl.detector.QuantumDetector`.

    fed = FederatedDetector(method="pqfl", rounds=10, lam=0.1)
    fed.fit({"a": (X_a, y_a), "b": (X_b, y_b)},
            profiles={"a": {"qubits": 6}, "b": {"qubits": 4, "encoding": "angle"}})
    fed.detectors_["a"].decision_function(X_new)

Each client's rows stay its own: the feature maps come from summed statistics and only
θ blocks travel (``docs/algorithm.md``). Thresholds are chosen on each client's
``validation`` rows (the F1-best threshold, as the pipeline does) when given, else so that
a ``contamination`` fraction of its training rows is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from pqfl.config import ClientProfile, DatasetConfig, FederationConfig
from pqfl.detector import QuantumDetector, _validated, check_training_data
from pqfl.metrics import choose_threshold, client_metrics
from pqfl.results import ClientEvaluation


class FederatedDetector(BaseEstimator):
    """Federated training of one quantum anomaly detector per client.

    Parameters
    ----------
    method : str or Strategy
        ``"pqfl"`` (the paper's personalized QFL), ``"fedavg"``, ``"fedprox"``, ``"local"``,
        ``"centralized"``, or a :class:`~pqfl.federated.strategies.Strategy` instance.
    rounds, local_epochs, batch_size, lr, lr_decay, optimizer, init_scale, head_l2, head_fit
        The rounds and each client's local training (docs/configuration.md, federation).
    lam, mu
        The PQFL and FedProx proximal weights (used when ``method`` names those methods).
    share : {"fleet", "encoding", "hardware"}
        Which clients share θ: all, those with the same encoding, or those with the same
        encoding and qubit count.
    client_fraction, min_clients
        Clients sampled per round, and the quorum below which a round fails.
    restarts : int
        Independent federations; each client's detector is the ensemble of its models.
    objective, one_class_center
        ``"supervised"`` (labels, 1 = anomaly) or ``"one_class"`` (labels unused).
    keep_norm, keep_residual, angle_scale, projection, fisher_ridge
        The federated feature maps (dataset settings of the same names).
    aggregator, privacy, attack : dict or None
        The server's aggregation rule (``{"rule": "median"}``, ...), client-level
        differential privacy (``{"noise_multiplier": 1.0, "clip": 1.0}``) and simulated
        attacking clients (``{"kind": "sign_flip", "fraction": 0.25}``): the fields of
        ``federation.aggregator``, ``privacy`` and ``attack`` (docs/robustness.md). After
        ``fit``, ``epsilon_`` is the ε spent (None without privacy) and ``attackers_`` the
        attacking clients.
    contamination : float
        Without validation rows, the fraction of a client's training rows flagged.
    simulator : {"fast", "reference"}
    random_state : int
        Seed of every random draw, derived per client and round.
    """

    def __init__(
        self,
        method="pqfl",
        rounds: int = 10,
        local_epochs: int = 2,
        batch_size: int = 64,
        lr: float = 0.05,
        lr_decay: float = 1.0,
        optimizer: str = "adam",
        init_scale: float = 0.3,
        head_l2: float = 0.0,
        head_fit: str = "sgd",
        lam: float = 0.1,
        mu: float = 0.01,
        share: str = "fleet",
        client_fraction: float = 1.0,
        min_clients: int = 1,
        restarts: int = 1,
        objective: str = "supervised",
        one_class_center: str = "zero_state",
        keep_norm: bool = False,
        keep_residual: bool = False,
        angle_scale: str = "whiten",
        projection: str = "pca",
        fisher_ridge: float = 1e-3,
        aggregator: dict | None = None,
        privacy: dict | None = None,
        attack: dict | None = None,
        contamination: float = 0.1,
        simulator: str = "fast",
        random_state: int = 0,
    ):
        self.method = method
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.optimizer = optimizer
        self.init_scale = init_scale
        self.head_l2 = head_l2
        self.head_fit = head_fit
        self.lam = lam
        self.mu = mu
        self.share = share
        self.client_fraction = client_fraction
        self.min_clients = min_clients
        self.restarts = restarts
        self.objective = objective
        self.one_class_center = one_class_center
        self.keep_norm = keep_norm
        self.keep_residual = keep_residual
        self.angle_scale = angle_scale
        self.projection = projection
        self.fisher_ridge = fisher_ridge
        self.aggregator = aggregator
        self.privacy = privacy
        self.attack = attack
        self.contamination = contamination
        self.simulator = simulator
        self.random_state = random_state

    def federation(self) -> FederationConfig:
        keys = (
            "rounds",
            "local_epochs",
            "batch_size",
            "lr",
            "lr_decay",
            "optimizer",
            "init_scale",
            "head_l2",
            "head_fit",
            "mu",
            "share",
            "client_fraction",
            "min_clients",
            "restarts",
            "objective",
            "one_class_center",
        )
        extra = {k: getattr(self, k) for k in ("aggregator", "privacy", "attack") if getattr(self, k) is not None}
        return _validated(
            FederationConfig, lam=self.lam, seed=self.random_state, **{k: getattr(self, k) for k in keys}, **extra
        )

    def dataset(self) -> DatasetConfig:
        keys = ("keep_norm", "keep_residual", "angle_scale", "projection", "fisher_ridge")
        return _validated(DatasetConfig, **{k: getattr(self, k) for k in keys})

    def fit(self, data: Mapping, profiles: Mapping, validation: Mapping | None = None) -> FederatedDetector:
        """Train the federation.

        ``data`` maps each client's name to its training rows ``(X, y)`` (``y`` may be
        None, or ``X`` given alone, for the one_class objective); ``profiles`` maps the same
        names to client profiles (a mapping of profile fields such as ``qubits``,
        ``layers``, ``encoding``, ``entangling``, ``noise``, ``shots``, or a
        :class:`~pqfl.config.ClientProfile`); ``validation``, optional, maps names to
        labelled rows ``(X, y)`` that choose each client's threshold.
        """
        from pqfl.data.partition import ClientData
        from pqfl.federated.rounds import Federation
        from pqfl.fleet import build_fleet

        fed, dataset = self.federation(), self.dataset()
        names = list(data)
        if not names:
            raise ValueError("data: no clients; pass {client name: (X, y)}")
        if set(profiles) != set(names):
            raise ValueError(
                f"profiles: give one profile per client of data (missing {sorted(set(names) - set(profiles))}, "
                f"unknown {sorted(set(profiles) - set(names))})"
            )
        if validation is not None and set(validation) != set(names):
            raise ValueError(
                f"validation: give rows for every client of data or none (missing "
                f"{sorted(set(names) - set(validation))}, unknown {sorted(set(validation) - set(names))})"
            )
        if fed.min_clients > len(names):
            raise ValueError(f"min_clients: {fed.min_clients} exceeds the {len(names)} clients; lower it")
        datas, checked = [], {}
        for name in names:
            X, y = _rows(data[name])
            X, y = check_training_data(X, y, self.objective)
            Xv, yv = _labelled(validation[name], f"validation[{name!r}]") if validation is not None else (X[:0], y[:0])
            checked[name] = (X, Xv, yv)
            datas.append(ClientData(name, X, y, Xv, yv, X[:0], y[:0]))
        profs = [_profile(name, profiles[name]) for name in names]
        if len({d.X_train.shape[1] for d in datas}) > 1:
            raise ValueError(
                "data: every client needs the same raw features (columns); got "
                f"{sorted({d.X_train.shape[1] for d in datas})}"
            )
        fleet = build_fleet(datas, profs, dataset)
        federation = Federation(fleet, self.method, fed, simulator=self.simulator)
        result = federation.run(evaluate=False)
        self.detectors_ = {}
        for client, members in zip(result.clients, result.members):
            det = QuantumDetector.from_federation(client, members, 0.0, fed, dataset, self.simulator)
            X, Xv, yv = checked[client.name]
            if len(Xv):
                det.threshold_ = choose_threshold(yv, det.decision_function(Xv))
            else:
                det.threshold_ = float(np.quantile(det.decision_function(X), 1.0 - self.contamination))
            self.detectors_[client.name] = det
        self.strategy_ = federation.strategy
        self.epsilon_ = federation.epsilon(fed.rounds)
        self.attackers_ = list(federation.attacker_names)
        self.n_features_in_ = datas[0].X_train.shape[1]
        return self

    def decision_function(self, data: Mapping) -> dict[str, np.ndarray]:
        """Each client's anomaly scores for its rows: ``{name: X}`` → ``{name: scores}``."""
        check_is_fitted(self, "detectors_")
        return {name: self._detector(name).decision_function(_rows(rows)[0]) for name, rows in data.items()}

    def predict(self, data: Mapping) -> dict[str, np.ndarray]:
        """Each client's 0/1 flags at its detector's ``threshold_``."""
        check_is_fitted(self, "detectors_")
        return {name: self._detector(name).predict(_rows(rows)[0]) for name, rows in data.items()}

    def evaluate(self, data: Mapping) -> dict[str, ClientEvaluation]:
        """Each client's metrics on its labelled rows ``{name: (X, y)}`` at its threshold
        (``val_auroc`` is NaN: the rows given here are the test rows)."""
        check_is_fitted(self, "detectors_")
        out = {}
        for name, rows in data.items():
            X, y = _labelled(rows, f"data[{name!r}]")
            det = self._detector(name)
            scores = det.decision_function(X)
            out[name] = ClientEvaluation(
                client=name,
                threshold=det.threshold_,
                val_auroc=float("nan"),
                **client_metrics(y, scores, det.threshold_),
                test_scores=scores,
            )
        return out

    def score(self, data: Mapping) -> float:
        """Mean-client AUROC on labelled rows ``{name: (X, y)}``."""
        check_is_fitted(self, "detectors_")
        return float(
            np.mean(
                [
                    roc_auc_score(_labelled(rows, name)[1], s)
                    for (name, rows), s in zip(data.items(), self.decision_function(data).values())
                ]
            )
        )

    def _detector(self, name: str) -> QuantumDetector:
        try:
            return self.detectors_[name]
        except KeyError:
            raise ValueError(f"unknown client {name!r}; the federation has {sorted(self.detectors_)}") from None


def _rows(rows):
    """(X, y) from a client's entry: an (X, y) pair, or X alone."""
    if isinstance(rows, tuple) and len(rows) == 2:
        return rows
    return rows, None


def _labelled(rows, where: str):
    X, y = _rows(rows)
    if y is None:
        raise ValueError(f"{where}: labelled rows (X, y) are needed here, with y = 1 for anomalies")
    X, y = np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"{where}: X must be 2-D with one label per row; got X {X.shape} and y {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{where}: needs both normal (0) and anomalous (1) rows to score")
    return X, y


def _profile(name: str, profile) -> ClientProfile:
    if isinstance(profile, ClientProfile):
        return profile.model_copy(update={"name": name})
    if not isinstance(profile, Mapping):
        raise ValueError(f"profiles[{name!r}]: expected a mapping of profile fields (qubits, layers, encoding, ...)")
    return _validated(ClientProfile, **{**dict(profile), "name": name})

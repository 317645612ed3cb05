"""``QuantumDetector``: one client's parameterized-circuit anomaly detector, with the
scikit-learn / PyOD estimator contract.

Raw features are standardised and projected to what the encoding takes (``FeatureMap``),
encoded into a circuit of ``qubits`` qubits and ``layers`` Rot layers, measured as ⟨Z_i⟩
(and ⟨Z_i Z_j⟩ with ``measure="zz"``), and read by a classical head: the score is the
head's logit (``objective="supervised"``) or the distance of the expectation vector from
a fixed centre (``"one_class"``). Higher scores are more anomalous.

``fit`` trains one client alone (the ``local`` method on a fleet of one) and sets
``threshold_`` so that a ``contamination`` fraction of the training rows is flagged, as
PyOD's detectors do. A federation (:class:`pqfl.FederatedDetector`, or the pipeline's
flow) builds its clients' detectors with :meth:`QuantumDetector.from_federation`, whose
threshold is chosen on each client's validation split. ``pqfl.persistence`` saves and
loads a fitted detector as plain files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, validate_data

from pqfl.config import ClientProfile, DatasetConfig, FederationConfig, NoiseConfig


@dataclass(frozen=True)
class Member:
    """One trained model of a detector: the circuit's θ block, the head, the one-class centre
    and, trained with a shared encoder (``fedenc``), the encoder folded into the feature map
    (``adjust``, ``FeatureMap.transform``)."""

    theta: np.ndarray
    w: np.ndarray
    b: float
    center: np.ndarray | None = None
    adjust: np.ndarray | None = None

    def params(self) -> dict:
        return {"theta": self.theta, "w": self.w, "b": np.asarray(self.b)}


def serve_stream(client_index: int) -> tuple:
    """The random stream of a federated client's detector's shot sampling (fixed per client,
    so the same request always gets the same answer)."""
    return ("serve", int(client_index))


# Circuit parameters of QuantumDetector that are fields of a client profile.
CIRCUIT_PARAMS = ("qubits", "layers", "entangling", "coupling", "encoding", "reupload", "measure", "shots")


class QuantumDetector(BaseEstimator):
    """A parameterized-circuit anomaly detector for one client.

    Parameters
    ----------
    qubits, layers, entangling, coupling, encoding, reupload, measure, noise, shots
        The circuit and its device, as a client profile has them (docs/configuration.md,
        clients): ``entangling`` is ``ring``, ``linear``, ``all_to_all`` or ``device``
        (with ``coupling`` pairs); ``encoding`` is ``amplitude`` (2^qubits features),
        ``angle`` or ``iqp`` (qubits features); ``noise`` is a mapping with
        ``depolarizing``, ``amplitude_damping`` and ``readout`` (one value, or one per
        qubit); ``shots`` None means exact expectation values.
    objective : {"supervised", "one_class"}
        Class-weighted BCE on the labels, or Deep-SVDD-style distance (labels unused).
    epochs, batch_size, lr, optimizer, init_scale, head_l2, head_fit, one_class_center
        Local training (see the federation settings of the same names).
    keep_norm, keep_residual, angle_scale, projection
        How raw features are mapped to the encoding's inputs (dataset settings of the same names).
    contamination : float
        Fraction of training rows above ``threshold_`` after :meth:`fit`.
    restarts : int
        Independent trainings whose scores are ensembled.
    simulator : {"fast", "reference"}
        The batched JAX simulator, or PennyLane's devices.
    random_state : int
        Seed of every random draw (initialisation, minibatches, shots).
    """

    def __init__(
        self,
        qubits: int = 4,
        layers: int = 2,
        entangling: str = "ring",
        coupling: list | None = None,
        encoding: str = "amplitude",
        reupload: bool = False,
        measure: str = "z",
        noise: dict | None = None,
        shots: int | None = None,
        objective: str = "supervised",
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 0.05,
        optimizer: str = "adam",
        init_scale: float = 0.3,
        head_l2: float = 0.0,
        head_fit: str = "sgd",
        one_class_center: str = "zero_state",
        keep_norm: bool = False,
        keep_residual: bool = False,
        angle_scale: str = "whiten",
        projection: str = "pca",
        contamination: float = 0.1,
        restarts: int = 1,
        simulator: str = "fast",
        random_state: int = 0,
    ):
        self.qubits = qubits
        self.layers = layers
        self.entangling = entangling
        self.coupling = coupling
        self.encoding = encoding
        self.reupload = reupload
        self.measure = measure
        self.noise = noise
        self.shots = shots
        self.objective = objective
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.init_scale = init_scale
        self.head_l2 = head_l2
        self.head_fit = head_fit
        self.one_class_center = one_class_center
        self.keep_norm = keep_norm
        self.keep_residual = keep_residual
        self.angle_scale = angle_scale
        self.projection = projection
        self.contamination = contamination
        self.restarts = restarts
        self.simulator = simulator
        self.random_state = random_state

    # -- building blocks -------------------------------------------------------------

    def profile(self, name: str = "client") -> ClientProfile:
        """The client profile these parameters describe (validated; ValueError names the field)."""
        fields = {k: getattr(self, k) for k in CIRCUIT_PARAMS}
        return _validated(ClientProfile, name=name, noise=NoiseConfig(**(self.noise or {})), **fields)

    def federation(self) -> FederationConfig:
        """Local training as a one-round federation of ``epochs`` local epochs."""
        return _validated(
            FederationConfig,
            rounds=1,
            local_epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            init_scale=self.init_scale,
            head_l2=self.head_l2,
            head_fit=self.head_fit,
            objective=self.objective,
            one_class_center=self.one_class_center,
            restarts=self.restarts,
            seed=self.random_state,
        )

    def dataset(self) -> DatasetConfig:
        return _validated(
            DatasetConfig,
            keep_norm=self.keep_norm,
            keep_residual=self.keep_residual,
            angle_scale=self.angle_scale,
            projection=self.projection,
        )

    # -- the estimator contract ------------------------------------------------------

    def fit(self, X, y=None) -> QuantumDetector:
        """Train on ``X`` (and the labels ``y``, 1 = anomaly, for the supervised objective)."""
        from pqfl.data.partition import ClientData
        from pqfl.federated.rounds import Federation
        from pqfl.federated.strategies import Local
        from pqfl.fleet import build_fleet

        X = validate_data(self, X, dtype=np.float64, order="C")
        X, y = check_training_data(X, y, self.objective)
        if not 0.0 < self.contamination < 0.5:
            raise ValueError(f"contamination: expected a fraction in (0, 0.5), got {self.contamination!r}")
        fed, profile = self.federation(), self.profile()
        data = ClientData("client", X, y, X[:0], y[:0], X[:0], y[:0])
        fleet = build_fleet([data], [profile], self.dataset())
        result = Federation(fleet, Local(), fed, simulator=self.simulator).run(evaluate=False)
        self._set_fitted(fleet.clients[0], result.members[0])
        self.threshold_ = float(np.quantile(self.decision_function(X), 1.0 - self.contamination))
        return self

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores of raw feature rows, higher = more anomalous; with restarts, their
        ensemble (supervised: log-odds of the mean probability; one_class: mean distance)."""
        from pqfl.federated.client import combine_scores
        from pqfl.federated.local_update import predict_scores

        check_is_fitted(self, "members_")
        X = validate_data(self, X, dtype=np.float64, order="C", reset=False)
        plain = self.feature_map_.transform(X) if any(m.adjust is None for m in self.members_) else None
        scores = [
            predict_scores(
                self.circuit_,
                objective=self.objective,
                simulator=self.simulator,
                shots=self.shots,
                params=m.params(),
                center=m.center,
                X=plain if m.adjust is None else self.feature_map_.transform(X, m.adjust),
                seed=self.random_state,
                stream=self.stream_ if r == 0 else (*self.stream_, "replica", r),
            )
            for r, m in enumerate(self.members_)
        ]
        return combine_scores(scores, self.objective)

    def predict(self, X) -> np.ndarray:
        """1 for rows scored at or above ``threshold_`` (anomalies), else 0."""
        check_is_fitted(self, "threshold_")
        return (self.decision_function(X) >= self.threshold_).astype(np.int64)

    # -- fitted state ----------------------------------------------------------------

    def _set_fitted(self, setup, members, stream: tuple = serve_stream(0)) -> None:
        self.feature_map_ = setup.feature_map
        self.circuit_ = setup.spec
        self.members_ = [
            Member(np.asarray(theta), np.asarray(st.w), float(st.b), st.center, _adjust(setup, st))
            for st, theta in members
        ]
        self.n_features_in_ = len(setup.feature_map.mean)
        self.stream_ = tuple(stream)

    @classmethod
    def from_federation(
        cls,
        setup,
        members,
        threshold: float,
        federation: FederationConfig,
        dataset: DatasetConfig,
        simulator: str = "fast",
        stream=None,
    ) -> QuantumDetector:
        """A client's fitted detector from a federation: its setup (profile, feature map),
        its members' (state, θ) and the threshold chosen on its validation split. Its
        parameters describe the client's circuit and local training, so a clone refits the
        same detector on one client's rows. Shots are drawn from the stream
        ``("serve", client index)`` unless ``stream`` says otherwise."""
        profile = setup.profile
        det = cls(
            **{k: getattr(profile, k) for k in CIRCUIT_PARAMS},
            noise=profile.noise.model_dump(),
            objective=federation.objective,
            epochs=federation.rounds * federation.local_epochs,
            batch_size=federation.batch_size,
            lr=federation.lr,
            optimizer=federation.optimizer,
            init_scale=federation.init_scale,
            head_l2=federation.head_l2,
            head_fit=federation.head_fit,
            one_class_center=federation.one_class_center,
            keep_norm=dataset.keep_norm,
            keep_residual=dataset.keep_residual,
            angle_scale=dataset.angle_scale,
            projection=profile.projection or dataset.projection,
            restarts=len(members),
            simulator=simulator,
            random_state=federation.seed,
        )
        det._set_fitted(setup, members, stream if stream is not None else serve_stream(setup.index))
        det.threshold_ = float(threshold)
        return det


def _adjust(setup, state) -> np.ndarray | None:
    """A member's shared encoder folded into its client's feature map (None without one)."""
    if getattr(state, "enc", None) is None:
        return None
    from pqfl.data.preprocessing import encoder_adjust

    return np.asarray(encoder_adjust(np.asarray(state.enc), setup.encoder_map))


def check_training_data(X, y, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as a finite 2-D float array and binary labels: required, with both classes, for
    the supervised objective; zeros when one_class has none."""
    if objective == "supervised" and y is None:
        raise ValueError(
            "y: the supervised objective trains on labels (1 = anomaly); pass y, or use "
            "objective='one_class' to train without labels"
        )
    if y is None:
        X = check_array(X, dtype=np.float64, order="C")
        y = np.zeros(len(X))
    else:
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True, order="C")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(
            f"y: labels must be 0 (normal) or 1 (anomaly); got values {sorted(set(np.unique(y)) - {0.0, 1.0})[:5]}"
        )
    if objective == "supervised" and len(np.unique(y)) < 2:
        raise ValueError(
            "y: the supervised objective needs both normal (0) and anomalous (1) training rows; "
            "add labelled anomalies or use objective='one_class'"
        )
    return X, y


def _validated(model, **fields):
    """``model(**fields)``, with a pydantic validation error turned into a ValueError naming the parameter."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or model.__name__
        raise ValueError(f"{loc}: {first['msg'].removeprefix('Value error, ')} (got {first.get('input')!r})") from None

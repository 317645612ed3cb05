"""The run configuration: one validated object loaded from YAML.

Every field is checked at load time; an impossible value raises
:class:`~pqfl.errors.PQFLInputError` naming the field and the fix. Numbers must be finite
and integers must not be booleans (YAML's ``true`` would pass as 1); client and experiment
names are kept to a safe character set, because they become file, task, tag and
registered-model names.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from pqfl.errors import PQFLInputError
from pqfl.federated.strategies import STRATEGIES

METHODS = tuple(STRATEGIES)  # the registered strategies' names, in table order
# The paper's method and its baselines: the methods a config runs when it lists none.
PAPER_METHODS = ("local", "fedavg", "fedprox", "pqfl", "centralized")

# Dense state-vector / density-matrix simulation of more qubits than this does not fit
# comfortably in this machine's memory for a batch of samples.
MAX_QUBITS = 16
MAX_REUPLOAD_NOISY_QUBITS = 8  # noisy re-uploading keeps 4^q Pauli coefficients per sample (pqfl.quantum.fast)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"  # package data

# A client's name ends up in file names, Prefect task-run names, MLflow tags and registered
# models ({experiment}-{method}-{client}); MLflow refuses empty names and names over 500 characters.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")


def clip(text: object, limit: int = 200) -> str:
    """``text`` for an error message: cut to ``limit`` characters, control characters escaped (one line)."""
    s = str(text)
    if len(s) > limit:
        s = f"{s[:limit]}… ({len(s):,} characters)"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def _not_bool(kind: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected {kind}, not true or false")
        return value

    return BeforeValidator(check)


Int = Annotated[int, _not_bool("an integer")]
Float = Annotated[float, _not_bool("a number")]


def _named(pattern: re.Pattern, rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(rule)
        return value

    return AfterValidator(check)


ClientName = Annotated[
    str,
    _named(
        CLIENT_NAME, "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (no '/' or spaces)"
    ),
]
ExperimentName = Annotated[
    str,
    _named(
        EXPERIMENT_NAME,
        "use 1-128 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit (no '/')",
    ),
]


def _gib(n_bytes: float) -> str:
    """Bytes in the largest binary unit that keeps the number at or above 1 (MiB upwards)."""
    value, unit = n_bytes / 2**20, "MiB"
    for bigger in ("GiB", "TiB", "PiB", "EiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.1f} {unit}"


def _within_simulator(qubits: int) -> int:
    """Refuse circuits the dense simulators cannot hold, saying how much memory they would need."""
    if qubits > MAX_QUBITS:
        batch = 64 * 16 * 2**qubits  # a minibatch of 64 complex128 state vectors
        noisy = 16 * qubits * 4**qubits  # a noisy client's Heisenberg-picture observables
        raise ValueError(
            f"{qubits} qubits need {_gib(batch)} for a batch of 64 state vectors ({_gib(noisy)} with noise); "
            f"the simulator holds at most {MAX_QUBITS} qubits, so use at most {MAX_QUBITS}"
        )
    return qubits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetConfig(_Strict):
    """Where the samples come from and which classes are normal."""

    source: str = "sklearn:digits"
    # Classes treated as normal at every client (global anomaly setup). Ignored when
    # partition.normal is "context", where each client's own dominant classes are normal.
    normal_classes: list[Int] = Field(default_factory=lambda: [0])
    max_samples: Int | None = Field(default=None, ge=10)
    # Amplitude-encoded clients keep each row's norm in one extra amplitude (2^q − 1 PCA
    # features + a constant; pqfl.data.preprocessing). Off: the state holds the direction only.
    keep_norm: bool = False
    # When PCA is needed, one feature holds the norm of what the PCA drops: amplitude
    # clients with keep_norm (2^q − 2 PCA features + residual + constant, so the state
    # keeps the whole row's norm) and angle/IQP clients (q − 1 PCA scores + residual).
    keep_residual: bool = False
    # Angle/IQP scores: `whiten` = each PCA score over its own std; `common` = all over the
    # top component's std, so low-variance components stay small (for re-uploading clients).
    angle_scale: Literal["whiten", "common"] = "whiten"
    # Which directions a client keeps when its encoding needs fewer features than the data
    # has: `pca` = the top principal components; `fisher` (supervised only) = the Fisher
    # discriminant direction of the labelled training rows first (clients also share the
    # sums over their anomalous rows), then the principal components of what it leaves.
    projection: Literal["pca", "fisher"] = "pca"
    # fisher: ridge added to the within-class covariance, relative to its mean eigenvalue.
    fisher_ridge: Float = Field(default=1e-3, ge=0)

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        from pqfl.data.sources import SCHEMES

        if not v.startswith(tuple(f"{s}:" for s in SCHEMES)):
            raise ValueError(
                "unknown dataset source; use one of sklearn:digits, sklearn:breast_cancer, "
                "odds:PATH.mat, csv:PATH#label=COLUMN, cifar10:DIR, cifar100:DIR, svhn:FILE.mat, imagefolder:DIR"
            )
        return v


class PartitionConfig(_Strict):
    """How samples are spread over clients (non-IID) and split per client."""

    alpha: Float = Field(default=0.5, gt=0, description="Dirichlet concentration over classes")
    normal: Literal["context", "global"] = "context"
    normal_classes_per_client: Int = Field(default=2, ge=1)
    anomaly_ratio: Float = Field(default=0.2, gt=0, lt=1)
    min_anomalies: Int = Field(default=6, ge=3)
    quantity_skew: Float = Field(default=0.0, ge=0, description="lognormal sigma of client sizes")
    # Class-labelled data: the classes anomalies are drawn from (default: every class that is
    # not normal at the client). Rows of other non-normal classes are left out.
    anomaly_classes: list[Int] | None = Field(default=None, min_length=1)
    train: Float = Field(default=0.5, gt=0, lt=1)
    val: Float = Field(default=0.2, gt=0, lt=1)
    test: Float = Field(default=0.3, gt=0, lt=1)
    # At most this many training rows per client (a label-stratified subset of its training
    # split; validation and test rows stay as they are): sets the data per client for
    # comparisons across data regimes. Unset = every training row.
    max_train_rows: Int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _splits_sum_to_one(self) -> PartitionConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must sum to 1 (got {total:g}); adjust the three fractions")
        return self


def _probability(upper: float, inclusive: bool):
    """A validator for one probability in [0, upper] or a list of them (one per qubit)."""

    def check(value: Any) -> float | list[float]:
        many = isinstance(value, (list, tuple))
        values = list(value) if many else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError("expected a probability, or a list with one per qubit")
            if not math.isfinite(v):
                raise ValueError("probabilities must be finite numbers")
            if not (0 <= v <= upper if inclusive else 0 <= v < upper):
                bound = f"<= {upper}" if inclusive else f"< {upper}"
                raise ValueError(f"probabilities must be >= 0 and {bound}")
        return [float(v) for v in values] if many else float(value)

    return PlainValidator(check, json_schema_input_type=float | list[float])


def _values(v: float | list[float]) -> list[float]:
    return list(v) if isinstance(v, list) else [v]


class NoiseConfig(_Strict):
    """Per-layer noise of a client's device: one value for every qubit, or a list with one
    value per qubit (a device calibration)."""

    depolarizing: Annotated[float | list[float], _probability(0.75, True)] = 0.0
    amplitude_damping: Annotated[float | list[float], _probability(1.0, True)] = 0.0
    # symmetric bit-flip probability at measurement
    readout: Annotated[float | list[float], _probability(0.5, False)] = 0.0

    @property
    def is_noisy(self) -> bool:
        return any(p > 0 for p in _values(self.depolarizing) + _values(self.amplitude_damping))

    @property
    def any(self) -> bool:
        return self.is_noisy or any(p > 0 for p in _values(self.readout))


class ClientProfile(_Strict):
    """One client's quantum hardware: what circuit it can run and how noisily.

    ``from_device`` takes qubits, coupling map (``entangling: device``), physical
    ``layout`` and per-qubit noise from a calibration snapshot (pqfl.quantum.devices);
    they are filled in at load time, so a dumped profile shows what the client runs.
    """

    name: ClientName
    qubits: Annotated[Int, Field(ge=1), AfterValidator(_within_simulator)]
    layers: Int = Field(default=2, ge=1)
    entangling: Literal["ring", "linear", "all_to_all", "device"] = "ring"
    encoding: Literal["amplitude", "angle", "iqp"] = "amplitude"
    # Data re-uploading (angle only): the encoding again before every layer, each time with
    # the next `qubits` features, so the circuit reads qubits x layers features.
    reupload: bool = False
    # What the head reads: `z` = ⟨Z_i⟩ on every qubit (q values); `zz` adds ⟨Z_i Z_j⟩ for every
    # pair (q(q+1)/2 values), from the same measurement in the Z basis.
    measure: Literal["z", "zz"] = "z"
    # Which directions this client keeps when its encoding needs fewer features than the
    # data has (dataset.projection when unset).
    projection: Literal["pca", "fisher"] | None = None
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    shots: Int | None = Field(default=None, ge=1)
    # Device clients (docs/devices.md).
    from_device: str | None = None
    layout: list[Int] | None = None  # physical qubit of each logical qubit
    coupling: list[tuple[Int, Int]] | None = None  # entangling pairs when entangling is "device"
    backend: Literal["aer", "ibm_runtime"] | None = None  # where the hardware evaluation runs
    device: str | None = None  # IBM Quantum backend name, for backend: ibm_runtime
    hardware_shots: Int = Field(default=1024, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _resolve_device(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("from_device") is None:
            return data
        from pqfl.quantum.devices import fill_from_device  # qiskit is imported only for device clients

        return fill_from_device(data, MAX_QUBITS)

    @model_validator(mode="after")
    def _reupload_fits(self) -> ClientProfile:
        if self.reupload and self.encoding != "angle":
            raise ValueError(
                f"reupload: data re-uploading needs encoding: angle (this client has {self.encoding}); "
                "set encoding: angle or remove reupload"
            )
        if self.reupload and self.noise.is_noisy and self.qubits > MAX_REUPLOAD_NOISY_QUBITS:
            mib = 64 * 8 * 4**self.qubits / 2**20
            raise ValueError(
                f"reupload: with depolarizing or amplitude_damping noise, re-uploading evolves 4^q real Pauli "
                f"coefficients per sample, a density matrix's worth ({mib:,.0f} MiB per copy for a batch of 64 on "
                f"{self.qubits} qubits, and training keeps one per gate); use at most "
                f"{MAX_REUPLOAD_NOISY_QUBITS} qubits, or remove that noise"
            )
        return self

    @model_validator(mode="after")
    def _device_fields_agree(self) -> ClientProfile:
        for field in ("depolarizing", "amplitude_damping", "readout"):
            value = getattr(self.noise, field)
            if isinstance(value, list) and len(value) != self.qubits:
                raise ValueError(f"noise.{field}: {len(value)} values for {self.qubits} qubits; give one per qubit")
        if self.entangling == "device" and self.coupling is None:
            raise ValueError("entangling: device needs from_device (or explicit coupling pairs)")
        if self.coupling is not None:
            bad = [p for p in self.coupling if p[0] == p[1] or not all(0 <= w < self.qubits for w in p)]
            if bad:
                raise ValueError(f"coupling: pairs {bad} are not two distinct qubits in 0..{self.qubits - 1}")
        if self.backend == "aer" and self.from_device is None:
            raise ValueError("backend: aer evaluates on a device's noise model; add from_device: NAME")
        if self.backend == "ibm_runtime" and not self.device:
            raise ValueError("backend: ibm_runtime needs device: the IBM Quantum backend name (e.g. ibm_brisbane)")
        if self.device and self.backend != "ibm_runtime":
            raise ValueError("device: only used with backend: ibm_runtime; set it or remove device")
        return self


ATTACKS = ("none", "label_flip", "sign_flip", "model_replacement", "gaussian", "free_rider")
AGGREGATION_RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def _positive(fix: str) -> AfterValidator:
    """A number that must be > 0, refused with ``fix`` (what to set instead)."""

    def check(value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be greater than 0; {fix}")
        return value

    return AfterValidator(check)


class AttackConfig(_Strict):
    """Adversarial clients inside the fleet (pqfl.federated.attacks). ``fraction`` of the
    clients, drawn from the seed, attack with ``kind``; they train and are evaluated like
    the others, and the run reports honest clients' metrics separately from theirs."""

    kind: Literal[ATTACKS] = "none"
    fraction: Float = Field(default=0.0, ge=0, lt=1)
    # sign_flip: the upload is w − scale·(v − w), the client's update reversed and scaled.
    scale: Annotated[Float, _positive("use 1 to reverse the update at its own size")] = 1.0
    # model_replacement: the upload is w + boost·(v − w) with v trained on flipped labels;
    # unset = the number of clients uploading to the attacker's group, which replaces the
    # average with v when the honest updates are small (Bagdasaryan et al. 2020).
    boost: Annotated[Float, _positive("leave it unset to boost by the number of uploading clients")] | None = None
    # gaussian: the upload is pure noise, N(0, sigma²) per angle.
    sigma: Annotated[Float, _positive("use e.g. 1.0 radian")] = 1.0

    def attackers(self, n_clients: int) -> int:
        """How many of ``n_clients`` attack: fraction · n rounded half up, none when kind is none."""
        return 0 if self.kind == "none" else math.floor(self.fraction * n_clients + 0.5)


class AggregatorConfig(_Strict):
    """The server's rule for combining uploads within a sharing group
    (pqfl.federated.robust): the paper's weighted masked mean, or a Byzantine-robust rule."""

    rule: Literal[AGGREGATION_RULES] = "mean"
    # trimmed_mean: the fraction of the holders' values dropped at each end, per entry.
    trim: Float = Field(default=0.1, ge=0, lt=0.5)
    # krum / multi_krum: the number of attackers f to tolerate (unset = the attack's count).
    byzantine: Int | None = Field(default=None, ge=0)
    # multi_krum: how many uploads to average (unset = n − f).
    keep: Int | None = Field(default=None, ge=1)
    # Each client's update (upload − its global block) is scaled to L2 norm ≤ clip first.
    clip: Annotated[Float, _positive("leave it unset for no clipping, or use e.g. 1.0")] | None = None


class PrivacyConfig(_Strict):
    """Client-level differential privacy (DP-FedAvg, McMahan et al. 2018; pqfl.privacy.dp):
    each update clipped to L2 norm ``clip``, the group's sum of clipped updates noised with
    N(0, (noise_multiplier · clip)²) per entry at the server (or each upload noised by its
    client, ``noise: local``), averaged without weights. The (ε, δ) spent is computed
    with Google's dp-accounting RDP accountant."""

    noise_multiplier: Float = 1.0
    clip: Annotated[Float, _positive("the clipping norm bounds each update, use e.g. 1.0")] = 1.0
    delta: Float = Field(default=1e-5, gt=0, lt=1)
    noise: Literal["server", "local"] = "server"

    @field_validator("noise_multiplier")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError(
                "is negative; the noise's standard deviation is noise_multiplier × clip, so use 0 "
                "(clipping only, no privacy guarantee) or a positive value such as 1.0"
            )
        return v


class FederationConfig(_Strict):
    """The federated optimisation: methods, rounds and local optimiser."""

    methods: list[str] = Field(default_factory=lambda: list(PAPER_METHODS), min_length=1)
    rounds: Int = Field(default=10, ge=1)
    local_epochs: Int = Field(default=2, ge=1)
    lr: Float = Field(default=0.05, gt=0)
    # Round k's local training runs at lr × lr_decay^(k−1) (1 = constant): later rounds take
    # smaller steps, so the final personal models settle instead of bouncing at full step.
    lr_decay: Float = Field(default=1.0, gt=0, le=1)
    batch_size: Int = Field(default=64, ge=1)
    lam: Float = Field(default=0.1, ge=0, alias="lambda")
    mu: Float = Field(default=0.01, ge=0)
    client_fraction: Float = Field(default=1.0, gt=0, le=1)
    min_clients: Int = Field(default=1, ge=1)
    seed: Int = Field(default=0, ge=0)
    objective: Literal["supervised", "one_class"] = "supervised"
    # one_class centre in ⟨Z⟩ space: zero_state = (1, …, 1), the ⟨Z⟩ of |0…0⟩, which no
    # unitary maps every input to (no hypersphere collapse); initial_mean = the training
    # rows' mean ⟨Z⟩ under the initial circuit (the old Deep-SVDD-style choice).
    one_class_center: Literal["zero_state", "initial_mean"] = "zero_state"
    optimizer: Literal["adam", "sgd"] = "adam"
    # Standard deviation of the initial shared angles (pqfl.federated.server.init_global).
    init_scale: Float = Field(default=0.3, ge=0)
    # supervised: L2 penalty (α/2)‖w‖² on each client's classical head (0 = none).
    head_l2: Float = Field(default=0.0, ge=0)
    # supervised: after each local round, "logreg" refits the head as the per-client
    # reference does (class-balanced logistic regression, scikit-learn) on what the
    # client's circuit outputs for its training rows; "sgd" keeps the jointly trained head.
    head_fit: Literal["sgd", "logreg"] = "sgd"
    # Which clients share θ: the whole fleet (the paper's masked average over every client
    # holding an entry), or only clients with the same data encoding, whose layers act on
    # the same kind of input state (pqfl.federated.aggregation.share_groups).
    # "hardware": only clients with the same encoding and qubit count.
    share: Literal["fleet", "encoding", "hardware"] = "fleet"
    # Independent restarts of the whole federation (R initialisations of θ and heads, each
    # its own server model; same data, same rounds). Each client's detector is the ensemble
    # of its R personal models: supervised, the log-odds of their mean anomaly probability;
    # one_class, their mean distance (pqfl.federated.client.combine_scores). 1 = one model.
    restarts: Int = Field(default=1, ge=1)
    # Which round's model each client keeps: "last" (the paper's: the model after the final
    # round) or "best_val" (per client, the round with its highest validation AUROC, the
    # earliest on ties; early stopping without stopping the federation). Only validation
    # scores choose; the test metrics reported are those of the chosen round.
    select: Literal["last", "best_val"] = "last"
    # Adversarial clients, the server's aggregation rule and client-level differential
    # privacy (docs/robustness.md); the defaults are the paper's: no attack, weighted mean, no DP.
    attack: AttackConfig = Field(default_factory=AttackConfig)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    privacy: PrivacyConfig | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    @field_validator("methods")
    @classmethod
    def _known_unique_methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(STRATEGIES)}")
        if len(set(v)) != len(v):
            raise ValueError("methods are listed twice; list each method once")
        return v

    @model_validator(mode="after")
    def _defences_fit_the_attack(self) -> FederationConfig:
        attack, agg = self.attack, self.aggregator
        if attack.kind == "none" and attack.fraction > 0:
            raise ValueError(
                f"federation.attack.fraction: {attack.fraction} of the clients attack, but attack.kind is none; "
                f"set a kind ({', '.join(ATTACKS[1:])}) or fraction: 0"
            )
        if attack.kind in ("label_flip", "model_replacement") and self.objective != "supervised":
            raise ValueError(
                f"federation.attack.kind: {attack.kind} flips the attackers' training labels, but "
                f"federation.objective is {self.objective} (labels unused in training); use sign_flip, "
                "gaussian or free_rider, or objective: supervised"
            )
        if agg.rule != "mean" and attack.kind != "none" and attack.fraction >= 0.5:
            raise ValueError(
                f"federation.aggregator.rule: {agg.rule} tolerates fewer than half attackers, but "
                f"federation.attack.fraction is {attack.fraction}; use a fraction below 0.5"
            )
        if self.privacy is not None and agg.rule != "mean":
            raise ValueError(
                f"federation.privacy: the DP noise is calibrated to the mean of clipped updates, but "
                f"federation.aggregator.rule is {agg.rule}; use rule: mean with privacy"
            )
        if self.privacy is not None and agg.clip is not None:
            raise ValueError(
                "federation.aggregator.clip: with privacy the updates are clipped to federation.privacy.clip; "
                "remove aggregator.clip"
            )
        return self


#: Top-level sections of the YAML that belong to the orchestration layer (tasks/settings.py
#: validates them). The library carries them through unread, so one file configures both.
ORCHESTRATION_SECTIONS = ("runner", "retries", "faults", "tracking")


class Config(_Strict):
    """A whole run as the library sees it: data, partition, federation, the client fleet and
    the simulator. The orchestration sections (runner, retries, faults, tracking) are kept
    as given; ``tasks.settings.RunConfig`` validates them."""

    name: ExperimentName = "pqfl"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    clients: list[ClientProfile] = Field(min_length=1)
    # fast: batched JAX simulator (Heisenberg picture for noise); reference: PennyLane's
    # default.qubit / default.mixed. Both compute the same circuits.
    simulator: Literal["fast", "reference"] = "fast"
    runner: dict[str, Any] = Field(default_factory=dict)
    retries: dict[str, Any] = Field(default_factory=dict)
    faults: dict[str, Any] = Field(default_factory=dict)
    tracking: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fleet_is_consistent(self) -> Config:
        names = [c.name for c in self.clients]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"clients: duplicate client names {dupes}; give every client a unique name")
        if self.federation.min_clients > len(self.clients):
            raise ValueError(
                f"federation.min_clients: {self.federation.min_clients} exceeds the {len(self.clients)} "
                "clients configured; lower min_clients or add clients"
            )
        fisher = [f"clients.{c.name}.projection" for c in self.clients if c.projection == "fisher"]
        if self.dataset.projection == "fisher":
            fisher.insert(0, "dataset.projection")
        if fisher and self.federation.objective != "supervised":
            raise ValueError(
                f"{fisher[0]}: fisher is fitted on labelled anomalies, but federation.objective is "
                f"{self.federation.objective} (labels unused in training); use projection: pca or objective: supervised"
            )
        attack, n = self.federation.attack, len(self.clients)
        if attack.fraction > 0 and attack.attackers(n) == 0:
            raise ValueError(
                f"federation.attack.fraction: {attack.fraction} of {n} clients rounds to no attacker; "
                f"use a fraction of at least {1 / (2 * n):.3g} or add clients"
            )
        if attack.attackers(n) >= n:
            raise ValueError(
                f"federation.attack.fraction: {attack.fraction} of {n} clients makes every client an attacker; "
                "leave at least one honest client (a lower fraction)"
            )
        agg = self.federation.aggregator
        if agg.rule in ("krum", "multi_krum") and self.federation.share == "fleet":
            f = agg.byzantine if agg.byzantine is not None else attack.attackers(n)
            if n < 2 * f + 3:
                raise ValueError(
                    f"federation.aggregator.rule: {agg.rule} needs at least 2f + 3 = {2 * f + 3} clients to "
                    f"tolerate f = {f} attackers, the fleet has {n}; lower aggregator.byzantine or add clients"
                )
            if agg.keep is not None and agg.keep > n:
                raise ValueError(f"federation.aggregator.keep: {agg.keep} exceeds the {n} clients; use at most {n}")
        device = next((c for c in self.clients if c.backend is not None), None)
        if self.federation.restarts > 1 and device is not None:
            raise ValueError(
                f"federation.restarts: {self.federation.restarts} restarts make each detector an ensemble of "
                f"{self.federation.restarts} circuits, but device client {device.name!r} gets a hardware evaluation "
                f"({device.backend}), which runs one circuit per client; use restarts: 1 with device clients"
            )
        return self

    def projection(self, client: ClientProfile) -> str:
        """The directions ``client`` keeps: its own projection, else the dataset's."""
        return client.projection or self.dataset.projection

    @property
    def max_layers(self) -> int:
        return max(c.layers for c in self.clients)

    @property
    def max_qubits(self) -> int:
        return max(c.qubits for c in self.clients)

    def with_overrides(self, overrides: dict[str, Any] | None = None, **kw: Any) -> Config:
        """A copy with dotted-path overrides, e.g. ``{"federation.rounds": 3}`` or
        ``{"clients.0.qubits": 4}``, re-validated."""
        data = self.model_dump(by_alias=True)
        for dotted, value in {**(overrides or {}), **kw}.items():
            node = data
            *parents, leaf = dotted.split(".")
            # An orchestration section the library carries unread takes any key: its own
            # schema (tasks/settings.py) checks it.
            opaque = (
                len(parents) == 1 and parents[0] in ORCHESTRATION_SECTIONS and type(getattr(self, parents[0])) is dict
            )
            try:
                for p in parents:
                    node = node[int(p)] if isinstance(node, list) else node[p]
                if isinstance(node, list):
                    node[int(leaf)] = value
                elif leaf not in node and not opaque:
                    raise KeyError(leaf)
                else:
                    node[leaf] = value
            except (KeyError, IndexError, ValueError, TypeError):
                raise PQFLInputError(
                    f"override {clip(dotted)}: no such config field; use a path like federation.rounds"
                ) from None
        return parse_config(data, origin="overrides", schema=type(self))

    def flat(self) -> dict[str, Any]:
        """The config flattened to ``section.field`` keys (clients indexed), for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
                for i, v in enumerate(obj):
                    walk(f"{prefix}.{i}", v)
            else:
                out[prefix] = obj

        walk("", self.model_dump(by_alias=True))
        return out


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = clip(".".join(str(p) for p in first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    if not loc or msg.startswith(f"{loc}."):  # a check across fields; its message names the field
        return msg
    got = first.get("input")
    if first["type"] in ("missing",):
        return f"{loc}: required field is missing; add it to the config"
    if first["type"] == "extra_forbidden":
        return f"{loc}: unknown field; remove it or check its spelling against docs/configuration.md"
    if isinstance(got, (dict, list)) or got is None:
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {clip(repr(got))})"


def parse_config(data: Any, origin: str = "config", schema: type[Config] = Config) -> Config:
    """Validate a mapping into a :class:`Config` (or the subclass ``schema``); raise
    PQFLInputError with field and fix."""
    if not isinstance(data, dict):
        raise PQFLInputError(f"{origin}: expected a YAML mapping at the top level, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise PQFLInputError(f"{origin}: {_describe(err)}") from None


def read_yaml(path: Path) -> Any:
    """The parsed contents of a YAML file; a syntax error raises PQFLInputError with its line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PQFLInputError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise PQFLInputError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PQFLInputError(f"{path}:{where}: YAML syntax error ({problem}); fix the YAML syntax") from None


def load_config(path: str | Path | None = None, schema: type[Config] = Config) -> Config:
    """Load and validate a YAML config (the embedded default when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not os.path.isfile(path):  # unlike Path.is_file, False (not OSError) for a name too long
        raise PQFLInputError(f"config file {clip(path)} not found; pass an existing YAML file with --config")
    return parse_config(read_yaml(path), origin=str(path), schema=schema)

"""Federated methods as strategies: one object per method says who trains, where a
client's local training starts, which proximal pull it trains under, how the server
combines what clients upload, and which model each client is evaluated with.

The round loop (:mod:`pqfl.federated.rounds`) is the same for every method; a new method
is a new :class:`Strategy` subclass. Every quantity is per client on its own block of the
shared tensor (``docs/algorithm.md``): client n holds the block [:l_n, :q_n, :] of the
global (L_max, Q_max, 3) tensor, its encoding and classical head stay local.

| strategy | local training starts from | proximal pull | uploads | evaluated model |
|---|---|---|---|---|
| :class:`Local` | its own v_n | none | nothing | v_n |
| :class:`FedAvg` | the global block w_k | none | its trained block | the new global block |
| :class:`FedProx` | w_k | (μ/2)‖θ − w_k‖² | its trained block | the new global block |
| :class:`PQFL` | its own v_n (kept across rounds) | (λ/2)‖v_n − w_k‖² | v_n | v_n |
| :class:`Centralized` | one pooled model on every client's rows (no privacy) | none | nothing | the pooled model |
| :class:`FedAvgFull` | the global block and the global head | none | its trained block and head | the new global block and head |
| :class:`FedAvgFullFT` | as :class:`FedAvgFull` | none | as :class:`FedAvgFull` | its own fine-tuned block and head |
| :class:`FedDBE` | the global block and w, its own intercept | κ-pull of its mean output to the fleet's | block, head and mean output | the global block and w, its own intercept |
| :class:`FedDistill` | its own v_n and head | κ-weighted distillation to the fleet's mean logits on reference rows | its logits on the reference rows | v_n and its head |
| :class:`FedEnc` | its own v_n and head, the global encoder | none | its trained encoder | v_n, its head and its trained encoder |
| :class:`LocalEnc` | its own v_n, head and encoder | none | nothing | v_n, its head and its encoder |

Every method above keeps the classical head personal except the ``*_full`` ones, which
share the whole model: the server also averages the heads (``[b, w]`` vectors, masked
like the blocks, since a client's head reads its own q_n outputs). On a fleet of identical
circuits, FedAvg with personal heads trails training alone while the full-model average
beats it (``benchmarks/reports/head_sharing.md``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pqfl.federated.aggregation import share_groups
from pqfl.federated.server import ServerRule

if TYPE_CHECKING:  # type hints only: the config and fleet modules import this one
    from pqfl.config import ClientProfile, FederationConfig
    from pqfl.federated.client import ClientSetup, ClientState
    from pqfl.fleet import Fleet


@dataclass(frozen=True)
class Roles:
    """Who does what in a federation: the clients evaluated each round, the trainers (one
    per client, or one pooled trainer serving every client) and each trainer's sharing group."""

    clients: list[ClientSetup]
    trainers: list[ClientSetup]
    groups: list[int]  # sharing group of each trainer: trainers of a group average one tensor
    pooled: bool = False  # one trainer serves every client (else trainer n is client n)

    def __post_init__(self):
        expected = 1 if self.pooled else len(self.clients)
        if len(self.trainers) != expected or len(self.groups) != len(self.trainers):
            raise ValueError(
                f"roles: {len(self.trainers)} trainers and {len(self.groups)} groups for "
                f"{len(self.clients)} clients; expected {expected} of each"
            )

    def trainer_of(self, client: int) -> int:
        return 0 if self.pooled else client


@dataclass(frozen=True)
class FitInstructions:
    """How a trainer runs its local epochs this round: from ``start``, pulled towards
    ``anchor`` with weight ``prox`` (no pull when ``anchor`` is None).

    ``phases``: one pass of ``local_epochs`` per entry, each moving only the parameters it
    names (``"all"``, ``"head"`` with the circuit frozen, ``"circuit"`` with the head frozen).
    ``mix``: APFL's objective, the circuit running α·θ + (1 − α)·anchor with α trained.
    ``upload``: a second fit, from its own ``start``, whose trained block is what the client
    uploads; the client keeps this fit's result (Ditto, APFL). Without it the client uploads
    the block it keeps."""

    start: np.ndarray
    anchor: np.ndarray | None = None
    prox: float = 0.0
    phases: tuple[str, ...] = ("all",)
    mix: bool = False
    upload: FitInstructions | None = None
    head: np.ndarray | None = None  # start from this head, packed [b, w] (``pack_head``), not the state's
    mean_target: np.ndarray | None = None  # FedDBE: the server's mean circuit output the fit is pulled to
    mean_reg: float = 0.0  # FedDBE's κ (0: no pull)
    report_mean: bool = False  # upload the mean circuit output over the training rows after the fit
    reference: np.ndarray | None = None  # distillation: circuit-ready reference rows, scored and uploaded after the fit
    teacher: np.ndarray | None = None  # distillation: the server's mean logit on each reference row
    distill: float = 0.0  # distillation weight κ: the reference rows weigh κ times the batch's own rows
    encoder: np.ndarray | None = None  # fedenc: start the shared encoder's A (d, d) from this, and upload it


def pack_head(w: np.ndarray, b: float) -> np.ndarray:
    """A classical head as one vector [b, w_0, …, w_{q-1}]: the bias first, so heads of
    different lengths average entry by entry like blocks of different shapes."""
    return np.concatenate([[float(b)], np.asarray(w, dtype=np.float64)])


def unpack_head(head: np.ndarray, n_outputs: int) -> tuple[np.ndarray, float]:
    """(w, b) of a client whose head reads ``n_outputs`` outputs, from a packed head at
    least that long (the server's holds the fleet's longest)."""
    return np.array(head[1 : 1 + n_outputs], dtype=np.float64), float(head[0])


@dataclass(frozen=True)
class Strategy:
    """A federated method. Subclasses override the hooks that differ from plain local training."""

    name: ClassVar[str] = "strategy"
    uploads: ClassVar[bool] = False  # whether trainers' blocks are sent to the server each round
    shares_head: ClassVar[bool] = False  # whether the heads are uploaded and averaged too
    shares_mean: ClassVar[bool] = False  # whether clients' mean circuit outputs are uploaded and averaged
    shares_scores: ClassVar[bool] = False  # whether clients' logits on reference rows are uploaded and averaged
    shares_encoder: ClassVar[bool] = False  # whether clients train a shared classical encoder, uploaded and averaged

    def roles(self, fleet: Fleet, federation: FederationConfig) -> Roles:
        """Every client trains its own model; ``federation.share`` sets who shares θ."""
        groups = share_groups([s.profile for s in fleet.clients], federation.share)
        return Roles(fleet.clients, fleet.clients, groups)

    def configure_fit(self, own: np.ndarray, global_block: np.ndarray) -> FitInstructions:
        """Where local training starts and what pulls it, given the trainer's own block and
        its group's global block."""
        return FitInstructions(start=own)

    def aggregate(
        self,
        previous: np.ndarray,
        blocks: list[np.ndarray],
        weights: list[float],
        groups: list[int],
        rule: ServerRule | None = None,
        round_index: int = 0,
    ) -> np.ndarray:
        """The server's new tensors (one per sharing group) from the uploaded blocks, combined
        by ``rule`` (``federation.aggregator`` / ``privacy``); by default the masked average
        weighted by training-set size (HeteroFL-style FedAvg)."""
        return (rule or ServerRule()).combine(previous, blocks, weights, groups, round_index)

    def evaluated(self, own: np.ndarray, global_block: np.ndarray) -> np.ndarray:
        """The block a client is evaluated (and deployed) with."""
        return own

    def evaluated_state(self, state: ClientState, global_block: np.ndarray) -> np.ndarray:
        """``evaluated`` given the trainer's whole state (for a strategy whose evaluated block
        depends on more than its θ, such as APFL's mixing weight)."""
        return self.evaluated(state.theta, global_block)

    def with_head(self, fit: FitInstructions, head: np.ndarray, state: ClientState) -> FitInstructions:
        """``fit`` with the uploaded fit started from the group's global ``head`` (packed);
        called for strategies that share heads, with the trainer's ``state``."""
        if fit.upload is not None:
            return replace(fit, upload=replace(fit.upload, head=head))
        return replace(fit, head=head)

    def with_mean(self, fit: FitInstructions, mean: np.ndarray | None) -> FitInstructions:
        """``fit`` given the group's mean circuit output (None before the first aggregation);
        called for strategies that share means."""
        return fit

    def with_teacher(self, fit: FitInstructions, reference: np.ndarray, teacher: np.ndarray | None) -> FitInstructions:
        """``fit`` given the trainer's reference rows and the server's logits on them (None
        before the first aggregation); called for strategies that share scores."""
        return fit

    def with_encoder(self, fit: FitInstructions, encoder: np.ndarray, state: ClientState) -> FitInstructions:
        """``fit`` given the group's encoder (flattened A) and the trainer's ``state``; called
        for strategies that train encoders: the fit starts from the group's."""
        return replace(fit, encoder=encoder)

    def evaluated_head(self, state: ClientState, global_head: np.ndarray | None) -> ClientState:
        """The state whose head a client is evaluated with: its own by default."""
        return state

    @classmethod
    def from_config(cls, federation: FederationConfig) -> Strategy:
        """The strategy with its weights taken from the federation settings."""
        return cls()


@dataclass(frozen=True)
class Local(Strategy):
    """Each client alone: no server, no sharing (the λ = 0 limit of PQFL)."""

    name: ClassVar[str] = "local"


@dataclass(frozen=True)
class FedAvg(Strategy):
    """Quantum FedAvg (the QFL baseline): every round starts from the global block; the
    global model is what every client is evaluated with."""

    name: ClassVar[str] = "fedavg"
    uploads: ClassVar[bool] = True

    def configure_fit(self, own, global_block):
        return FitInstructions(start=global_block)

    def evaluated(self, own, global_block):
        return global_block


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedAvg whose local objective adds (μ/2)‖θ − w_k‖²."""

    name: ClassVar[str] = "fedprox"
    mu: float = 0.01

    def configure_fit(self, own, global_block):
        return FitInstructions(start=global_block, anchor=global_block, prox=self.mu)

    @classmethod
    def from_config(cls, federation):
        return cls(mu=federation.mu)


@dataclass(frozen=True)
class PQFL(Strategy):
    """The paper's personalized QFL: each client keeps its personal block v_n across rounds,
    trains it under F_n(v_n) + (λ/2)‖v_n − w_k‖², uploads v_n, and is evaluated with v_n.
    λ = 0 is :class:`Local`; a large λ approaches :class:`FedAvg`."""

    name: ClassVar[str] = "pqfl"
    uploads: ClassVar[bool] = True
    lam: float = 0.1

    def configure_fit(self, own, global_block):
        return FitInstructions(start=own, anchor=global_block, prox=self.lam)

    @classmethod
    def from_config(cls, federation):
        return cls(lam=federation.lam)


@dataclass(frozen=True)
class FedAvgFT(FedAvg):
    """FedAvg with local fine-tuning: training runs as FedAvg's (from the global block,
    uploaded and averaged), and each client is evaluated with the block its local epochs
    made of the round's global block — the global model fine-tuned on its own rows."""

    name: ClassVar[str] = "fedavg_ft"

    def evaluated(self, own, global_block):
        return own


@dataclass(frozen=True)
class Ditto(Strategy):
    """Ditto (Li et al. 2021): a global model trained by FedAvg, and a personal model v_n
    trained under F_n(v_n) + (λ/2)‖v_n − w_k‖². Each round a client runs two fits: the
    global block w_k's local epochs (uploaded; their head is dropped, heads stay personal)
    and its personal block's (kept and evaluated). PQFL differs in uploading v_n itself."""

    name: ClassVar[str] = "ditto"
    uploads: ClassVar[bool] = True
    lam: float = 0.1

    def configure_fit(self, own, global_block):
        return FitInstructions(start=own, anchor=global_block, prox=self.lam, upload=FitInstructions(global_block))

    @classmethod
    def from_config(cls, federation):
        return cls(lam=federation.lam)


@dataclass(frozen=True)
class FedRep(Strategy):
    """FedRep (Collins et al. 2021) on circuits: the circuit block is the shared
    representation and the classical head the personal part. Each round a client fits its
    head on the global block (circuit frozen), then the block (head frozen), and uploads the
    block; it is evaluated with the new global block and its own head."""

    name: ClassVar[str] = "fedrep"
    uploads: ClassVar[bool] = True

    def configure_fit(self, own, global_block):
        return FitInstructions(start=global_block, phases=("head", "circuit"))

    def evaluated(self, own, global_block):
        return global_block


@dataclass(frozen=True)
class APFL(Strategy):
    """APFL (Deng et al. 2020) in parameter space: a client's model runs α_n·v_n +
    (1 − α_n)·w on its circuit, α_n learned with v_n and the head on the client's rows
    (kept in [0, 1]). Each round a client also trains the global block w_k as FedAvg does
    and uploads that; it is evaluated with α_n·v_n + (1 − α_n)·w_{k+1}."""

    name: ClassVar[str] = "apfl"
    uploads: ClassVar[bool] = True

    def configure_fit(self, own, global_block):
        return FitInstructions(start=own, anchor=global_block, mix=True, upload=FitInstructions(global_block))

    def evaluated_state(self, state, global_block):
        alpha = 0.5 if state.alpha is None else state.alpha
        return alpha * state.theta + (1.0 - alpha) * global_block


@dataclass(frozen=True)
class FedAvgFull(FedAvg):
    """FedAvg of the whole model: each round a client starts from the global block and the
    global head, trains both, and uploads both; the server averages blocks and heads
    (masked, weighted by training rows); every client is evaluated with the new global
    block and head. Plain FedAvg keeps the head personal, so its average θ is read by heads
    fitted to each client's own pre-average θ."""

    name: ClassVar[str] = "fedavg_full"
    shares_head: ClassVar[bool] = True

    def evaluated_head(self, state, global_head):
        w, b = unpack_head(global_head, len(state.w))
        return replace(state, w=w, b=b)


@dataclass(frozen=True)
class FedAvgFullFT(FedAvgFull):
    """:class:`FedAvgFull` with local fine-tuning: trained as it, and each client is
    evaluated with the block and head its local epochs made of the round's global model."""

    name: ClassVar[str] = "fedavg_full_ft"

    def evaluated(self, own, global_block):
        return own

    def evaluated_head(self, state, global_head):
        return state


@dataclass(frozen=True)
class FedDBE(FedAvgFull):
    """FedDBE (Zhang et al. 2023) on circuits: FedAvg of the whole model, a personal bias
    β_n on the representation (the circuit's outputs z) and mean regularisation (MR).

    - PRBM: the head reads z + β_n. With the head shared, w·(z + β_n) + b = w·z + (b + w·β_n):
      the personal bias is a personal intercept, so it is kept as one — each client trains
      and is evaluated with the global block and global w, and its own b.
    - MR: from round 2 on, local training adds κ · mean_i ½(z̄_i − z̄ᵍ_i)², z̄ the minibatch's
      mean output and z̄ᵍ the server's average (weighted by training rows, masked by output
      count) of the clients' mean outputs over their training rows, each uploaded after its
      fit. Round 1 trains without it, as FedDBE's initialisation round does. FedDBE keeps a
      momentum average of z̄ over minibatches; here it is each minibatch's own mean.
    """

    name: ClassVar[str] = "feddbe"
    shares_mean: ClassVar[bool] = True
    kappa: float = 1.0

    def with_head(self, fit, head, state):
        return replace(fit, head=np.concatenate([[state.b], head[1:]]))

    def with_mean(self, fit, mean):
        if mean is None:
            return replace(fit, report_mean=True)
        return replace(fit, mean_target=mean, mean_reg=self.kappa, report_mean=True)

    def evaluated_head(self, state, global_head):
        w, _ = unpack_head(global_head, len(state.w))
        return replace(state, w=w)


@dataclass(frozen=True)
class FedDistill(Strategy):
    """Federated distillation: clients share scores, not parameters. Each client keeps its
    own circuit and head (trained as :class:`Local` does) and, every round, scores a common
    reference set and uploads the logits; the server averages them (weighted by training
    rows). From round 2 a client's local training adds the reference rows to every
    minibatch with the ensemble's soft labels σ(mean logit), weighing κ times the batch's
    own rows: the binary cross-entropy to the ensemble's probabilities (knowledge
    distillation as in FedMD / FedDF). The reference rows are ``n_reference`` draws from
    the Gaussian with the federated mean and covariance the preprocessing already builds
    from summed statistics (:func:`reference_rows`), mapped by each client's own feature
    map: no client's rows leave it, and any circuit can score them, whatever its encoding.
    """

    name: ClassVar[str] = "feddistill"
    uploads: ClassVar[bool] = True
    shares_scores: ClassVar[bool] = True
    kappa: float = 1.0
    n_reference: int = 64

    def aggregate(self, previous, blocks, weights, groups, rule=None, round_index=0):
        return previous  # no parameters are shared: the server keeps only the mean logits

    def with_teacher(self, fit, reference, teacher):
        if teacher is None:
            return replace(fit, reference=reference)
        return replace(fit, reference=reference, teacher=teacher, distill=self.kappa)


@dataclass(frozen=True)
class FedEnc(Strategy):
    """Personal circuits, shared data representation: the inverse of FedRep's split. What is
    bound to a client's hardware — its circuit (encoding, qubit count, noise) and the head
    reading it — stays personal and is trained as :class:`Local` trains it; what is bound to
    the data is shared: a learnable linear encoder z ↦ z + A z / d on the federated
    standardised features z (every client standardises with the same summed statistics),
    upstream of each client's fixed feature map (PCA, whitening, anchor; ``encoder_adjust``).

    Each round a client starts its encoder from the global A (zero, the identity, in round
    1), trains it with its own θ and head, and uploads it; the server averages the A's
    (weighted by training rows). A client is evaluated with the encoder it trained with its
    θ and head: evaluated with the new average instead, its head would read a representation
    it was not fitted to, which is what breaks FedAvg with personal heads
    (``benchmarks/reports/head_sharing.md``). A 4-qubit angle client reads 4 directions of
    z'; through A those can become any mix of the features that the fleet found useful.
    """

    name: ClassVar[str] = "fedenc"
    uploads: ClassVar[bool] = True
    shares_encoder: ClassVar[bool] = True

    def roles(self, fleet, federation):
        groups = share_groups([s.profile for s in fleet.clients], federation.share)
        setups = [encoder_setup(s, d) for s, d in zip(fleet.clients, fleet.datas)]
        return Roles(setups, setups, groups)

    def aggregate(self, previous, blocks, weights, groups, rule=None, round_index=0):
        return previous  # θ stays personal: the server keeps only the encoders


@dataclass(frozen=True)
class LocalEnc(FedEnc):
    """The control for :class:`FedEnc`: the same model, encoder included, trained by each
    client alone (its encoder kept across rounds, nothing uploaded). What ``fedenc`` gains
    over it is what sharing the encoder gives; what it gains over ``local``, the encoder's."""

    name: ClassVar[str] = "local_enc"
    uploads: ClassVar[bool] = False

    def with_encoder(self, fit, encoder, state):
        return replace(fit, encoder=state.enc.ravel())


def encoder_setup(setup: ClientSetup, data) -> ClientSetup:
    """A client's setup for a shared encoder: each split's rows as the feature map's
    ``pre_squash`` input followed by the standardised features (``pqfl.model.encoded_inputs``)."""
    fmap = setup.feature_map

    def rows(X):
        return np.concatenate([fmap.pre_squash(X), fmap.standardised(X)], axis=1)

    return replace(
        setup,
        X_train=rows(data.X_train),
        X_val=rows(data.X_val),
        X_test=rows(data.X_test),
        encoder_map=fmap.linear_part(),
    )


def reference_rows(stats, n: int, seed: int) -> np.ndarray:
    """``n`` raw feature rows drawn from N(mean, Σ), the federated mean and covariance
    (``GlobalStats``: the standardised eigenbasis and the scale), seeded by ``seed``."""
    from pqfl.rng import derive_rng

    eps = derive_rng(seed, "distill-reference").standard_normal((n, len(stats.eigvals)))
    z = (eps * np.sqrt(np.clip(stats.eigvals, 0.0, None))) @ stats.eigvecs.T
    return stats.mean + z * stats.scale


@dataclass(frozen=True)
class Centralized(Local):
    """One model trained on every client's training rows pooled (an upper reference with no
    privacy), scored at each client. Its circuit is noiseless, as large as the fleet's
    largest, with the fleet's commonest encoding."""

    name: ClassVar[str] = "centralized"

    def roles(self, fleet, federation):
        return Roles(*self.pooled_setup(fleet), [0], pooled=True)

    @staticmethod
    def profile(profiles: list[ClientProfile]) -> ClientProfile:
        """The pooled model's circuit: noiseless, the fleet's largest size, its commonest encoding."""
        from pqfl.config import ClientProfile

        encoding = Counter(c.encoding for c in profiles).most_common(1)[0][0]
        qubits, layers = max(c.qubits for c in profiles), max(c.layers for c in profiles)
        return ClientProfile(name="centralized", qubits=qubits, layers=layers, encoding=encoding)

    def pooled_setup(self, fleet: Fleet) -> tuple[list[ClientSetup], list[ClientSetup]]:
        """The per-client evaluation views of the pooled model, and its one trainer on the
        pooled training rows (the fleet's feature maps refitted to its circuit)."""
        from pqfl.data.partition import ClientData
        from pqfl.fleet import client_setup

        datas, n = fleet.datas, len(fleet.datas)
        profile = self.profile([s.profile for s in fleet.clients])
        splits = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")
        pooled = ClientData("centralized", *(np.concatenate([getattr(d, k) for d in datas]) for k in splits))
        trainer = client_setup(n, profile, fleet.stats, pooled, fleet.dataset)
        views = [
            client_setup(n, profile.model_copy(update={"name": d.name}), fleet.stats, d, fleet.dataset) for d in datas
        ]
        return views, [trainer]


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s
    for s in (
        Local,
        FedAvg,
        FedProx,
        PQFL,
        Centralized,
        FedAvgFT,
        Ditto,
        FedRep,
        APFL,
        FedAvgFull,
        FedAvgFullFT,
        FedDBE,
        FedDistill,
        FedEnc,
        LocalEnc,
    )
}


def strategy_for(method: str | Strategy, federation: FederationConfig) -> Strategy:
    """The strategy a method name stands for, with its weights from ``federation``; a
    :class:`Strategy` instance is returned as is."""
    if isinstance(method, Strategy):
        return method
    try:
        return STRATEGIES[method].from_config(federation)
    except KeyError:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(STRATEGIES)} or pass a Strategy") from None

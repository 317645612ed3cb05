"""The round loop every federated method shares; a :class:`~pqfl.federated.strategies.Strategy`
says what differs between methods.

Each round k: sample the round's trainers (``federation.client_fraction``), fan out their
local training (``map_fn``), drop the trainers whose job failed (their state is kept) and
fail the run below the quorum ``federation.min_clients``, let the server aggregate what
the survivors upload, then evaluate every client's model on its own splits.

``federation.restarts`` R runs R independent federations side by side: trainer t of
restart r is virtual trainer r·T + t, with its own random streams, initial tensor and
sharing groups, and each client's detector is the ensemble of its R models.

Every job goes through ``map_fn(run_fn, jobs)`` (:mod:`pqfl.federated.jobs`), so an
orchestrator can run, retry and display each one as a task. The loop accepts what
``map_fn`` returns as values or as futures (anything with ``.result()``); a job that fails
raises when its result is read, and may carry ``retries`` (how many retries were spent on it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from pqfl.config import FederationConfig
from pqfl.errors import PQFLRunError
from pqfl.federated.aggregation import block_of
from pqfl.federated.attacks import attacker_indices, poison_fleet, poisoned_upload
from pqfl.federated.client import ClientSetup, ClientState, init_state, replicas
from pqfl.federated.jobs import AggregateJob, EvalJob, TrainJob, aggregate_uploads, evaluate_client, train_client
from pqfl.federated.server import ServerRule, init_shared, replica_groups, sample_clients
from pqfl.federated.strategies import Strategy, pack_head, reference_rows, strategy_for
from pqfl.fleet import Fleet
from pqfl.privacy.dp import epsilon_spent, local_noise
from pqfl.results import ClientEvaluation, ClientRound, DroppedClient, RoundReport, RoundSummary
from pqfl.rng import derive_rng

log = logging.getLogger("pqfl.progress")

Member = tuple[ClientState, np.ndarray]  # a trainer's state and the block a client is evaluated with


@dataclass(frozen=True)
class ClientBest:
    """A client's kept model under ``federation.select: best_val``: the round with its highest
    validation AUROC so far, that round's evaluation and the members it was evaluated with."""

    round: int
    evaluation: ClientEvaluation
    members: list[Member]


def _val(ev: ClientEvaluation) -> float:
    return ev.val_auroc if np.isfinite(ev.val_auroc) else -np.inf


@dataclass(frozen=True)
class FederationState:
    """Everything that carries over from one round to the next (round 0 = just started):
    the server's tensors, every virtual trainer's state, the history so far, and the last
    round's report. Nothing random is carried: every draw derives from (seed, stream,
    client, round), so a run resumed from a state continues exactly as it would have."""

    round: int
    global_theta: np.ndarray  # (restarts · sharing groups, L_max, Q_max, 3)
    states: list[ClientState]  # per virtual trainer r·T + t
    history: list[RoundSummary] = field(default_factory=list)
    retries_total: int = 0
    dropped: list[DroppedClient] = field(default_factory=list)
    last: RoundReport | None = None
    best: list[ClientBest] = field(default_factory=list)  # per client, with select: best_val
    global_head: np.ndarray | None = None  # (restarts · groups, 1 + outputs_max), strategies sharing heads
    global_mean: np.ndarray | None = None  # (restarts · groups, outputs_max), strategies sharing mean outputs
    global_scores: np.ndarray | None = None  # (restarts · groups, reference rows), strategies sharing scores
    global_encoder: np.ndarray | None = None  # (restarts · groups, d·d), strategies sharing an encoder


@dataclass(frozen=True)
class FederationResult:
    """A finished federation: the final state and, per client, its detector's members —
    from the last round, or from the client's best validation round (``select: best_val``),
    whose evaluations and summary are then the result's."""

    strategy: str
    clients: list[ClientSetup]
    state: FederationState
    members: list[list[Member]]  # per client, one (state, θ) per restart
    attackers: tuple[str, ...] = ()  # the attacking clients (federation.attack)

    @property
    def honest_summary(self) -> RoundSummary:
        """``summary`` over the honest clients only (all of them without an attack)."""
        honest = [e for e in self.evaluations if e.client not in self.attackers]
        return RoundSummary.of(self.state.round, honest)

    @property
    def history(self) -> list[RoundSummary]:
        """One summary per round trained (the rounds' own models, whichever are kept)."""
        return self.state.history

    @property
    def evaluations(self) -> list[ClientEvaluation]:
        if self.state.best:
            return [b.evaluation for b in self.state.best]
        return self.state.last.evaluations if self.state.last else []

    @property
    def summary(self) -> RoundSummary:
        """The kept models' summary (round = the last round trained)."""
        if self.state.best:
            return RoundSummary.of(self.state.round, self.evaluations)
        return self.state.history[-1]

    @property
    def selected_rounds(self) -> list[int]:
        """Per client, the round whose model it keeps."""
        return [b.round for b in self.state.best] if self.state.best else [self.state.round] * len(self.clients)


class BelowQuorum(PQFLRunError):
    """Fewer trainers than ``federation.min_clients`` finished a round's local training."""

    def __init__(self, message: str, round_index: int, dropped: list[DroppedClient]):
        super().__init__(message)
        self.round, self.dropped = round_index, dropped


class EvaluationFailed(PQFLRunError):
    """A client's evaluation job failed; the state after the previous round is intact."""

    def __init__(self, message: str, round_index: int):
        super().__init__(message)
        self.round = round_index


@dataclass(frozen=True)
class _Failed:
    error: Exception
    retries: int


def _gather(results: Iterable, n: int) -> list:
    """The n results of a ``map_fn`` call, each a value or a :class:`_Failed`."""
    it, out = iter(results), []
    for _ in range(n):
        try:
            value = next(it)
            out.append(value.result() if callable(getattr(value, "result", None)) else value)
        except StopIteration:
            raise ValueError(f"map_fn returned {len(out)} results for {n} jobs; it must return one per job") from None
        except Exception as err:  # the job failed: its trainer is dropped from the round
            out.append(_Failed(err, int(getattr(err, "retries", 0))))
    return out


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]


class Federation:
    """A federation of a fleet under one strategy: who trains, who is evaluated, and the rounds.

    ``run`` trains ``federation.rounds`` rounds (from ``resume``, a :class:`FederationState`,
    when given) and returns a :class:`FederationResult`; ``on_round(state)`` is called after
    every round, with ``state.last`` the round's :class:`~pqfl.results.RoundReport`. With
    ``evaluate=False`` rounds only train (no validation or test splits are needed): the
    history stays empty and reports carry no summary.
    """

    def __init__(
        self, fleet: Fleet, strategy: str | Strategy, federation: FederationConfig, *, simulator: str = "fast"
    ):
        self.strategy = strategy_for(strategy, federation)
        self.federation, self.simulator = federation, simulator
        self.attackers = attacker_indices(len(fleet.clients), federation.attack, federation.seed)
        fleet = poison_fleet(fleet, self.attackers, federation.attack.kind)
        self.rule = ServerRule.from_config(federation, len(self.attackers))
        s = self.strategy
        extras = s.shares_head or s.shares_mean or s.shares_scores or s.shares_encoder
        if extras and self.rule.dp:
            raise ValueError(
                f"federation.privacy: {self.strategy.name} uploads more than one block per round (heads, mean "
                "outputs, scores or encoders), and the DP accounting covers the blocks only; use a method that "
                "uploads blocks alone (fedavg, pqfl, ditto, ...)"
            )
        if extras and self.attackers and federation.attack.kind != "label_flip":
            raise ValueError(
                f"federation.attack: {federation.attack.kind} poisons the uploaded blocks, and {s.name} also "
                "shares heads, mean outputs, scores or encoders that the attack leaves honest; use kind: "
                "label_flip, or a method that uploads blocks alone (fedavg, pqfl, ditto, ...)"
            )
        if s.shares_encoder and federation.head_fit == "logreg":
            raise ValueError(
                f"federation.head_fit: {s.name} trains the head with its encoder, and a refitted head would "
                "read the circuit without it; use head_fit: sgd"
            )
        if (s.shares_mean or s.shares_scores or s.shares_encoder) and federation.objective != "supervised":
            raise ValueError(
                f"federation.objective: {self.strategy.name} works on the supervised model's logits and outputs; "
                "use objective: supervised, or fedavg_full for one_class"
            )
        self.roles = self.strategy.roles(fleet, federation)
        self.trainers = replicas(self.roles.trainers, federation.restarts)
        self.groups = replica_groups(self.roles.groups, federation.restarts)
        self.reference: list[np.ndarray] = []
        if self.strategy.shares_scores:  # one reference set for the fleet, in each trainer's own input space
            raw = reference_rows(fleet.stats, self.strategy.n_reference, federation.seed)
            self.reference = [s.feature_map.transform(raw) for s in self.trainers]

    @property
    def clients(self) -> list[ClientSetup]:
        """The clients evaluated every round, in fleet order."""
        return self.roles.clients

    @property
    def attacker_names(self) -> tuple[str, ...]:
        """The attacking clients' names (``federation.attack``), in fleet order."""
        return tuple(self.clients[n].name for n in self.attackers)

    def initial_state(self) -> FederationState:
        """Round 0: the server's initial tensors and every trainer starting from its block
        with a small seeded head."""
        fed, base = self.federation, self.roles.trainers
        layers, qubits = max(s.spec.layers for s in base), max(s.spec.qubits for s in base)
        G = init_shared(layers, qubits, fed.seed, fed.init_scale, self.roles.groups, fed.restarts)
        states = [init_state(s, self._block(G, j), fed.seed) for j, s in enumerate(self.trainers)]
        H = None
        if self.strategy.shares_head:  # one model per group: every member starts from its group's head
            width = self._outputs_max
            H = np.stack(
                [
                    pack_head(derive_rng(fed.seed, "head", "global", g).normal(0.0, 0.1, width), 0.0)
                    for g in range(len(G))
                ]
            )
            states = [replace(st, w=H[self.groups[j], 1 : 1 + len(st.w)].copy(), b=0.0) for j, st in enumerate(states)]
        E = None
        if self.strategy.shares_encoder:  # every encoder starts as the identity: A = 0
            E = np.zeros((len(G), self._encoder_width))
            states = [replace(st, enc=np.zeros(self._encoder_shape)) for st in states]
        return FederationState(round=0, global_theta=G, states=states, global_head=H, global_encoder=E)

    def run(
        self,
        *,
        map_fn: Callable = map,
        on_round: Callable[[FederationState], None] | None = None,
        resume: FederationState | None = None,
        evaluate: bool = True,
    ) -> FederationResult:
        state = self.initial_state() if resume is None else self.check_state(resume)
        for k in range(state.round + 1, self.federation.rounds + 1):
            state = self._round(state, k, map_fn, evaluate)
            if on_round is not None:
                on_round(state)
        members = [b.members for b in state.best] if state.best else self.members(state)
        return FederationResult(self.strategy.name, self.clients, state, members, self.attacker_names)

    def check_state(self, state: FederationState) -> FederationState:
        """``state`` if it fits this federation (trainers, block and head shapes, server
        tensors, round); ValueError naming what does not, so a foreign state never trains."""

        def refuse(what: str) -> None:
            raise ValueError(f"resume: {what}; resume with the config that wrote the state")

        if len(state.states) != len(self.trainers):
            refuse(f"the state holds {len(state.states)} trainers, this federation has {len(self.trainers)}")
        for s, st in zip(self.trainers, state.states):
            want = (s.spec.layers, s.spec.qubits, 3)
            if np.shape(st.theta) != want or np.shape(st.w) != (s.spec.n_outputs,):
                refuse(
                    f"trainer {s.name} has θ {np.shape(st.theta)} and head {np.shape(st.w)}, its circuit needs "
                    f"{want} and ({s.spec.n_outputs},)"
                )
            if st.center is not None and np.shape(st.center) != (s.spec.n_outputs,):
                refuse(f"trainer {s.name} has a one-class centre of shape {np.shape(st.center)}")
        base = self.roles.trainers
        groups = (max(self.roles.groups, default=0) + 1) * self.federation.restarts
        want = (groups, max(s.spec.layers for s in base), max(s.spec.qubits for s in base), 3)
        if np.shape(state.global_theta) != want:
            refuse(f"the server tensors have shape {np.shape(state.global_theta)}, this federation's are {want}")
        if self.strategy.shares_head:
            want = (groups, 1 + self._outputs_max)
            if np.shape(state.global_head) != want:
                refuse(f"the server heads have shape {np.shape(state.global_head)}, this federation's are {want}")
        if state.global_scores is not None:
            want = (groups, len(self.reference[0]) if self.reference else 0)
            if not self.strategy.shares_scores or np.shape(state.global_scores) != want:
                refuse(f"the server scores have shape {np.shape(state.global_scores)}, this federation's are {want}")
        if self.strategy.shares_encoder or state.global_encoder is not None:
            want = (groups, self._encoder_width if self.strategy.shares_encoder else 0)
            if not self.strategy.shares_encoder or np.shape(state.global_encoder) != want:
                refuse(f"the server encoders have shape {np.shape(state.global_encoder)}, this federation's are {want}")
            for s, st in zip(self.trainers, state.states):
                if np.shape(st.enc) != self._encoder_shape:
                    refuse(f"trainer {s.name} has an encoder of shape {np.shape(st.enc)}, not {self._encoder_shape}")
        if state.global_mean is not None:
            want = (groups, self._outputs_max)
            if not self.strategy.shares_mean or np.shape(state.global_mean) != want:
                refuse(
                    f"the server mean outputs have shape {np.shape(state.global_mean)}, this federation's are {want}"
                )
        if not 0 <= state.round <= self.federation.rounds:
            refuse(f"round {state.round} is outside 0..{self.federation.rounds}")
        if state.last is not None and state.last.clients and len(state.last.clients) != len(self.clients):
            refuse(f"the last round reports {len(state.last.clients)} clients, this federation has {len(self.clients)}")
        if state.best and (self.federation.select != "best_val" or len(state.best) != len(self.clients)):
            refuse(f"the state keeps best-validation models of {len(state.best)} clients")
        for b in state.best:
            if len(b.members) != self.federation.restarts or not 0 < b.round <= state.round:
                refuse(f"a kept model has {len(b.members)} members from round {b.round}")
        return state

    def members(self, state: FederationState) -> list[list[Member]]:
        """Per client, the (state, θ) of each restart's model it is evaluated with."""
        return self._members(state.states, state.global_theta, state.global_head)

    def _members(self, states: list[ClientState], G: np.ndarray, H: np.ndarray | None = None) -> list[list[Member]]:
        T, strategy = len(self.roles.trainers), self.strategy
        out = []
        for n in range(len(self.clients)):
            ids = [self.roles.trainer_of(n) + r * T for r in range(self.federation.restarts)]
            out.append(
                [
                    (
                        strategy.evaluated_head(states[j], None if H is None else H[self.groups[j]]),
                        strategy.evaluated_state(states[j], self._block(G, j)),
                    )
                    for j in ids
                ]
            )
        return out

    def _block(self, G: np.ndarray, j: int) -> np.ndarray:
        spec = self.trainers[j].spec
        return block_of(G[self.groups[j]], spec.layers, spec.qubits)

    def _round(self, state: FederationState, k: int, map_fn: Callable, evaluate: bool) -> FederationState:
        started = time.perf_counter()
        T = len(self.roles.trainers)
        sampled = sample_clients(
            T, self.federation.client_fraction, self.federation.min_clients, self.federation.seed, k
        )
        participants = [t + r * T for r in range(self.federation.restarts) for t in sampled]
        states, losses, retries, failed, uploads, extras = self._train(state, participants, k, map_fn)
        heads, means, scores, encoders = extras
        survivors = [i for i in participants if i not in failed]
        G, H, M, S, E = (
            state.global_theta,
            state.global_head,
            state.global_mean,
            state.global_scores,
            state.global_encoder,
        )
        if self.strategy.uploads:  # join: the server combines what the survivors upload
            job = AggregateJob(
                self.strategy,
                G,
                self._uploads(states, uploads, G, survivors, k),
                [float(self.trainers[i].n_train) for i in survivors],
                [self.groups[i] for i in survivors],
                k,
                self.rule,
                H,
                [heads[i] for i in survivors] if self.strategy.shares_head else None,
                self._previous(M, G, self.strategy.shares_mean, self._outputs_max),
                [means[i] for i in survivors] if self.strategy.shares_mean else None,
                self._previous(S, G, self.strategy.shares_scores, self._reference_width),
                [scores[i] for i in survivors] if self.strategy.shares_scores else None,
                E,
                [encoders[i] for i in survivors] if self.strategy.shares_encoder else None,
            )
            (out,) = _gather(map_fn(aggregate_uploads, [job]), 1)
            if isinstance(out, _Failed):
                raise out.error
            G, H, M, S, E = out if isinstance(out, tuple) else (out, H, M, S, E)
        trained = time.perf_counter()
        members = self._members(states, G, H) if evaluate else []
        evaluations = self._evaluate(members, k, map_fn) if evaluate else []
        report = self._report(k, evaluations, losses, retries, failed, survivors, started)
        report = replace(
            report,
            train_s=trained - started,
            evaluate_s=time.perf_counter() - trained,
            attackers=self.attacker_names,
            epsilon=self.epsilon(k),
        )
        history = [*state.history, report.summary] if evaluate else state.history
        best = self._best(state.best, evaluations, members, k) if evaluate else state.best
        return FederationState(
            k,
            G,
            states,
            history,
            state.retries_total + report.retries,
            [*state.dropped, *report.dropped],
            report,
            best,
            H,
            M,
            S,
            E,
        )

    def _uploads(
        self, states: list[ClientState], uploads: dict, G: np.ndarray, survivors: list[int], k: int
    ) -> list[np.ndarray]:
        """What each surviving trainer sends the server: its trained block (or the block its
        strategy's upload fit trained), an attacker's poisoned block (``federation.attack``),
        or under ``privacy.noise: local`` an honest client's clipped, noised update on its
        global block."""
        fed, T = self.federation, len(self.roles.trainers)
        out = []
        for i in survivors:
            theta = states[i].theta if uploads[i] is None else uploads[i]
            block = self._block(G, i)
            stream = self.trainers[i].stream_id
            if not self.roles.pooled and i % T in self.attackers:
                uploaders = sum(1 for j in survivors if self.groups[j] == self.groups[i])
                rng = derive_rng(fed.seed, "attack", *stream, k)
                theta = poisoned_upload(fed.attack, theta, block, uploaders, rng)
            elif fed.privacy is not None and fed.privacy.noise == "local":
                rng = derive_rng(fed.seed, "dp-local", *stream, k)
                theta = local_noise(
                    theta, block, fed.privacy.clip, fed.privacy.noise_multiplier * fed.privacy.clip, rng
                )
            out.append(theta)
        return out

    def epsilon(self, rounds: int) -> float | None:
        """The ε of (ε, ``privacy.delta``)-DP spent after ``rounds`` rounds (pqfl.privacy.dp),
        None without ``federation.privacy`` or when the strategy uploads nothing. With R
        ``restarts`` a client's rows feed R federations, so R releases compose per round."""
        dp, fed = self.federation.privacy, self.federation
        if dp is None or not self.strategy.uploads:
            return None
        T = len(self.roles.trainers)
        rate = len(sample_clients(T, fed.client_fraction, fed.min_clients, fed.seed, 1)) / T
        return epsilon_spent(dp.noise_multiplier, rounds * fed.restarts, dp.delta, rate)

    def _best(self, best, evaluations, members, k) -> list[ClientBest]:
        """Each client's kept model after round k (``select: best_val``): this round's when its
        validation AUROC beats the kept one's. Only validation scores are compared."""
        if self.federation.select != "best_val":
            return []
        if not best:
            return [ClientBest(k, ev, m) for ev, m in zip(evaluations, members)]
        return [
            ClientBest(k, ev, m) if _val(ev) > _val(b.evaluation) else b for b, ev, m in zip(best, evaluations, members)
        ]

    def _train(self, state: FederationState, participants: list[int], k: int, map_fn: Callable):
        """Fan-out: the participants' local training. Returns the new states, losses, retries,
        the failed trainers' errors, the upload fits' blocks, and (heads, mean outputs,
        reference scores) uploaded, each by trainer; fails the run below quorum."""
        fed, T, R = self.federation, len(self.roles.trainers), self.federation.restarts
        jobs = []
        for i in participants:
            fit = self.strategy.configure_fit(state.states[i].theta, self._block(state.global_theta, i))
            if self.strategy.shares_head:
                fit = self.strategy.with_head(fit, state.global_head[self.groups[i]], state.states[i])
            if self.strategy.shares_mean:
                M = state.global_mean
                fit = self.strategy.with_mean(
                    fit, None if M is None else M[self.groups[i], : self.trainers[i].spec.n_outputs]
                )
            if self.strategy.shares_scores:
                S = state.global_scores
                fit = self.strategy.with_teacher(fit, self.reference[i], None if S is None else S[self.groups[i]])
            if self.strategy.shares_encoder:
                fit = self.strategy.with_encoder(fit, state.global_encoder[self.groups[i]], state.states[i])
            jobs.append(TrainJob(self.trainers[i], state.states[i], fit, fed, self.simulator, k))
        states, losses, retries, failed = list(state.states), {}, {}, {}
        uploads, heads, means, scores, encoders = {}, {}, {}, {}, {}
        for i, out in zip(participants, _gather(map_fn(train_client, jobs), len(jobs))):
            retries[i] = out.retries
            if isinstance(out, _Failed):
                failed[i] = out.error
            else:
                states[i], losses[i], uploads[i], heads[i] = out.state, out.loss, out.upload, out.upload_head
                means[i], scores[i], encoders[i] = out.upload_mean, out.upload_scores, out.upload_encoder
        survivors = len(participants) - len(failed)
        for i, err in failed.items():
            log.warning(
                "%-11s round %2d/%d  client %s dropped after %d retries (%s); %d of %d clients remain",
                self.strategy.name,
                k,
                fed.rounds,
                self._label(i),
                retries[i],
                _reason(err),
                survivors,
                len(participants),
            )
        quorum = min(fed.min_clients, T)
        done = min(sum(1 for i in participants if i not in failed and i // T == r) for r in range(R))  # worst restart
        if done < quorum:
            reasons = "; ".join(f"{self.trainers[i].name}: {_reason(e)}" for i, e in failed.items())
            raise BelowQuorum(
                f"{self.strategy.name} round {k}: only {done} of {len(participants) // R} clients "
                f"finished local training ({reasons}), below the quorum federation.min_clients = {quorum}",
                k,
                self._dropped(failed, k),
            )
        return states, losses, retries, failed, uploads, (heads, means, scores, encoders)

    @property
    def _outputs_max(self) -> int:
        """The most outputs any trainer's head reads: the width of the server's heads and means."""
        return max(s.spec.n_outputs for s in self.roles.trainers)

    @property
    def _encoder_shape(self) -> tuple[int, int]:
        """The shared encoder's A: (d, d), d the raw feature count every client standardises."""
        d = len(self.roles.trainers[0].feature_map.mean)
        return d, d

    @property
    def _encoder_width(self) -> int:
        return int(np.prod(self._encoder_shape))

    @property
    def _reference_width(self) -> int:
        return len(self.reference[0]) if self.reference else 0

    @staticmethod
    def _previous(current: np.ndarray | None, G: np.ndarray, shared: bool, width: int) -> np.ndarray | None:
        """A server extra (mean outputs, scores) before this round's join: zeros before the first."""
        if not shared:
            return None
        return np.zeros((len(G), width)) if current is None else current

    def _evaluate(self, members: list[list[Member]], k: int, map_fn: Callable) -> list[ClientEvaluation]:
        """Every client's model (its members), scored on its own splits."""
        jobs = [EvalJob(c, m, self.federation, self.simulator, k) for c, m in zip(self.clients, members)]
        evaluations = []
        for c, out in zip(self.clients, _gather(map_fn(evaluate_client, jobs), len(jobs))):
            if isinstance(out, _Failed):
                raise EvaluationFailed(
                    f"{self.strategy.name} round {k}: evaluating client {c.name} failed ({_reason(out.error)})", k
                ) from out.error
            evaluations.append(out)
        return evaluations

    def _report(self, k, evaluations, losses, retries, failed, survivors, started) -> RoundReport:
        """Each client's row: its trainer's loss (the mean over restarts) and retries (their
        sum, plus its evaluation's); a pooled trainer's retries and drops are the run's, not a client's."""
        roles, T = self.roles, len(self.roles.trainers)
        loss = {t: float(np.mean([v for i, v in losses.items() if i % T == t])) for t in {i % T for i in losses}}
        trained = {t: sum(v for i, v in retries.items() if i % T == t) for t in {i % T for i in retries}}
        failed_trainers = {i % T for i in failed}
        rows = []
        for n, ev in enumerate(evaluations):
            t = roles.trainer_of(n)
            own = 0 if roles.pooled else trained.get(t, 0)
            rows.append(ClientRound(ev, loss.get(t), own + ev.retries, not roles.pooled and t in failed_trainers))
        in_round = min(
            sum(1 for n in range(len(self.clients)) if roles.trainer_of(n) + r * T in survivors)
            for r in range(self.federation.restarts)
        )
        total = sum(retries.values()) + sum(ev.retries for ev in evaluations)
        summary = RoundSummary.of(k, evaluations) if evaluations else None
        return RoundReport(k, summary, rows, in_round, self._dropped(failed, k), total, time.perf_counter() - started)

    def _label(self, i: int) -> str:
        s = self.trainers[i]
        return s.name + (f" (restart {s.replica})" if s.replica else "")

    def _dropped(self, failed: dict[int, Exception], k: int) -> list[DroppedClient]:
        return [DroppedClient(k, self._label(i), _reason(err)) for i, err in failed.items()]


def run_federation(
    fleet: Fleet,
    strategy: str | Strategy,
    federation: FederationConfig,
    *,
    simulator: str = "fast",
    map_fn: Callable = map,
    on_round: Callable[[FederationState], None] | None = None,
    resume: FederationState | None = None,
) -> FederationResult:
    """Train ``fleet`` under ``strategy`` (a method name or a :class:`Strategy`) for
    ``federation.rounds`` rounds; see :class:`Federation`."""
    return Federation(fleet, strategy, federation, simulator=simulator).run(
        map_fn=map_fn, on_round=on_round, resume=resume
    )

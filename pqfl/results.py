"""Typed results: a client's evaluation, its row of a round, a round's summary and report.

Metric names live in :data:`pqfl.metrics.METRIC_NAMES` and in the fields below, nowhere
else; ``asdict``-style helpers give the plain mappings that MLflow, CSV and JSON need.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from pqfl.metrics import METRIC_NAMES, summarize


@dataclass(frozen=True)
class ClientEvaluation:
    """One client's detector on its own splits: the threshold chosen on validation, the
    validation AUROC, and the test metrics at that threshold (``pqfl.metrics``)."""

    client: str
    threshold: float
    val_auroc: float
    auroc: float
    aupr: float
    false_error: float
    missing_error: float
    f1: float
    test_scores: np.ndarray = field(repr=False, compare=False)
    retries: int = 0  # retries an orchestrator spent on this evaluation job

    def metrics(self) -> dict[str, float]:
        """The test metrics by name."""
        return {m: getattr(self, m) for m in METRIC_NAMES}

    def row(self) -> dict[str, float | str]:
        """The evaluation as a table row: client, threshold, validation AUROC and test metrics."""
        return {"client": self.client, "threshold": self.threshold, "val_auroc": self.val_auroc, **self.metrics()}


@dataclass(frozen=True)
class ClientRound:
    """A client's row of one round: its evaluation, the loss of the training behind its
    model (None when nothing was trained for it this round), retries and whether it was dropped."""

    evaluation: ClientEvaluation
    loss: float | None
    retries: int
    dropped: bool

    @property
    def client(self) -> str:
        return self.evaluation.client


@dataclass(frozen=True)
class RoundSummary:
    """Mean over clients of every test metric, the worst client's AUROC and the mean
    validation AUROC (for model selection) after one round."""

    round: int
    mean_auroc: float
    mean_aupr: float
    mean_false_error: float
    mean_missing_error: float
    mean_f1: float
    worst_auroc: float
    mean_val_auroc: float

    @classmethod
    def of(cls, round_index: int, evaluations: list[ClientEvaluation]) -> RoundSummary:
        return cls(round=round_index, **summarize([e.row() for e in evaluations]))

    def metrics(self) -> dict[str, float]:
        """The summary's metrics by name (without the round)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "round"}

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


SUMMARY_METRICS = tuple(f.name for f in fields(RoundSummary) if f.name != "round")


@dataclass(frozen=True)
class DroppedClient:
    """A trainer whose local training failed in a round; its state was kept."""

    round: int
    client: str  # with " (restart r)" for restarts after the first
    reason: str


@dataclass(frozen=True)
class RoundReport:
    """What one round did: its summary and each client's row (None and empty when the round
    was not evaluated), and how the fan-out went."""

    round: int
    summary: RoundSummary | None
    clients: list[ClientRound]
    in_round: int  # clients whose model was trained this round (in the worst restart)
    dropped: list[DroppedClient]
    retries: int  # retries of every job of the round
    wall_s: float
    train_s: float = 0.0  # of wall_s: the fan-out of local training and the aggregation
    evaluate_s: float = 0.0  # of wall_s: the evaluation of every client
    attackers: tuple[str, ...] = ()  # the attacking clients (federation.attack)
    epsilon: float | None = None  # ε of the (ε, δ)-DP spent so far (federation.privacy)

    @property
    def honest_summary(self) -> RoundSummary | None:
        """The summary over the honest clients only (``summary`` without an attack)."""
        if not self.attackers or self.summary is None:
            return self.summary
        return RoundSummary.of(self.round, [e for e in self.evaluations if e.client not in self.attackers])

    @property
    def attacker_summary(self) -> RoundSummary | None:
        """The summary over the attacking clients (None without an attack)."""
        if not self.attackers or self.summary is None:
            return None
        return RoundSummary.of(self.round, [e for e in self.evaluations if e.client in self.attackers])

    @property
    def evaluations(self) -> list[ClientEvaluation]:
        return [c.evaluation for c in self.clients]

"""What each method does in a round (DESIGN §1 table), as data the round loop reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodRule:
    start_from_global: bool  # local training starts from w_k (else from the client's own v_n)
    prox: str | None  # "lam" or "mu": proximal pull towards w_k with that config weight
    uploads: bool  # the client's result takes part in aggregation
    evaluate_personal: bool  # evaluate v_n (else the aggregated global w_{k+1})


RULES = {
    "local": MethodRule(start_from_global=False, prox=None, uploads=False, evaluate_personal=True),
    "fedavg": MethodRule(start_from_global=True, prox=None, uploads=True, evaluate_personal=False),
    "fedprox": MethodRule(start_from_global=True, prox="mu", uploads=True, evaluate_personal=False),
    "pqfl": MethodRule(start_from_global=False, prox="lam", uploads=True, evaluate_personal=True),
}


def prox_weight(method: str, lam: float, mu: float) -> float:
    rule = RULES[method]
    return {"lam": lam, "mu": mu, None: 0.0}[rule.prox]

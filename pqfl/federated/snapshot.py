"""A :class:`~pqfl.federated.rounds.FederationState` as data: a JSON-able mapping plus named
float arrays, and back, checked field by field.

Checkpoints are read from disk by whoever resumes a run, so they must be data that
cannot run code: this is what they hold instead of a pickle. :func:`to_data` splits a
state into ``meta`` (numbers, strings, lists) and ``arrays`` (θ blocks, heads, centres,
the global tensors and the last round's test scores); :func:`from_data` rebuilds it and
raises ``ValueError`` naming the first field that is missing or of the wrong type or
shape, so a damaged or foreign file is refused, never half-loaded. Whether the shapes fit
a particular federation is :meth:`~pqfl.federated.rounds.Federation.check_state`'s job.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import numpy as np

from pqfl.federated.client import ClientState
from pqfl.results import ClientEvaluation, ClientRound, DroppedClient, RoundReport, RoundSummary

_EVALUATION = [f.name for f in fields(ClientEvaluation) if f.name != "test_scores"]
_SUMMARY = [f.name for f in fields(RoundSummary)]


def to_data(state) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a federation state."""
    arrays: dict[str, np.ndarray] = {"global_theta": np.asarray(state.global_theta, dtype=np.float64)}
    for name in ("global_head", "global_mean", "global_scores", "global_encoder"):  # the strategies' extras
        if getattr(state, name) is not None:
            arrays[name] = np.asarray(getattr(state, name), dtype=np.float64)
    trainers = [_put_state(arrays, f"state.{i}", st) for i, st in enumerate(state.states)]
    last = None
    if state.last is not None:
        report = state.last
        rows = []
        for n, row in enumerate(report.clients):
            ev = row.evaluation
            arrays[f"last.{n}.test_scores"] = np.asarray(ev.test_scores, dtype=np.float64)
            rows.append(
                {
                    **{k: getattr(ev, k) for k in _EVALUATION},
                    "loss": row.loss,
                    "row_retries": row.retries,
                    "dropped": row.dropped,
                }
            )
        last = {
            "round": report.round,
            "summary": None if report.summary is None else asdict(report.summary),
            "clients": rows,
            "in_round": report.in_round,
            "dropped": [asdict(d) for d in report.dropped],
            "retries": report.retries,
            "wall_s": report.wall_s,
            "train_s": report.train_s,
            "evaluate_s": report.evaluate_s,
            "attackers": list(report.attackers),
            "epsilon": report.epsilon,
        }
    best = []
    for n, b in enumerate(state.best):
        arrays[f"best.{n}.test_scores"] = np.asarray(b.evaluation.test_scores, dtype=np.float64)
        members = []
        for r, (st, block) in enumerate(b.members):
            members.append(_put_state(arrays, f"best.{n}.{r}", st))
            arrays[f"best.{n}.{r}.block"] = np.asarray(block, dtype=np.float64)
        best.append(
            {"round": b.round, "evaluation": {k: getattr(b.evaluation, k) for k in _EVALUATION}, "members": members}
        )
    meta = {
        "round": state.round,
        "best": best,
        "trainers": trainers,
        "history": [asdict(h) for h in state.history],
        "retries_total": state.retries_total,
        "dropped": [asdict(d) for d in state.dropped],
        "last": last,
    }
    return meta, arrays


def from_data(meta: Any, arrays: dict[str, np.ndarray]):
    """The federation state ``to_data`` split into ``meta`` and ``arrays``; ValueError names the bad field."""
    from pqfl.federated.rounds import ClientBest, FederationState

    meta = _mapping(meta, "state")
    trainers = _list(meta, "trainers", "state")
    states = [_get_state(t, arrays, f"state.{i}", f"trainers[{i}]") for i, t in enumerate(trainers)]
    best = []
    for n, b in enumerate(_list(meta, "best", "state") if "best" in meta else []):  # absent before 0.2
        where = f"best[{n}]"
        b = _mapping(b, where)
        members = [
            (_get_state(m, arrays, f"best.{n}.{r}", f"{where}.members[{r}]"), _array(arrays, f"best.{n}.{r}.block", 3))
            for r, m in enumerate(_list(b, "members", where))
        ]
        evaluation = _evaluation(_mapping(b.get("evaluation"), f"{where}.evaluation"), arrays, f"best.{n}", where)
        best.append(ClientBest(_int(b, "round", where), evaluation, members))
    last = meta.get("last")
    report = None if last is None else _report(_mapping(last, "last"), arrays)
    return FederationState(
        round=_int(meta, "round", "state"),
        global_theta=_array(arrays, "global_theta", 4),
        states=states,
        history=[_summary(h, f"history[{k}]") for k, h in enumerate(_list(meta, "history", "state"))],
        retries_total=_int(meta, "retries_total", "state"),
        dropped=[_dropped(d, f"dropped[{k}]") for k, d in enumerate(_list(meta, "dropped", "state"))],
        last=report,
        best=best,
        global_head=_array(arrays, "global_head", 2) if "global_head" in arrays else None,
        global_mean=_array(arrays, "global_mean", 2) if "global_mean" in arrays else None,
        global_scores=_array(arrays, "global_scores", 2) if "global_scores" in arrays else None,
        global_encoder=_array(arrays, "global_encoder", 2) if "global_encoder" in arrays else None,
    )


def _put_state(arrays: dict[str, np.ndarray], key: str, st: ClientState) -> dict[str, Any]:
    arrays[f"{key}.theta"] = np.asarray(st.theta, dtype=np.float64)
    arrays[f"{key}.w"] = np.asarray(st.w, dtype=np.float64)
    if st.center is not None:
        arrays[f"{key}.center"] = np.asarray(st.center, dtype=np.float64)
    if st.enc is not None:
        arrays[f"{key}.enc"] = np.asarray(st.enc, dtype=np.float64)
    return {"b": float(st.b), "center": st.center is not None, "alpha": st.alpha, "enc": st.enc is not None}


def _get_state(t: Any, arrays: dict[str, np.ndarray], key: str, where: str) -> ClientState:
    t = _mapping(t, where)
    center = _array(arrays, f"{key}.center", 1) if _typed(t, "center", bool, where) else None
    return ClientState(
        theta=_array(arrays, f"{key}.theta", 3),
        w=_array(arrays, f"{key}.w", 1),
        b=_number(t, "b", where),
        center=center,
        alpha=None if t.get("alpha") is None else _number(t, "alpha", where),  # APFL; absent before it
        enc=_array(arrays, f"{key}.enc", 2) if "enc" in t and _typed(t, "enc", bool, where) else None,  # fedenc
    )


def _evaluation(r: dict, arrays: dict[str, np.ndarray], key: str, where: str) -> ClientEvaluation:
    return ClientEvaluation(
        client=_typed(r, "client", str, where),
        **{k: _number(r, k, where) for k in _EVALUATION if k not in ("client", "retries")},
        test_scores=_array(arrays, f"{key}.test_scores", 1),
        retries=_int(r, "retries", where),
    )


def _report(last: dict, arrays) -> RoundReport:
    rows = []
    for n, r in enumerate(_list(last, "clients", "last")):
        where = f"last.clients[{n}]"
        r = _mapping(r, where)
        ev = _evaluation(r, arrays, f"last.{n}", where)
        loss = None if r.get("loss") is None else _number(r, "loss", where)
        rows.append(ClientRound(ev, loss, _int(r, "row_retries", where), _typed(r, "dropped", bool, where)))
    summary = last.get("summary")
    return RoundReport(
        round=_int(last, "round", "last"),
        summary=None if summary is None else _summary(summary, "last.summary"),
        clients=rows,
        in_round=_int(last, "in_round", "last"),
        dropped=[_dropped(d, f"last.dropped[{k}]") for k, d in enumerate(_list(last, "dropped", "last"))],
        retries=_int(last, "retries", "last"),
        wall_s=_number(last, "wall_s", "last"),
        # absent in checkpoints written before rounds were split into phases
        train_s=_number(last, "train_s", "last") if "train_s" in last else 0.0,
        evaluate_s=_number(last, "evaluate_s", "last") if "evaluate_s" in last else 0.0,
        # absent before attacks and DP
        attackers=tuple(_strings(last, "attackers", "last")) if "attackers" in last else (),
        epsilon=None if last.get("epsilon") is None else _number(last, "epsilon", "last"),
    )


def _strings(m: dict, key: str, where: str) -> list[str]:
    values = _list(m, key, where)
    for k, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{where}.{key}[{k}]: expected str, got {type(v).__name__}")
    return values


def _summary(h: Any, where: str) -> RoundSummary:
    h = _mapping(h, where)
    return RoundSummary(round=_int(h, "round", where), **{k: _number(h, k, where) for k in _SUMMARY if k != "round"})


def _dropped(d: Any, where: str) -> DroppedClient:
    d = _mapping(d, where)
    return DroppedClient(_int(d, "round", where), _typed(d, "client", str, where), _typed(d, "reason", str, where))


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _typed(m: dict, key: str, kind: type, where: str):
    if key not in m:
        raise ValueError(f"{where}.{key}: missing")
    value = m[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _int(m: dict, key: str, where: str) -> int:
    return _typed(m, key, int, where)


def _number(m: dict, key: str, where: str) -> float:
    value = m.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return float(_typed(m, key, float, where))


def _list(m: dict, key: str, where: str) -> list:
    return _typed(m, key, list, where)


def _array(arrays: dict[str, np.ndarray], key: str, ndim: int) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"arrays.{key}: missing")
    value = arrays[key]
    if value.dtype != np.float64 or value.ndim != ndim:
        raise ValueError(f"arrays.{key}: expected a {ndim}-D float64 array, got {value.ndim}-D {value.dtype}")
    return value

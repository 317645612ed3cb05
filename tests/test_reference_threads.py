"""The reference simulator on the thread runner: PennyLane's recording stack is global,
so concurrent QNode construction must be serialised (see reference.PENNYLANE_LOCK)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pqfl.quantum.reference import reference_expvals
from pqfl.quantum.spec import CircuitSpec


def _spec(qubits, encoding, noisy):
    return CircuitSpec(
        qubits=qubits,
        layers=2,
        encoding=encoding,
        pairs=tuple((i, (i + 1) % qubits) for i in range(qubits)),
        depolarizing=0.01 if noisy else 0.0,
        amplitude_damping=0.0,
        readout=0.0,
    )


def test_concurrent_reference_calls_match_sequential_ones():
    rng = np.random.default_rng(0)
    cases = []
    for q, enc, noisy in [(3, "angle", False), (4, "amplitude", True), (3, "iqp", True), (4, "angle", False)]:
        n_features = 2**q if enc == "amplitude" else q
        X = rng.uniform(0.1, 1.0, (5, n_features))
        theta = rng.normal(size=(2, q, 3))
        cases.append((_spec(q, enc, noisy), X, theta))
    expected = [np.asarray(reference_expvals(*c)) for c in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(6):
            got = list(pool.map(lambda c: np.asarray(reference_expvals(*c)), cases * 3))
            for g, e in zip(got, expected * 3):
                np.testing.assert_allclose(g, e, atol=1e-12)

"""Train PQFL on three heterogeneous quantum clients and print each client's test AUROC.

Uses only numpy, scikit-learn's digits and pqfl: digit 0 is normal everywhere, other
digits are anomalies; each client holds a different slice of the data and a different
circuit (6-qubit amplitude, 4-qubit angle, 5-qubit IQP with finite shots).

    python docs/examples/three_clients.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import pqfl

pqfl.enable_persistent_cache()  # compiled circuits kept in ~/.cache/pqfl: the next run starts in seconds
X, digit = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
normal, anomalous = np.flatnonzero(digit == 0), np.flatnonzero(digit != 0)
profiles = {
    "amplitude-6q": {"qubits": 6, "layers": 2, "encoding": "amplitude", "entangling": "ring"},
    "angle-4q": {
        "qubits": 4,
        "layers": 3,
        "encoding": "angle",
        "entangling": "linear",
        "noise": {"depolarizing": 0.005, "readout": 0.01},
    },
    "iqp-5q": {"qubits": 5, "layers": 2, "encoding": "iqp", "shots": 1024},
}
train, test = {}, {}
for name, rows in zip(profiles, np.array_split(rng.permutation(normal), 3)):
    # each client: 60 normal rows of its own, 12 anomalies drawn from the other digits
    rows = np.concatenate([rows, rng.choice(anomalous, 12, replace=False)])
    y = (digit[rows] != 0).astype(int)
    X_tr, X_te, y_tr, y_te = train_test_split(X[rows], y, test_size=0.4, stratify=y, random_state=0)
    train[name], test[name] = (X_tr, y_tr), (X_te, y_te)

federation = pqfl.FederatedDetector(method="pqfl", rounds=5, local_epochs=2, lam=0.01, random_state=0)
federation.fit(train, profiles=profiles)
for name, result in federation.evaluate(test).items():
    print(f"{name:14s} test AUROC {result.auroc:.3f}")

"""pqfl: personalized quantum federated learning for anomaly detection (the library).

    import pqfl
    det = pqfl.QuantumDetector(qubits=4).fit(X, y)                   # one client
    fed = pqfl.FederatedDetector(method="pqfl").fit(data, profiles)   # a federation
    fed.detectors_["client-a"].decision_function(X_new)

Plain functions, arrays and estimators; no Prefect or MLflow imports in this package.
The names below load on first use, so ``import pqfl`` stays light (no JAX, no qiskit).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "QuantumDetector": "pqfl.detector",
    "FederatedDetector": "pqfl.federated_detector",
    "Federation": "pqfl.federated.rounds",
    "FederationResult": "pqfl.federated.rounds",
    "FederationState": "pqfl.federated.rounds",
    "run_federation": "pqfl.federated.rounds",
    "Strategy": "pqfl.federated.strategies",
    "Local": "pqfl.federated.strategies",
    "FedAvg": "pqfl.federated.strategies",
    "FedProx": "pqfl.federated.strategies",
    "PQFL": "pqfl.federated.strategies",
    "Centralized": "pqfl.federated.strategies",
    "ClientEvaluation": "pqfl.results",
    "RoundSummary": "pqfl.results",
    "prepare": "pqfl.fleet",
    "build_fleet": "pqfl.fleet",
    "load_config": "pqfl.config",
    "save_detector": "pqfl.persistence",
    "load_detector": "pqfl.persistence",
    "enable_persistent_cache": "pqfl.compile_cache",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pqfl' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])

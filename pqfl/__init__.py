"""pqfl: personalized quantum federated learning for anomaly detection (the library).

Plain functions and arrays; no Prefect or MLflow imports in this package.
"""

__version__ = "0.1.0"

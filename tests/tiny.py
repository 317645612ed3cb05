"""A tiny, fast config for flow and CLI tests (digits ships with scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {
    "name": "tiny",
    "dataset": {"source": "sklearn:digits", "max_samples": 700},
    "partition": {"alpha": 1.0, "normal": "context", "anomaly_ratio": 0.25, "min_anomalies": 6},
    "federation": {
        "methods": ["local", "fedavg", "fedprox", "pqfl", "centralized"],
        "rounds": 2,
        "local_epochs": 1,
        "lr": 0.1,
        "batch_size": 32,
        "lambda": 0.1,
        "min_clients": 1,
        "seed": 3,
    },
    "clients": [
        {"name": "amp-3q", "qubits": 3, "layers": 1, "entangling": "ring", "encoding": "amplitude"},
        {
            "name": "angle-2q-noisy",
            "qubits": 2,
            "layers": 2,
            "entangling": "linear",
            "encoding": "angle",
            "reupload": True,  # reads 2 qubits x 2 layers = 4 features, on the density-matrix path
            "measure": "zz",  # the head reads <Z0>, <Z1>, <Z0 Z1>
            "noise": {"depolarizing": 0.02, "amplitude_damping": 0.01, "readout": 0.02},
        },
        {"name": "iqp-2q-shots", "qubits": 2, "layers": 1, "encoding": "iqp", "shots": 256},
    ],
}


def write_config(folder: Path, data: dict | None = None, **sections) -> Path:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (data or TINY).items()}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def recording_map():
    """``(calls, map_fn)``: a ``map_fn`` for the round loop that runs each job in process and
    records ``(function, jobs, results)`` of every call, so a test can read what the server got."""
    calls = []

    def map_fn(fn, jobs):
        out = list(map(fn, jobs))
        calls.append((fn, jobs, out))
        return out

    return calls, map_fn

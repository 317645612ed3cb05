"""Saving and loading a fitted :class:`~pqfl.detector.QuantumDetector` as two plain files.

``detector.json`` holds the detector's parameters, the raw feature names, the threshold
and the shot-sampling stream; ``detector.npz`` (``allow_pickle=False``) holds the arrays:
the feature map (``mean``, ``scale``, ``components``, ``whiten``, ``norm_anchor``) and each
member's ``theta``, ``w``, ``b``, ``center`` and, trained with a shared encoder, ``adjust``
(``@r`` suffixed for restart r ≥ 1). No
Python object is pickled, so loading runs no code from the files. The MLflow pyfunc model
(``flows/detector_model.py``) stores exactly these files.

Files written before the detector had parameters of its own (``"profile"`` instead of
``"params"`` in the JSON) load too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pqfl.config import ClientProfile
from pqfl.data.preprocessing import FeatureMap
from pqfl.detector import CIRCUIT_PARAMS, Member, QuantumDetector
from pqfl.quantum.spec import CircuitSpec

FORMAT = 2  # 1: "profile" (a client profile); 2: "params" (the detector's own parameters)


def feature_names(det: QuantumDetector, columns=None) -> list[str]:
    """The raw feature names a detector scores: ``columns``, else the names it was fitted with,
    else ``x0 … x{d-1}``."""
    if columns is not None:
        return [str(c) for c in columns]
    if hasattr(det, "feature_names_in_"):
        return [str(c) for c in det.feature_names_in_]
    return [f"x{i}" for i in range(det.n_features_in_)]


def save_detector(det: QuantumDetector, folder: str | Path, columns=None, client: str | None = None) -> Path:
    """Write ``det`` (fitted) as ``detector.json`` and ``detector.npz`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fmap = det.feature_map_
    params = det.get_params()
    if params["coupling"] is not None:
        params["coupling"] = [list(map(int, p)) for p in params["coupling"]]
    meta = {
        "format": FORMAT,
        "client": client,
        "columns": feature_names(det, columns),
        "params": params,
        "encoding": fmap.encoding,
        "out_dim": int(fmap.out_dim),
        "residual": bool(fmap.residual),
        "objective": det.objective,
        "simulator": det.simulator,
        "threshold": float(det.threshold_),
        "seed": int(det.random_state),
        "stream": list(det.stream_),
        "restarts": len(det.members_),
    }
    (folder / "detector.json").write_text(json.dumps(meta, indent=2))
    arrays = {"mean": fmap.mean, "scale": fmap.scale}
    optional = {"components": fmap.components, "whiten": fmap.whiten, "norm_anchor": fmap.norm_anchor}
    arrays.update({k: v for k, v in optional.items() if v is not None})
    for r, m in enumerate(det.members_):
        at = f"@{r}" if r else ""
        arrays.update({f"theta{at}": m.theta, f"w{at}": m.w, f"b{at}": np.asarray(m.b)})
        if m.center is not None:
            arrays[f"center{at}"] = m.center
        if m.adjust is not None:
            arrays[f"adjust{at}"] = m.adjust
    np.savez(folder / "detector.npz", **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    return folder


def load_detector(folder: str | Path) -> QuantumDetector:
    """The fitted detector saved in ``folder`` by :func:`save_detector`."""
    folder = Path(folder)
    meta = json.loads((folder / "detector.json").read_text())
    with np.load(folder / "detector.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    get = arrays.get
    if "params" in meta:
        det = QuantumDetector(**meta["params"])
        spec = CircuitSpec.from_profile(det.profile())
    else:  # format 1: a client profile, and the settings the detector did not record
        profile = ClientProfile.model_validate(meta["profile"])
        det = QuantumDetector(
            **{k: getattr(profile, k) for k in CIRCUIT_PARAMS},
            noise=profile.noise.model_dump(),
            objective=meta["objective"],
            simulator=meta["simulator"],
            random_state=int(meta["seed"]),
        )
        spec = CircuitSpec.from_profile(profile)
    det.feature_map_ = FeatureMap(
        meta["encoding"],
        meta["out_dim"],
        arrays["mean"],
        arrays["scale"],
        get("components"),
        get("whiten"),
        None if get("norm_anchor") is None else float(get("norm_anchor")),
        bool(meta.get("residual", False)),
    )
    det.circuit_ = spec
    det.members_ = [
        Member(arrays[f"theta{at}"], arrays[f"w{at}"], float(arrays[f"b{at}"]), get(f"center{at}"), get(f"adjust{at}"))
        for at in ["", *(f"@{r}" for r in range(1, int(meta.get("restarts", 1))))]
    ]
    det.n_features_in_ = len(det.feature_map_.mean)
    det.feature_names_in_ = np.asarray(meta["columns"], dtype=object)
    det.stream_ = tuple(meta["stream"])
    det.threshold_ = float(meta["threshold"])
    return det

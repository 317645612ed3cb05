"""A hashable description of one client's circuit, the key for compiled functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.encodings import REUPLOADABLE, feature_dim, with_pair_products

NOISE_FIELDS = ("depolarizing", "amplitude_damping", "readout")


def _per_qubit_or_scalar(name: str, value, qubits: int):
    """A float (the same on every qubit) or a tuple of ``qubits`` floats (one per qubit)."""
    if isinstance(value, (int, float)):
        return float(value)
    values = tuple(float(v) for v in value)
    if len(values) != qubits:
        raise ValueError(f"{name}: {len(values)} per-qubit values for {qubits} qubits; give one value per qubit")
    return values


def _pattern(profile):
    """A profile's entangling pattern name, or its explicit coupling pairs (``entangling: device``)."""
    return profile.coupling if getattr(profile, "entangling", None) == "device" else profile.entangling


@dataclass(frozen=True)
class CircuitSpec:
    """Everything that fixes a client's circuit structure (not its parameters).

    Each noise field is either one float for every qubit or a tuple with one value per
    qubit (a device calibration). ``depolarizing`` and ``amplitude_damping`` act on every
    qubit after every layer; ``readout`` is a symmetric bit flip at measurement.
    """

    qubits: int
    layers: int
    encoding: str
    pairs: tuple[tuple[int, int], ...]
    depolarizing: float | tuple[float, ...] = 0.0
    amplitude_damping: float | tuple[float, ...] = 0.0
    readout: float | tuple[float, ...] = 0.0
    reupload: bool = False  # data re-uploading: the encoding before every layer, fresh features each time
    correlators: bool = False  # measure Z_i Z_j for every pair too (the head reads q(q+1)/2 values)

    def __post_init__(self):
        if self.reupload and self.encoding not in REUPLOADABLE:
            raise ValueError(
                f"reupload: data re-uploading is implemented for {', '.join(REUPLOADABLE)} encoding, not {self.encoding!r}"
            )
        for name in NOISE_FIELDS:
            object.__setattr__(self, name, _per_qubit_or_scalar(name, getattr(self, name), self.qubits))
        object.__setattr__(self, "pairs", tuple(tuple(int(w) for w in p) for p in self.pairs))

    @classmethod
    def from_profile(cls, profile) -> CircuitSpec:
        noise = profile.noise
        return cls(
            qubits=profile.qubits,
            layers=profile.layers,
            encoding=profile.encoding,
            pairs=tuple(entangling_pairs(_pattern(profile), profile.qubits)),
            depolarizing=noise.depolarizing,
            amplitude_damping=noise.amplitude_damping,
            readout=noise.readout,
            reupload=profile.reupload,
            correlators=profile.measure == "zz",
        )

    def on_wire(self, name: str, wire: int) -> float:
        """The value of noise field ``name`` on ``wire``."""
        value = getattr(self, name)
        return value if isinstance(value, float) else value[wire]

    def per_wire(self, name: str) -> tuple[float, ...]:
        """Noise field ``name`` as one value per wire."""
        return tuple(self.on_wire(name, w) for w in range(self.qubits))

    @property
    def noisy(self) -> bool:
        """True when the variational block has noise channels (needs mixed states)."""
        return any(p > 0 for p in self.per_wire("depolarizing") + self.per_wire("amplitude_damping"))

    @property
    def has_readout(self) -> bool:
        return any(p > 0 for p in self.per_wire("readout"))

    @property
    def n_outputs(self) -> int:
        """How many expectation values the circuit gives the head: q, or q(q+1)/2 with correlators."""
        return self.qubits * (self.qubits + 1) // 2 if self.correlators else self.qubits

    def readout_factors(self) -> np.ndarray:
        """Symmetric readout flips scale ⟨Z_i⟩ by (1 − 2p_i) and, being independent, ⟨Z_i Z_j⟩
        by (1 − 2p_i)(1 − 2p_j); shape (n_outputs,)."""
        f = 1.0 - 2.0 * np.asarray(self.per_wire("readout"))
        return with_pair_products(f) if self.correlators else f

    @property
    def n_features(self) -> int:
        return feature_dim(self.encoding, self.qubits, self.layers, self.reupload)

"""A hashable description of one client's circuit, the key for compiled functions."""

from __future__ import annotations

from dataclasses import dataclass

from pqfl.quantum.ansatz import entangling_pairs
from pqfl.quantum.encodings import feature_dim


@dataclass(frozen=True)
class CircuitSpec:
    """Everything that fixes a client's circuit structure (not its parameters)."""

    qubits: int
    layers: int
    encoding: str
    pairs: tuple[tuple[int, int], ...]
    depolarizing: float = 0.0
    amplitude_damping: float = 0.0
    readout: float = 0.0

    @classmethod
    def from_profile(cls, profile) -> "CircuitSpec":
        return cls(
            qubits=profile.qubits,
            layers=profile.layers,
            encoding=profile.encoding,
            pairs=tuple(entangling_pairs(profile.entangling, profile.qubits)),
            depolarizing=profile.noise.depolarizing,
            amplitude_damping=profile.noise.amplitude_damping,
            readout=profile.noise.readout,
        )

    @property
    def noisy(self) -> bool:
        """True when the variational block has noise channels (needs mixed states)."""
        return self.depolarizing > 0 or self.amplitude_damping > 0

    @property
    def n_features(self) -> int:
        return feature_dim(self.encoding, self.qubits)

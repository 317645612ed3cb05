"""The variational block U(θ): layers of Rot gates, entanglers and per-layer noise.

θ for a client is a block of shape (layers, qubits, 3) cut from the shared global
tensor (docs/algorithm.md, the shared parameter space). The PennyLane operations here define the circuit; the fast
simulator uses their matrices and Kraus operators.
"""

from __future__ import annotations

from itertools import combinations

import pennylane as qml


def shape(layers: int, qubits: int) -> tuple[int, int, int]:
    """Shape of a client's parameter block: one Rot(φ, θ, ω) per qubit per layer."""
    return (layers, qubits, 3)


def entangling_pairs(pattern: str | list, qubits: int) -> list[tuple[int, int]]:
    """CNOT (control, target) pairs applied after each layer's rotations.

    ``pattern`` is ``ring``, ``linear``, ``all_to_all`` or an explicit list of pairs
    (a device coupling map).
    """
    if not isinstance(pattern, str):
        return [tuple(p) for p in pattern]
    if qubits < 2:
        return []
    if pattern == "linear" or (pattern == "ring" and qubits == 2):
        return [(i, i + 1) for i in range(qubits - 1)]
    if pattern == "ring":
        return [(i, (i + 1) % qubits) for i in range(qubits)]
    if pattern == "all_to_all":
        return list(combinations(range(qubits), 2))
    raise ValueError(f"unknown entangling pattern {pattern!r}")


def noise_kraus(depolarizing: float, amplitude_damping: float) -> list[list]:
    """Kraus operator sets applied, in this order, to one qubit after every layer."""
    channels = []
    if depolarizing > 0:
        channels.append(qml.DepolarizingChannel.compute_kraus_matrices(depolarizing))
    if amplitude_damping > 0:
        channels.append(qml.AmplitudeDamping.compute_kraus_matrices(amplitude_damping))
    return channels


def _wire_value(value, wire: int) -> float:
    """A noise parameter on ``wire``: the same float everywhere, or one value per wire."""
    return float(value) if isinstance(value, (int, float)) else float(value[wire])


def apply_layers(theta, pairs, depolarizing=0.0, amplitude_damping=0.0) -> None:
    """Queue the variational block with PennyLane operations (inside a QNode or tape).

    ``depolarizing`` and ``amplitude_damping`` are one float for every wire or a
    sequence with one value per wire (a device calibration).
    """
    layers, qubits = theta.shape[0], theta.shape[1]
    for layer in range(layers):
        for wire in range(qubits):
            qml.Rot(theta[layer, wire, 0], theta[layer, wire, 1], theta[layer, wire, 2], wires=wire)
        for control, target in pairs:
            qml.CNOT(wires=[control, target])
        for wire in range(qubits):
            p, gamma = _wire_value(depolarizing, wire), _wire_value(amplitude_damping, wire)
            if p > 0:
                qml.DepolarizingChannel(p, wires=wire)
            if gamma > 0:
                qml.AmplitudeDamping(gamma, wires=wire)

"""Reference execution on PennyLane devices: default.qubit, or default.mixed with noise.

This is the circuit as PennyLane defines it; the fast simulator is tested against it.
It is also used for drawings and OpenQASM export.
"""

from __future__ import annotations

import threading
from functools import cache
from itertools import combinations

import jax.numpy as jnp
import pennylane as qml

from pqfl.quantum.ansatz import apply_layers
from pqfl.quantum.encodings import apply_encoding
from pqfl.quantum.spec import CircuitSpec


def circuit_function(spec: CircuitSpec, with_noise: bool = True):
    """The quantum function: encoding, variational block, ⟨Z_i⟩ on every wire (with
    ``reupload``, the encoding before every layer)."""
    wires = list(range(spec.qubits))

    noise = (spec.depolarizing, spec.amplitude_damping) if with_noise else (0.0, 0.0)

    def circuit(x, theta):
        if spec.reupload:  # the encoding before every layer, with that layer's slice of x
            q = spec.qubits
            for layer in range(spec.layers):
                apply_encoding(spec.encoding, x[..., layer * q : (layer + 1) * q], wires)
                apply_layers(theta[layer : layer + 1], spec.pairs, *noise)
        else:
            apply_encoding(spec.encoding, x, wires)
            apply_layers(theta, spec.pairs, *noise)
        if with_noise and spec.has_readout:
            # Readout error is a bit flip just before the Z measurement. (default.mixed's
            # own readout_prob option crashes in PennyLane 0.45, so it is written out.)
            for w in wires:
                if spec.on_wire("readout", w) > 0:
                    qml.BitFlip(spec.on_wire("readout", w), wires=w)
        z = [qml.expval(qml.PauliZ(w)) for w in wires]
        if spec.correlators:
            z += [qml.expval(qml.PauliZ(i) @ qml.PauliZ(j)) for i, j in combinations(wires, 2)]
        return z

    return circuit


# PennyLane keeps its recording stack in one class-level list shared by all threads, and
# ``QueuingManager.stop_recording`` swaps that list out: two client tasks building QNode
# tapes at once on the thread runner lose operations or crash ("pop from empty list").
# Every QNode construction here (tracing under jit, drawing, QASM export) holds this lock.
PENNYLANE_LOCK = threading.RLock()


@cache
def reference_qnode(spec: CircuitSpec, interface: str = "jax"):
    """The circuit's QNode, differentiated by backpropagation; default.mixed when the spec
    has any noise. ``interface="jax"`` is what the ``reference`` simulator trains with
    (under jit); ``"autograd"`` is the same circuit differentiated by PennyLane's autograd,
    which runs a small circuit eagerly 20-40x faster than JAX's op-by-op dispatch (the tests
    compare the fast simulator against it)."""
    if spec.noisy or spec.has_readout:
        dev = qml.device("default.mixed", wires=spec.qubits)
    else:
        dev = qml.device("default.qubit", wires=spec.qubits)
    return qml.QNode(circuit_function(spec), dev, interface=interface, diff_method="backprop")


def reference_expvals(spec: CircuitSpec, X, theta):
    """⟨Z_i⟩ (and ⟨Z_i Z_j⟩ with correlators) for a batch X (broadcast over the batch), shape (batch, n_outputs)."""
    with PENNYLANE_LOCK:
        out = reference_qnode(spec)(jnp.asarray(X), jnp.asarray(theta))
    return jnp.stack(out, axis=-1)


def draw_text(spec: CircuitSpec, x, theta) -> str:
    """A text drawing of the circuit for one sample, noise channels included."""
    dev = qml.device("default.mixed" if spec.noisy or spec.has_readout else "default.qubit", wires=spec.qubits)
    qnode = qml.QNode(circuit_function(spec), dev)
    with PENNYLANE_LOCK:
        return qml.draw(qnode, decimals=3, max_length=200)(x, theta)


def to_openqasm(spec: CircuitSpec, x, theta) -> str:
    """OpenQASM 2.0 of the noiseless circuit (QASM has no noise channels) with Z measurements."""
    qnode = qml.QNode(circuit_function(spec, with_noise=False), qml.device("default.qubit", wires=spec.qubits))
    with PENNYLANE_LOCK:
        return qml.to_openqasm(qnode, measure_all=True, precision=6)(x, theta)

"""Device clients (pqfl.quantum.devices): fake-backend names, qubit counts and layouts,
coupling maps and the per-qubit training noise derived from the calibration snapshot.

Every expected number is read from the fake backend itself (its target, coupling map and
qubit properties) or computed with qiskit's own channel tools, never typed in.
"""

from __future__ import annotations

import math

import numpy as np
import pennylane as qml
import pytest
from qiskit.quantum_info import (
    DensityMatrix,
    Kraus,
    SuperOp,
    average_gate_fidelity,
    partial_trace,
    random_density_matrix,
)
from qiskit_aer.noise import depolarizing_error
from qiskit_ibm_runtime.fake_provider import FakeManilaV2, FakeNairobiV2, FakeTorontoV2

from pqfl.config import ClientProfile, parse_config
from pqfl.errors import PQFLInputError
from pqfl.quantum.ansatz import shape
from pqfl.quantum.devices import (
    DEFAULT_DEVICE_QUBITS,
    SX_PER_ROT,
    depolarizing_lambda,
    device_names,
    device_profile,
    resolve_device_name,
    two_qubit_gate,
)
from pqfl.quantum.fast import fast_expvals
from pqfl.quantum.reference import reference_expvals
from pqfl.quantum.spec import CircuitSpec


def _undirected(backend, physical) -> set[tuple[int, int]]:
    keep = set(physical)
    return {(min(a, b), max(a, b)) for a, b in backend.coupling_map.get_edges() if a in keep and b in keep}


def _props(backend, gate, qubits):
    table = backend.target[gate]
    return table[qubits] if qubits in table else table[qubits[::-1]]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("spelling", ["FakeManilaV2", "manila", "fake_manila", "Fake-Manila", "FAKEMANILA"])
def test_device_name_spellings(spelling):
    assert resolve_device_name(spelling) == "FakeManilaV2"
    profile = ClientProfile(name="c", from_device=spelling)
    assert profile.from_device == "FakeManilaV2"  # the canonical class name is what gets logged


def test_every_listed_device_is_a_real_fake_backend():
    from qiskit_ibm_runtime import fake_provider

    names = device_names()
    assert {"FakeManilaV2", "FakeNairobiV2", "FakeTorontoV2"} <= set(names)
    for name in names:
        assert hasattr(fake_provider, name)
        assert resolve_device_name(name) == name


def test_unknown_device_is_an_input_error_listing_valid_names():
    with pytest.raises(PQFLInputError) as err:
        parse_config({"clients": [{"name": "c", "from_device": "fake_atlantis"}]})
    message = str(err.value)
    assert "clients.0" in message and "fake_atlantis" in message
    listed = [n for n in device_names() if n in message]
    assert len(listed) >= 3  # a few valid names, each one that really exists


# --------------------------------------------------------------------------- qubits and coupling


@pytest.mark.parametrize("backend_cls", [FakeManilaV2, FakeNairobiV2])
def test_small_device_uses_all_its_qubits_and_its_coupling_map(backend_cls):
    backend = backend_cls()
    profile = ClientProfile(name="c", from_device=backend_cls.__name__, layers=2, encoding="angle")
    assert profile.qubits == backend.num_qubits
    assert profile.layout == list(range(backend.num_qubits))
    assert profile.entangling == "device" and profile.backend == "aer"
    spec = CircuitSpec.from_profile(profile)
    assert set(spec.pairs) == _undirected(backend, range(backend.num_qubits))
    assert len(spec.pairs) == len(set(spec.pairs))  # one CNOT per coupled pair, not per direction


def test_subset_of_a_large_device_is_connected_and_mapped_to_logical_indices():
    backend = FakeTorontoV2()
    profile = ClientProfile(name="c", from_device="toronto", qubits=6, encoding="iqp")
    layout = profile.layout
    assert len(layout) == 6 == profile.qubits and len(set(layout)) == 6
    assert backend.coupling_map.reduce(layout).is_connected()  # qiskit's own connectivity check
    physical_pairs = {(min(layout[a], layout[b]), max(layout[a], layout[b])) for a, b in profile.coupling}
    assert physical_pairs == _undirected(backend, layout)
    # Deterministic, and an explicit layout is taken as given.
    assert ClientProfile(name="d", from_device="toronto", qubits=6, encoding="iqp").layout == layout
    chosen = ClientProfile(name="e", from_device="toronto", layout=[0, 1, 4], encoding="angle")
    assert chosen.qubits == 3 and chosen.layout == [0, 1, 4]
    assert {(chosen.layout[a], chosen.layout[b]) for a, b in chosen.coupling} == _undirected(backend, [0, 1, 4])


def test_subset_prefers_better_qubits_than_the_worst_connected_choice():
    """The chosen subset's summed readout error is no worse than that of a plain BFS from the
    worst-readout qubit (a bad but valid choice)."""
    backend = FakeTorontoV2()
    n = 5
    layout = device_profile("toronto", n).layout
    readout = [_props(backend, "measure", (q,)).error for q in range(backend.num_qubits)]
    worst = int(np.argmax(readout))
    bfs, frontier = [worst], [worst]
    neighbours = {q: set() for q in range(backend.num_qubits)}
    for a, b in backend.coupling_map.get_edges():
        neighbours[a].add(b)
    while len(bfs) < n:
        q = frontier.pop(0)
        for nb in sorted(neighbours[q]):
            if nb not in bfs and len(bfs) < n:
                bfs.append(nb)
                frontier.append(nb)
    assert sum(readout[q] for q in layout) < sum(readout[q] for q in bfs)


def test_qubit_count_errors_say_what_to_do():
    big = FakeTorontoV2().num_qubits
    assert big > DEFAULT_DEVICE_QUBITS
    with pytest.raises(PQFLInputError, match=rf"has {big} qubits.*set qubits"):
        parse_config({"clients": [{"name": "c", "from_device": "toronto"}]})
    n = FakeManilaV2().num_qubits
    with pytest.raises(PQFLInputError, match=rf"only {n} qubits"):
        parse_config({"clients": [{"name": "c", "from_device": "manila", "qubits": n + 1}]})
    with pytest.raises(PQFLInputError, match="not connected"):
        parse_config({"clients": [{"name": "c", "from_device": "manila", "layout": [0, 2]}]})
    with pytest.raises(PQFLInputError, match="do not exist"):
        parse_config({"clients": [{"name": "c", "from_device": "manila", "layout": [0, 1, 99]}]})


# --------------------------------------------------------------------------- calibrated noise


@pytest.mark.parametrize("name, qubits", [("manila", None), ("nairobi", None), ("toronto", 4)])
def test_readout_and_damping_come_from_the_calibration(name, qubits):
    dev = device_profile(name, qubits)
    backend = {"manila": FakeManilaV2, "nairobi": FakeNairobiV2, "toronto": FakeTorontoV2}[name]()
    gate = two_qubit_gate(backend)
    assert gate in backend.target.operation_names
    for i, q in enumerate(dev.layout):
        assert dev.noise.readout[i] == pytest.approx(_props(backend, "measure", (q,)).error, abs=1e-15)
        # One layer on this qubit: the Rot's SX pulses and the two-qubit gates of its pairs.
        t = SX_PER_ROT * _props(backend, "sx", (q,)).duration
        t += sum(_props(backend, gate, (dev.layout[a], dev.layout[b])).duration for a, b in dev.pairs if i in (a, b))
        assert dev.noise.amplitude_damping[i] == pytest.approx(
            1 - math.exp(-t / backend.qubit_properties(q).t1), rel=1e-12
        )
        assert 0 < dev.noise.amplitude_damping[i] < 1
    # Qubits differ: the model really is per qubit.
    assert len(set(dev.noise.readout)) > 1 and len(set(dev.noise.depolarizing)) > 1


@pytest.mark.parametrize("n", [1, 2])
def test_depolarizing_lambda_reproduces_the_calibrated_gate_error(n):
    """qiskit's own average gate fidelity of the depolarizing channel we build equals 1 − error."""
    backend = FakeManilaV2()
    error = _props(backend, "sx", (0,)).error if n == 1 else _props(backend, "cx", (0, 1)).error
    channel = depolarizing_error(depolarizing_lambda(error, n), n)
    assert average_gate_fidelity(channel) == pytest.approx(1 - error, abs=1e-12)


def test_two_qubit_depolarizing_leaves_each_qubit_depolarized_by_the_same_lambda():
    lam = depolarizing_lambda(_props(FakeManilaV2(), "cx", (1, 2)).error, 2)
    rho_a, rho_b = random_density_matrix(2, seed=1), random_density_matrix(2, seed=2)
    out = DensityMatrix(rho_b.tensor(rho_a)).evolve(SuperOp(depolarizing_error(lam, 2)))
    for keep, rho in ((0, rho_a), (1, rho_b)):
        marginal = partial_trace(out, [1 - keep])
        assert np.allclose(marginal.data, rho.evolve(SuperOp(depolarizing_error(lam, 1))).data, atol=1e-12)


@pytest.mark.parametrize("name", ["manila", "nairobi"])
def test_depolarizing_per_qubit_is_the_composition_of_the_layers_gate_channels(name):
    """PennyLane's DepolarizingChannel(p_i) equals, as a channel, qiskit's composition of the
    depolarizing errors of the qubit's two SX gates and of the CNOTs that touch it."""
    dev = device_profile(name)
    backend = FakeManilaV2() if name == "manila" else FakeNairobiV2()
    gate = two_qubit_gate(backend)
    for i, q in enumerate(dev.layout):
        composed = SuperOp(np.eye(4))
        errors = [_props(backend, "sx", (q,)).error] * SX_PER_ROT
        lams = [depolarizing_lambda(e, 1) for e in errors]
        lams += [
            depolarizing_lambda(_props(backend, gate, (dev.layout[a], dev.layout[b])).error, 2)
            for a, b in dev.pairs
            if i in (a, b)
        ]
        for lam in lams:
            composed = composed.compose(SuperOp(depolarizing_error(lam, 1)))
        ours = SuperOp(Kraus(list(qml.DepolarizingChannel.compute_kraus_matrices(dev.noise.depolarizing[i]))))
        assert np.allclose(ours.data, composed.data, atol=1e-12)


# --------------------------------------------------------------------------- the device circuit itself


def test_fast_matches_pennylane_on_a_device_profile():
    """The calibrated per-qubit model of 3 qubits of a device, fast vs default.mixed (gradients
    with per-qubit noise are checked in test_quantum's ``per_qubit`` cases)."""
    profile = ClientProfile(name="c", from_device="nairobi", qubits=3, layers=2, encoding="angle")
    spec = CircuitSpec.from_profile(profile)
    assert isinstance(spec.depolarizing, tuple) and spec.noisy and spec.has_readout
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3, spec.n_features))
    theta = rng.uniform(-np.pi, np.pi, shape(spec.layers, spec.qubits))
    z_fast = np.asarray(fast_expvals(spec, X, theta))
    assert np.allclose(z_fast, np.asarray(reference_expvals(spec, X, theta)), atol=1e-8, rtol=0)
    clean = CircuitSpec(spec.qubits, spec.layers, spec.encoding, spec.pairs)
    assert not np.allclose(z_fast, np.asarray(fast_expvals(clean, X, theta)), atol=1e-3)  # the noise matters


# --------------------------------------------------------------------------- config round trip


def test_resolved_profile_round_trips_and_overrides_are_kept():
    profile = ClientProfile(name="c", from_device="nairobi", qubits=4, encoding="angle")
    again = ClientProfile.model_validate(profile.model_dump(mode="json"))
    assert again == profile  # what is logged re-parses to the same client
    ring = ClientProfile(name="r", from_device="nairobi", qubits=4, entangling="ring", noise={"readout": 0.01})
    assert ring.entangling == "ring" and ring.coupling is None and ring.noise.readout == 0.01
    assert ring.layout == profile.layout
    with pytest.raises(PQFLInputError, match="noise.readout: 3 values for 4 qubits"):
        parse_config(
            {"clients": [{"name": "c", "from_device": "nairobi", "qubits": 4, "noise": {"readout": [0.1] * 3}}]}
        )
    with pytest.raises(PQFLInputError, match="ibm_runtime needs device"):
        parse_config({"clients": [{"name": "c", "from_device": "manila", "backend": "ibm_runtime"}]})
    with pytest.raises(PQFLInputError, match="add from_device"):
        parse_config({"clients": [{"name": "c", "qubits": 2, "backend": "aer"}]})

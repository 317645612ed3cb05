"""Device clients: a client profile taken from a calibration snapshot of a real IBM device.

``from_device: NAME`` names a fake backend of ``qiskit_ibm_runtime.fake_provider``
(offline snapshots of IBM devices: ``FakeManilaV2``, ``manila`` or ``fake_manila``). It
fixes the client's

- **qubits**: the device's physical qubits, or a connected subset of ``qubits`` of them
  (the simulator holds at most 16 qubits and the noisy path is costly above ~8), chosen
  as the connected set with the lowest calibrated errors unless a ``layout`` names them;
- **entangling pattern**: one CNOT per coupled pair of those qubits (the coupling map);
- **training noise**: an approximate per-qubit model derived from the calibration
  (:func:`calibrated_noise`). Hardware evaluation on qiskit-aer uses the full
  ``NoiseModel.from_backend`` of the same snapshot instead (see :mod:`pqfl.quantum.qiskit_backend`).

Pure library code: qiskit only, no Prefect or MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

# A device with more qubits than this needs an explicit ``qubits``: the noisy simulation
# (Heisenberg picture, memory ~ q·4^q) gets expensive beyond it.
DEFAULT_DEVICE_QUBITS = 8

# A Rot(φ, θ, ω) = RZ(ω) RY(θ) RZ(φ) compiles to RZ·SX·RZ·SX·RZ on IBM devices: two SX
# pulses per qubit per layer (RZ is virtual and error-free).
SX_PER_ROT = 2


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@lru_cache(maxsize=1)
def _device_classes() -> dict[str, type]:
    """Every fake backend class of the installed qiskit-ibm-runtime, by class name."""
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    out = {}
    for attr in dir(fake_provider):
        obj = getattr(fake_provider, attr)
        if isinstance(obj, type) and issubclass(obj, FakeBackendV2) and obj is not FakeBackendV2:
            out[attr] = obj
    return out


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    """Normalised spellings → class name: ``FakeManilaV2``, ``fake_manila``, ``manila``."""
    aliases: dict[str, str] = {}
    # V2-suffixed classes first, so a bare name means the BackendV2 snapshot.
    for cls_name in sorted(_device_classes(), key=lambda n: (not n.endswith("V2"), n)):
        full = _normalise(cls_name)
        short = full.removesuffix("v2")
        for key in (full, short, short.removeprefix("fake")):
            aliases.setdefault(key, cls_name)
    return aliases


def device_names() -> list[str]:
    """Class names of all known fake devices, sorted."""
    return sorted(_device_classes())


def resolve_device_name(name: str) -> str:
    """The fake-backend class name for ``name``; ValueError listing valid names if unknown."""
    cls_name = _aliases().get(_normalise(name))
    if cls_name is None:
        examples = ", ".join(
            n for n in ("FakeManilaV2", "FakeNairobiV2", "FakeLagosV2", "FakeGuadalupeV2") if n in _device_classes()
        )
        raise ValueError(
            f"unknown device {name!r}; use a fake backend of qiskit_ibm_runtime.fake_provider such as {examples} "
            f"(or manila, fake_nairobi; {len(_device_classes())} are installed)"
        )
    return cls_name


@cache
def load_device(name: str):
    """A (cached) instance of the fake backend ``name``; treat it as read-only."""
    return _device_classes()[resolve_device_name(name)]()


def two_qubit_gate(backend) -> str:
    """Name of the device's native two-qubit gate (cx, ecr or cz)."""
    target = backend.target
    names = [n for n in target.operation_names if getattr(target.operation_from_name(n), "num_qubits", 0) == 2]
    for preferred in ("cx", "ecr", "cz"):
        if preferred in names:
            return preferred
    if not names:
        raise ValueError(f"{backend.name} has no two-qubit gate")
    return names[0]


def coupling_edges(backend) -> list[tuple[int, int]]:
    """Undirected coupled pairs (a < b) of physical qubits, sorted."""
    return sorted({(min(a, b), max(a, b)) for a, b in backend.coupling_map.get_edges() if a != b})


def _props(target, gate: str, qubits: tuple[int, ...]):
    """Instruction properties of ``gate`` on ``qubits`` (either direction for a pair), or None."""
    table = target[gate]
    for key in (qubits, qubits[::-1]):
        if key in table and table[key] is not None:
            return table[key]
    return None


def _error(props) -> float:
    return float(props.error) if props is not None and props.error is not None else 0.0


def _duration(props) -> float:
    return float(props.duration) if props is not None and props.duration is not None else 0.0


def _qubit_badness(backend, q: int) -> float:
    """How much a physical qubit costs a circuit: its readout error and one layer of SX errors."""
    target = backend.target
    return _error(_props(target, "measure", (q,))) + SX_PER_ROT * _error(_props(target, "sx", (q,)))


def connected_subset(backend, n: int) -> tuple[int, ...]:
    """``n`` connected physical qubits with the lowest calibrated errors, sorted.

    From every start qubit, grow greedily by the neighbour whose qubit error plus
    connecting two-qubit-gate error is smallest; keep the cheapest set (ties → lowest
    qubit indices). Deterministic for a given snapshot.
    """
    if n > backend.num_qubits:
        raise ValueError(f"{backend.name} has {backend.num_qubits} qubits; cannot take {n}")
    gate = two_qubit_gate(backend)
    edges = coupling_edges(backend)
    neighbours: dict[int, set[int]] = {q: set() for q in range(backend.num_qubits)}
    edge_err = {}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
        edge_err[(a, b)] = edge_err[(b, a)] = _error(_props(backend.target, gate, (a, b)))
    badness = [_qubit_badness(backend, q) for q in range(backend.num_qubits)]
    best: tuple[float, tuple[int, ...]] | None = None
    for start in range(backend.num_qubits):
        chosen, cost = [start], badness[start]
        while len(chosen) < n:
            options = sorted(
                (badness[nb] + edge_err[(q, nb)], nb) for q in chosen for nb in neighbours[q] if nb not in chosen
            )
            if not options:
                break
            step, nb = options[0]
            chosen.append(nb)
            cost += step
        if len(chosen) == n:
            key = (cost, tuple(sorted(chosen)))
            if best is None or key < best:
                best = key
    if best is None:
        raise ValueError(f"{backend.name} has no connected set of {n} qubits")
    return best[1]


def is_connected(backend, layout) -> bool:
    """True when the physical qubits ``layout`` form one connected piece of the coupling map."""
    layout = set(layout)
    edges = [(a, b) for a, b in coupling_edges(backend) if a in layout and b in layout]
    seen, todo = set(), [min(layout)]
    while todo:
        q = todo.pop()
        if q in seen:
            continue
        seen.add(q)
        todo += [b for a, b in edges if a == q] + [a for a, b in edges if b == q]
    return seen == layout


@dataclass(frozen=True)
class CalibratedNoise:
    """Per-qubit, per-layer training noise (one value per logical qubit), PennyLane conventions."""

    depolarizing: tuple[float, ...]
    amplitude_damping: tuple[float, ...]
    readout: tuple[float, ...]


def depolarizing_lambda(gate_error: float, num_qubits: int) -> float:
    """λ of the depolarizing channel ρ → (1−λ)ρ + λ I/d whose average gate infidelity is ``gate_error``.

    For that channel the average gate infidelity is λ (d − 1)/d, so λ = r d/(d − 1)
    (d = 2: λ = 2r; d = 4: λ = 4r/3).
    """
    d = 2**num_qubits
    return gate_error * d / (d - 1)


def calibrated_noise(backend, layout, pairs) -> CalibratedNoise:
    """Approximate per-qubit noise of one circuit layer on ``layout`` (logical i → physical layout[i]).

    For logical qubit i on physical qubit q, one layer is two SX pulses (the Rot) and one
    two-qubit gate per entangling pair that touches i. From the calibration:

    - **depolarizing**: each gate with average gate error r is a depolarizing channel of
      λ = r·d/(d−1); a two-qubit depolarizing channel leaves each qubit depolarized by the
      same λ. Their composition on the qubit keeps the Bloch vector by Π(1 − λ_g), so
      λ_i = 1 − (1 − λ_sx)² Π_pairs(1 − λ_2q); PennyLane's DepolarizingChannel(p) has λ = 4p/3.
    - **amplitude damping**: γ_i = 1 − exp(−t_i / T1_q), t_i the summed durations of those gates.
    - **readout**: the calibrated measurement error of q, as a symmetric bit flip.

    An approximation: it ignores T2 dephasing, idle time while other qubits' gates run,
    crosstalk, and that gate errors already contain part of the relaxation.
    """
    target = backend.target
    gate = two_qubit_gate(backend)
    depol, damping, readout = [], [], []
    for i, q in enumerate(layout):
        sx = _props(target, "sx", (q,))
        keep = (1.0 - depolarizing_lambda(_error(sx), 1)) ** SX_PER_ROT
        duration = SX_PER_ROT * _duration(sx)
        for a, b in pairs:
            if i in (a, b):
                cx = _props(target, gate, (layout[a], layout[b]))
                keep *= 1.0 - depolarizing_lambda(_error(cx), 2)
                duration += _duration(cx)
        lam = min(max(1.0 - keep, 0.0), 1.0)
        depol.append(0.75 * lam)
        t1 = backend.qubit_properties(q).t1 if backend.qubit_properties(q) is not None else None
        damping.append(1.0 - math.exp(-duration / t1) if t1 else 0.0)
        readout.append(min(_error(_props(target, "measure", (q,))), 0.499))
    return CalibratedNoise(tuple(depol), tuple(damping), tuple(readout))


@dataclass(frozen=True)
class DeviceProfile:
    """What a device snapshot fixes for one client."""

    device: str  # fake-backend class name
    backend_name: str  # the snapshot's own name, e.g. fake_manila
    layout: tuple[int, ...]  # logical qubit i runs on physical qubit layout[i]
    pairs: tuple[tuple[int, int], ...]  # coupled pairs, in logical indices
    noise: CalibratedNoise

    @property
    def qubits(self) -> int:
        return len(self.layout)


def device_profile(name: str, qubits: int | None = None, layout=None) -> DeviceProfile:
    """Resolve a device client: its physical qubits, coupling pairs and calibrated noise.

    ``layout`` (physical qubits) wins over ``qubits``; without either, all of the
    device's qubits when it has at most :data:`DEFAULT_DEVICE_QUBITS`. Raises ValueError
    with the fix when the request does not fit the device.
    """
    backend = load_device(name)
    n_dev = backend.num_qubits
    if layout is not None:
        layout = tuple(int(q) for q in layout)
        bad = [q for q in layout if not 0 <= q < n_dev]
        if bad:
            raise ValueError(f"layout: qubits {bad} do not exist on {backend.name} (qubits 0..{n_dev - 1})")
        if len(set(layout)) != len(layout):
            raise ValueError(f"layout: {list(layout)} repeats a qubit; list each physical qubit once")
        if qubits is not None and qubits != len(layout):
            raise ValueError(f"layout: {len(layout)} physical qubits for qubits: {qubits}; make them agree")
        if not is_connected(backend, layout):
            raise ValueError(f"layout: {list(layout)} is not connected on {backend.name}; pick coupled qubits")
    else:
        if qubits is None:
            if n_dev > DEFAULT_DEVICE_QUBITS:
                raise ValueError(
                    f"{backend.name} has {n_dev} qubits, more than the {DEFAULT_DEVICE_QUBITS} a client "
                    f"simulates by default; set qubits (e.g. {min(5, n_dev)}) to train on a connected subset"
                )
            qubits = n_dev
        if qubits > n_dev:
            raise ValueError(
                f"qubits: {backend.name} has only {n_dev} qubits (asked for {qubits}); use at most {n_dev}"
            )
        layout = tuple(range(n_dev)) if qubits == n_dev else connected_subset(backend, qubits)
    index = {q: i for i, q in enumerate(layout)}
    pairs = tuple((index[a], index[b]) for a, b in coupling_edges(backend) if a in index and b in index)
    return DeviceProfile(
        device=resolve_device_name(name),
        backend_name=backend.name,
        layout=layout,
        pairs=pairs,
        noise=calibrated_noise(backend, layout, pairs),
    )


def fill_from_device(data: dict, max_qubits: int) -> dict:
    """A client profile's fields (``pqfl.config.ClientProfile``) with what ``from_device``
    fixes filled in: the device's name, qubits, layout, coupling pairs (``entangling:
    device``, unless another pattern is set), per-qubit noise (unless ``noise`` is set)
    and ``backend: aer``. Problems raise ValueError naming the field."""
    if not isinstance(data["from_device"], str):
        raise ValueError("from_device: expected a device name such as FakeManilaV2 or manila")
    qubits = data.get("qubits")
    if qubits is not None and (not isinstance(qubits, int) or not 1 <= qubits <= max_qubits):
        return data  # the qubits field reports the problem
    try:
        dev = device_profile(data["from_device"], qubits, data.get("layout"))
    except ValueError as err:  # name the field the problem is about
        message = str(err)
        raise ValueError(message if message.startswith(("qubits:", "layout:")) else f"from_device: {message}") from None
    data = {**data, "from_device": dev.device, "qubits": dev.qubits, "layout": list(dev.layout)}
    if data.get("entangling", "device") == "device":
        data["entangling"] = "device"
        data["coupling"] = [list(p) for p in dev.pairs]
    if "noise" not in data:
        data["noise"] = {k: list(getattr(dev.noise, k)) for k in ("depolarizing", "amplitude_damping", "readout")}
    data.setdefault("backend", "aer")
    return data

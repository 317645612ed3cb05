"""pqfl.federated.aggregation: HeteroFL-style masked weighted averaging of Rot blocks."""

from __future__ import annotations

import numpy as np
import pytest

from pqfl.config import ClientProfile
from pqfl.federated.aggregation import block_of, masked_average, share_groups
from pqfl.federated.robust import grouped_robust_average


def _blocks():
    """Global (2, 3, 3); client A holds (1, 2, 3) with weight 1, client B (2, 3, 3) with weight 3."""
    previous = np.full((2, 3, 3), -7.0)
    a = np.arange(6, dtype=float).reshape(1, 2, 3)  # entries 0..5
    b = 100.0 + np.arange(18, dtype=float).reshape(2, 3, 3)  # entries 100..117
    return previous, a, b


def test_heterogeneous_blocks_hand_computed():
    previous, a, b = _blocks()
    out = masked_average(previous, [a, b], [1.0, 3.0])
    assert out.shape == previous.shape
    # [0, 0, 0] is held by both: (1 * 0 + 3 * 100) / 4 = 75
    assert out[0, 0, 0] == pytest.approx(75.0)
    # [0, 1, 2] is held by both: a = 5, b = 105 -> (5 + 315) / 4 = 80
    assert out[0, 1, 2] == pytest.approx(80.0)
    # [0, 2, 1] (third qubit) only B holds: b[0, 2, 1] = 100 + 7 = 107
    assert out[0, 2, 1] == pytest.approx(107.0)
    # [1, 0, 0] (second layer) only B holds: b[1, 0, 0] = 100 + 9 = 109
    assert out[1, 0, 0] == pytest.approx(109.0)
    # Every entry inside A's block is the 1:3 mix; every entry outside it is B's value.
    inside = np.zeros(previous.shape, dtype=bool)
    inside[:1, :2, :] = True
    assert np.allclose(out[inside], (a.ravel() + 3 * b[:1, :2, :].ravel()) / 4)
    assert np.array_equal(out[~inside], b[~inside])


def test_entries_held_by_nobody_keep_previous_value():
    previous = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    small = np.ones((1, 2, 3))
    mid = np.full((2, 1, 3), 5.0)
    out = masked_average(previous, [small, mid], [2.0, 2.0])
    # [0, 0, :] held by both -> (1 + 5) / 2 = 3
    assert np.allclose(out[0, 0], 3.0)
    # [0, 1, :] only by small -> 1 ; [1, 0, :] only by mid -> 5
    assert np.allclose(out[0, 1], 1.0)
    assert np.allclose(out[1, 0], 5.0)
    # Qubits 2, 3 in layer 0 and qubits 1..3 in layer 1: untouched.
    assert np.array_equal(out[0, 2:], previous[0, 2:])
    assert np.array_equal(out[1, 1:], previous[1, 1:])
    # The input is not modified in place.
    assert np.array_equal(previous, np.arange(24, dtype=float).reshape(2, 4, 3))


def test_zero_weight_client_counts_as_not_holding():
    previous = np.full((1, 2, 3), 9.0)
    out = masked_average(previous, [np.zeros((1, 2, 3)), np.ones((1, 1, 3))], [0.0, 4.0])
    assert np.allclose(out[0, 0], 1.0)  # only the weighted client
    assert np.allclose(out[0, 1], 9.0)  # the zero-weight client's entry does not overwrite


def test_no_clients_returns_previous():
    previous = np.random.default_rng(0).normal(size=(2, 3, 3))
    assert np.array_equal(masked_average(previous, [], []), previous)


def test_identical_blocks_average_to_themselves():
    rng = np.random.default_rng(1)
    block = rng.normal(size=(2, 3, 3))
    out = masked_average(np.zeros((2, 3, 3)), [block, block.copy(), block.copy()], [1.0, 5.0, 0.5])
    assert np.allclose(out, block)


def test_proportional_weights_give_same_result():
    rng = np.random.default_rng(2)
    previous = rng.normal(size=(3, 4, 3))
    blocks = [rng.normal(size=(1, 2, 3)), rng.normal(size=(3, 4, 3)), rng.normal(size=(2, 3, 3))]
    weights = [10.0, 25.0, 7.0]
    base = masked_average(previous, blocks, weights)
    for factor in (1e-3, 0.5, 17.0, 1e6):
        assert np.allclose(masked_average(previous, blocks, [w * factor for w in weights]), base, atol=1e-12)


def test_result_stays_within_client_range():
    # A weighted mean lies between the smallest and largest contribution, entry by entry.
    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=(2, 3, 3)) for _ in range(4)]
    out = masked_average(np.zeros((2, 3, 3)), blocks, list(rng.uniform(1, 100, 4)))
    stack = np.stack(blocks)
    assert np.all(out >= stack.min(axis=0) - 1e-12)
    assert np.all(out <= stack.max(axis=0) + 1e-12)


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        masked_average(np.zeros((1, 2, 3)), [np.ones((1, 2, 3)), np.ones((1, 2, 3))], [1.0, -1.0])


def test_block_of_is_a_copy_of_the_leading_corner():
    glob = np.arange(3 * 4 * 3, dtype=float).reshape(3, 4, 3)
    blk = block_of(glob, 2, 3)
    assert blk.shape == (2, 3, 3)
    assert blk[1, 2, 0] == glob[1, 2, 0]
    blk[0, 0, 0] = -1.0
    assert glob[0, 0, 0] == 0.0
    # Round trip: averaging a single client's own block into the global tensor writes it back.
    out = masked_average(glob, [blk], [1.0])
    assert out[0, 0, 0] == -1.0
    assert np.array_equal(out[2], glob[2])


def test_init_scale_scales_the_initial_angles():
    from pqfl.federated.server import init_global
    from pqfl.rng import derive_rng

    default = init_global(3, 4, seed=7)
    # The default keeps the draws every earlier run started from: N(0, 0.3²) from the seeded stream.
    assert np.array_equal(default, derive_rng(7, "init-global").normal(0.0, 0.3, size=(3, 4, 3)))
    assert np.allclose(init_global(3, 4, seed=7, scale=0.6), 2.0 * default)
    assert np.array_equal(init_global(3, 4, seed=7, scale=0.0), np.zeros((3, 4, 3)))


def test_init_scale_is_validated():
    from pqfl.config import parse_config
    from pqfl.errors import PQFLInputError

    clients = [{"name": "a", "qubits": 2}]
    assert parse_config({"clients": clients, "federation": {"init_scale": 0.0}}).federation.init_scale == 0.0
    with pytest.raises(PQFLInputError, match="federation.init_scale"):
        parse_config({"clients": clients, "federation": {"init_scale": -0.1}})


def test_share_groups_fleet_by_encoding_and_by_hardware():
    kinds = [("amplitude", 6), ("angle", 4), ("amplitude", 6), ("iqp", 5), ("angle", 6), ("amplitude", 4)]
    profiles = [ClientProfile(name=f"c{i}", encoding=e, qubits=q) for i, (e, q) in enumerate(kinds)]
    assert share_groups(profiles, "fleet") == [0, 0, 0, 0, 0, 0]
    assert share_groups(profiles, "encoding") == [0, 1, 0, 2, 1, 0]
    assert share_groups(profiles, "hardware") == [0, 1, 0, 2, 3, 4]
    with pytest.raises(ValueError, match="fleet, encoding, hardware"):
        share_groups(profiles, "qubits")


def test_sharing_by_hardware_averages_only_within_a_group():
    """Two amplitude-6q clients and one angle-4q client: each group's tensor is its own
    clients' weighted average; the angle client's block never mixes with the others'."""
    a, b, c = np.full((2, 6, 3), 1.0), np.full((2, 6, 3), 4.0), np.full((3, 4, 3), -2.0)
    groups = share_groups(
        [ClientProfile(name="a", qubits=6), ClientProfile(name="b", qubits=6),
         ClientProfile(name="c", qubits=4, layers=3, encoding="angle")], "hardware"
    )  # fmt: skip
    out = grouped_robust_average(np.zeros((2, 3, 6, 3)), [a, b, c], [1.0, 2.0, 1.0], groups)
    np.testing.assert_allclose(out[0, :2], 3.0)  # (1·1 + 2·4) / 3
    np.testing.assert_allclose(out[0, 2], 0.0)  # no client of group 0 holds layer 3: kept
    np.testing.assert_allclose(out[1, :3, :4], -2.0)
    np.testing.assert_allclose(out[1, :, 4:], 0.0)


def test_grouped_average_keeps_groups_apart():
    rng = np.random.default_rng(3)
    previous = rng.normal(size=(3, 2, 3, 3))
    blocks = [rng.normal(size=shape) for shape in [(2, 3, 3), (1, 2, 3), (2, 2, 3), (1, 3, 3)]]
    weights, groups = [2.0, 1.0, 5.0, 3.0], [0, 1, 0, 1]
    out = grouped_robust_average(previous, blocks, weights, groups)
    for g in range(2):  # each group is the plain masked average of its own members
        idx = [n for n, gn in enumerate(groups) if gn == g]
        assert np.array_equal(out[g], masked_average(previous[g], [blocks[n] for n in idx], [weights[n] for n in idx]))
    assert np.array_equal(out[2], previous[2])  # nobody in group 2 uploaded
    assert not np.allclose(out[0], masked_average(previous[0], blocks, weights))  # mixing groups would differ
    # One group is exactly the fleet-wide average.
    assert np.array_equal(
        grouped_robust_average(previous[:1], blocks, weights, [0] * 4)[0], masked_average(previous[0], blocks, weights)
    )
    with pytest.raises(ValueError, match="one weight and one group per block"):
        grouped_robust_average(previous, blocks, weights, groups[:3])


def test_init_shared_gives_every_group_the_same_start():
    from pqfl.federated.server import init_global, init_shared

    G = init_shared(3, 4, seed=7, scale=0.3, groups=[0, 1, 0, 2])
    assert G.shape == (3, 3, 4, 3)
    for g in range(3):
        assert np.array_equal(G[g], init_global(3, 4, seed=7, scale=0.3))
    assert init_shared(3, 4, seed=7, scale=0.3, groups=[0, 0]).shape == (1, 3, 4, 3)

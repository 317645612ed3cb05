"""pqfl.federated.robust: Byzantine-robust server rules (median, trimmed mean, Krum, clipping) over masked blocks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pqfl.federated.aggregation import masked_average
from pqfl.federated.robust import (
    RULES,
    clip_update,
    coordinate_median,
    grouped_robust_average,
    krum_scores,
    multi_krum,
    robust_average,
    trimmed_mean,
)

OFFSET = np.arange(3, dtype=float)  # every block holds base + (0, 1, 2) along the Rot axis


def _masked():
    """Global (2, 3, 3) filled with -7 and five blocks of different shapes, each base + OFFSET.

    Who holds which (layer, qubit) entry, and the bases there:
      [0, 0]: A B C D E -> 1, 2, 99, 5, 11
      [0, 1]: A B C     -> 1, 2, 99
      [0, 2]: A         -> 1
      [1, 0]: C D       -> 99, 5
      [1, 1]: C         -> 99
      [1, 2]: nobody    -> keeps -7
    """
    previous = np.full((2, 3, 3), -7.0)
    shapes_bases = [((1, 3), 1.0), ((1, 2), 2.0), ((2, 2), 99.0), ((2, 1), 5.0), ((1, 1), 11.0)]
    blocks = [np.broadcast_to(base + OFFSET, (*shape, 3)).copy() for shape, base in shapes_bases]
    return previous, blocks


def _expected(bases):
    """The (2, 3, 3) tensor with base + OFFSET at held entries and -7 at the unheld one."""
    out = np.asarray(bases, dtype=float)[:, :, None] + OFFSET
    out[1, 2] = -7.0
    return out


def _random_blocks(rng, n, shape=(2, 3, 3)):
    return [rng.normal(size=shape) for _ in range(n)]


# ---------------------------------------------------------------- clip_update


def test_clip_update_scales_large_updates_to_the_clip_norm():
    update = np.array([[[3.0, 0.0, 4.0]], [[0.0, 12.0, 0.0]]])  # ‖·‖₂ = 13
    clipped = clip_update(update, 6.5)
    assert np.linalg.norm(clipped) == pytest.approx(6.5)
    assert np.allclose(clipped, update / 2)  # direction kept: 6.5 / 13 = 1/2
    rng = np.random.default_rng(0)
    big = rng.normal(size=(2, 3, 3)) * 10
    assert np.allclose(clip_update(big, 0.3), big * 0.3 / np.sqrt((big**2).sum()))


def test_clip_update_leaves_small_updates_and_rejects_bad_clip():
    update = np.array([[[0.3, 0.0, 0.4]]])  # norm 0.5
    assert np.array_equal(clip_update(update, 0.5), update)
    assert np.array_equal(clip_update(update, 2.0), update)
    assert np.array_equal(clip_update(np.zeros((1, 2, 3)), 1.0), np.zeros((1, 2, 3)))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="clip"):
            clip_update(update, bad)


# ---------------------------------------------------------------- coordinate median


def test_coordinate_median_hand_computed_with_masks():
    previous, blocks = _masked()
    out = coordinate_median(previous, blocks)
    # [0,0] sorted 1 2 5 11 99 -> 5; [0,1] 1 2 99 -> 2; [1,0] even count (5, 99) -> 52.
    assert np.array_equal(out, _expected([[5, 2, 1], [52, 99, 0]]))
    assert np.array_equal(previous, np.full((2, 3, 3), -7.0))  # not modified in place


def test_coordinate_median_equals_numpy_median_on_full_blocks():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 6):
        blocks = _random_blocks(rng, n)
        out = coordinate_median(np.zeros((2, 3, 3)), blocks)
        assert np.allclose(out, np.median(np.stack(blocks), axis=0))


def test_coordinate_median_no_blocks_and_nan_counts_as_not_held():
    previous = np.full((1, 2, 3), 4.0)
    assert np.array_equal(coordinate_median(previous, []), previous)
    a = np.array([[[1.0, np.nan, 1.0]]])
    b = np.array([[[3.0, 8.0, 5.0]]])
    out = coordinate_median(previous, [a, b])
    assert np.array_equal(out, [[[2.0, 8.0, 3.0], [4.0, 4.0, 4.0]]])


# ---------------------------------------------------------------- trimmed mean


@pytest.mark.parametrize(
    ("trim", "bases"),
    [
        # m=5 cuts floor(1.0)=1 each end: (2+5+11)/3 = 6; m=3 cuts 0: (1+2+99)/3 = 34; m=2: 52.
        (0.2, [[6, 34, 1], [52, 99, 0]]),
        # m=5 cuts 1: 6; m=3 cuts floor(1.02)=1: 2; m=2 cuts floor(0.68)=0 (not rounded): 52.
        (0.34, [[6, 2, 1], [52, 99, 0]]),
        # no trimming: the unweighted mean, (1+2+5+11+99)/5 = 23.6.
        (0.0, [[23.6, 34, 1], [52, 99, 0]]),
    ],
)
def test_trimmed_mean_hand_computed_with_masks(trim, bases):
    previous, blocks = _masked()
    assert np.allclose(trimmed_mean(previous, blocks, trim), _expected(bases))


def test_trimmed_mean_matches_scipy_and_plain_mean():
    rng = np.random.default_rng(2)
    for n in (3, 7, 10):
        blocks = _random_blocks(rng, n)
        stacked = np.stack(blocks)
        for trim in (0.1, 0.2, 0.3, 0.45):
            out = trimmed_mean(np.zeros((2, 3, 3)), blocks, trim)
            assert np.allclose(out, stats.trim_mean(stacked, trim, axis=0)), (n, trim)
        assert np.allclose(trimmed_mean(np.zeros((2, 3, 3)), blocks, 0.0), stacked.mean(axis=0))


def test_trimmed_mean_zero_equals_equal_weight_masked_average():
    previous, blocks = _masked()
    assert np.allclose(trimmed_mean(previous, blocks, 0.0), masked_average(previous, blocks, [1.0] * len(blocks)))


@pytest.mark.parametrize("trim", [0.5, 0.7, -0.1])
def test_trimmed_mean_rejects_bad_trim(trim):
    previous, blocks = _masked()
    with pytest.raises(ValueError, match="trim"):
        trimmed_mean(previous, blocks, trim)


# ---------------------------------------------------------------- Krum


def _line(values, shape=(1, 1, 3)):
    """Blocks of ``shape`` that are zero except [0, 0, 0] = value."""
    blocks = []
    for v in values:
        b = np.zeros(shape)
        b[0, 0, 0] = v
        blocks.append(b)
    return blocks


def test_krum_scores_hand_computed():
    # values 0 1 3 7 20, n=5, f=1 -> sum over the n-f-2 = 2 nearest squared distances:
    # 0: 1+9; 1: 1+4; 3: 4+9; 7: 16+36; 20: 169+289
    scores = krum_scores(_line([0, 1, 3, 7, 20]), byzantine=1)
    assert np.array_equal(scores, [10, 5, 13, 52, 458])
    # f=0 -> 3 nearest: 0: 1+9+49; 1: 1+4+36; 3: 4+9+16; 7: 16+36+49; 20: 169+289+361
    assert np.array_equal(krum_scores(_line([0, 1, 3, 7, 20]), byzantine=0), [59, 41, 29, 101, 819])


def test_krum_flags_the_outlier_and_returns_an_honest_block():
    rng = np.random.default_rng(3)
    honest = [rng.normal(scale=0.1, size=(2, 3, 3)) for _ in range(4)]
    outlier = np.full((2, 3, 3), 50.0)
    blocks = honest[:2] + [outlier] + honest[2:]
    scores = krum_scores(blocks, byzantine=1)
    assert int(np.argmax(scores)) == 2
    out = robust_average(np.zeros((2, 3, 3)), blocks, [1.0] * 5, rule="krum", byzantine=1)
    assert any(np.array_equal(out, h) for h in honest)
    assert np.abs(out).max() < 1.0


def test_krum_distances_use_only_the_common_prefix():
    # Blocks 0..3 are (1, 2, 3); block 4 is (1, 1, 3), so the common prefix is entry [0, 0, :].
    # There the values are 0 1 3 7 20 -> scores 10 5 13 52 458 and Krum picks block 1. Block 1
    # also holds 1000 at [0, 1, 0]; were that entry used (pairwise or zero-padded) block 1's
    # score would exceed 10^6 and Krum would pick block 2 instead.
    blocks = _line([0, 1, 3, 7], shape=(1, 2, 3)) + _line([20])
    blocks[1][0, 1, 0] = 1000.0
    assert np.array_equal(krum_scores(blocks, byzantine=1), [10, 5, 13, 52, 458])
    previous = np.full((1, 3, 3), -7.0)
    out = robust_average(previous, blocks, [1.0] * 5, rule="krum", byzantine=1)
    expected = previous.copy()
    expected[0, :2] = blocks[1][0]
    assert np.array_equal(out, expected)


def test_krum_ties_go_to_the_lower_index():
    # Blocks 0, 1, 4 share value 5 on the common prefix (score 0 each); 1 and 4 differ beyond it.
    blocks = _line([5]) + _line([5, 0, 10, 5], shape=(1, 2, 3))
    blocks[1][0, 1, 0], blocks[4][0, 1, 0] = 111.0, 444.0
    previous = np.full((1, 2, 3), -7.0)
    out = multi_krum(previous, blocks, [1.0] * 5, byzantine=1, keep=1)
    assert np.array_equal(out, [[[5.0, 0.0, 0.0], [-7.0, -7.0, -7.0]]])  # block 0, not 1 or 4
    out = multi_krum(previous, blocks, [1.0] * 5, byzantine=1, keep=2)  # blocks 0 and 1
    assert np.array_equal(out, [[[5.0, 0.0, 0.0], [111.0, 0.0, 0.0]]])


def test_multi_krum_hand_computed_weighted_average_of_kept_blocks():
    blocks = _line([0, 1, 3, 7, 20])  # scores 10 5 13 52 458
    weights = [1.0, 1.0, 2.0, 1.0, 1.0]
    previous = np.zeros((1, 1, 3))
    # keep=3 -> blocks 1, 0, 2: (1*0 + 1*1 + 2*3) / 4 = 1.75
    assert multi_krum(previous, blocks, weights, byzantine=1, keep=3)[0, 0, 0] == pytest.approx(1.75)
    # keep=None -> n - f = 4 -> blocks 1, 0, 2, 3: (0 + 1 + 6 + 7) / 5 = 2.8
    assert multi_krum(previous, blocks, weights, byzantine=1)[0, 0, 0] == pytest.approx(2.8)
    out = robust_average(previous, blocks, weights, rule="multi_krum", byzantine=1, keep=3)
    assert out[0, 0, 0] == pytest.approx(1.75)


def test_multi_krum_keeping_all_equals_masked_average():
    previous, blocks = _masked()
    rng = np.random.default_rng(4)
    blocks = [b + rng.normal(size=b.shape) for b in blocks]
    weights = [3.0, 1.0, 2.0, 5.0, 4.0]
    out = multi_krum(previous, blocks, weights, byzantine=1, keep=5)
    assert np.allclose(out, masked_average(previous, blocks, weights))
    with pytest.raises(ValueError, match="keep"):
        multi_krum(previous, blocks, weights, byzantine=1, keep=6)


def test_krum_needs_2f_plus_3_blocks():
    blocks = _line([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"byzantine f=1.*n=4|n=4.*byzantine f=1"):
        krum_scores(blocks, byzantine=1)
    for rule in ("krum", "multi_krum"):
        with pytest.raises(ValueError, match="2f \\+ 3"):
            robust_average(np.zeros((1, 1, 3)), blocks, [1.0] * 4, rule=rule, byzantine=1)
    assert krum_scores(blocks, byzantine=0).shape == (4,)  # 4 >= 2*0 + 3


# ---------------------------------------------------------------- robust_average


def _clip_case():
    """previous (1, 2, 3); A (1, 1, 3) moves +2 on the middle Rot angle (norm 2); B (1, 2, 3) has
    update [[0, -600, 0], [0, 0, 800]] (norm 1000), which clip=10 scales to [[0, -6, 0], [0, 0, 8]]."""
    previous = np.array([[[10.0, 10.0, 10.0], [20.0, 20.0, 20.0]]])
    a = np.array([[[10.0, 12.0, 10.0]]])
    b = np.array([[[10.0, -590.0, 10.0], [20.0, 20.0, 820.0]]])
    return previous, [a, b]


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed_mean"])
def test_robust_average_clips_each_update_before_the_rule(rule):
    previous, blocks = _clip_case()
    out = robust_average(previous, blocks, [1.0, 1.0], rule=rule, clip=10.0)
    # [0,0]: A = (10, 12, 10), clipped B = (10, 4, 10) -> (10, 8, 10); [0,1]: only B, (20, 20, 28).
    assert np.allclose(out, [[[10.0, 8.0, 10.0], [20.0, 20.0, 28.0]]])
    unclipped = robust_average(previous, blocks, [1.0, 1.0], rule=rule)
    assert np.allclose(unclipped, [[[10.0, -289.0, 10.0], [20.0, 20.0, 820.0]]])


def test_robust_average_dispatches_to_each_rule():
    previous, blocks = _masked()
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.array_equal(robust_average(previous, blocks, weights), masked_average(previous, blocks, weights))
    assert np.array_equal(robust_average(previous, blocks, weights, rule="median"), coordinate_median(previous, blocks))
    assert np.allclose(
        robust_average(previous, blocks, weights, rule="trimmed_mean", trim=0.34), trimmed_mean(previous, blocks, 0.34)
    )
    assert np.array_equal(robust_average(previous, [], [], rule="krum", byzantine=3), previous)


def test_unknown_rule_names_the_rules():
    previous, blocks = _masked()
    with pytest.raises(ValueError, match="mean, median, trimmed_mean, krum, multi_krum"):
        robust_average(previous, blocks, [1.0] * 5, rule="geometric_median")
    assert RULES == ("mean", "median", "trimmed_mean", "krum", "multi_krum")


# ---------------------------------------------------------------- grouped_robust_average


def test_grouped_robust_average_handles_groups_independently():
    previous = np.stack([np.full((1, 2, 3), -(g + 1.0)) for g in range(3)])  # group g holds -(g+1)
    blocks = [np.full((1, 2, 3), 1.0), np.full((1, 1, 3), 7.0), np.full((1, 2, 3), 100.0), np.full((1, 2, 3), 2.0)]
    groups = [0, 1, 0, 0]
    out = grouped_robust_average(previous, blocks, [1.0] * 4, groups, rule="median")
    assert np.array_equal(out[0], np.full((1, 2, 3), 2.0))  # median of 1, 100, 2; the 7 stays in group 1
    assert np.array_equal(out[1], [[[7.0] * 3, [-2.0] * 3]])  # only [0,0] held; [0,1] keeps -2
    assert np.array_equal(out[2], previous[2])  # no uploads
    mean = grouped_robust_average(previous, blocks, [1.0] * 4, groups)
    assert np.allclose(mean[0], np.full((1, 2, 3), 103.0 / 3))


def test_grouped_krum_with_too_few_blocks_in_a_group_raises():
    previous = np.zeros((2, 1, 1, 3))
    blocks = _line([0, 2, 3, 4, 10]) + _line([5, 6])  # group 0 scores 13 5 2 5 85
    groups = [0] * 5 + [1] * 2
    with pytest.raises(ValueError, match="n=2"):
        grouped_robust_average(previous, blocks, [1.0] * 7, groups, rule="krum", byzantine=1)
    out = grouped_robust_average(previous, blocks[:5], [1.0] * 5, groups[:5], rule="krum", byzantine=1)
    assert out[0, 0, 0, 0] == 3.0 and np.array_equal(out[1], previous[1])  # block 2 wins; group 1 untouched

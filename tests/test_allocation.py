"""Workload allocation rules (reference spec §2): CWA, HECWA, water-filling, make-span metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mecsim.allocation import (
    ALLOCATORS,
    allocate,
    allocate_members,
    cwa,
    finish_times,
    hecwa,
    subset_masks,
    waterfill,
)


# -- subset enumeration ---------------------------------------------------------------------------
def test_subset_masks_order_for_three_servers():
    assert subset_masks(3).astype(int).tolist() == [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 1],
    ]


def test_subset_masks_order_for_five_servers_matches_reference_indices():
    masks = subset_masks(5)
    as_sets = [tuple(np.flatnonzero(row)) for row in masks]
    assert as_sets[:5] == [(0,), (1,), (2,), (3,), (4,)]
    assert as_sets[5] == (0, 1) and as_sets[14] == (3, 4)
    assert as_sets[15] == (0, 1, 2) and as_sets[24] == (2, 3, 4)
    assert as_sets[25] == (0, 1, 2, 3) and as_sets[29] == (1, 2, 3, 4)
    assert as_sets[30] == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_subset_masks_count_and_uniqueness(n):
    masks = subset_masks(n)
    assert masks.shape == (2**n - 1, n)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert len({tuple(r) for r in masks}) == 2**n - 1
    sizes = masks.sum(axis=1)
    assert np.all(np.diff(sizes) >= 0)  # by size
    assert np.all(sizes >= 1)


def test_subset_masks_are_read_only():
    with pytest.raises(ValueError):
        subset_masks(3)[0, 0] = 0.0


# -- the worked examples of spec §2.3 --------------------------------------------------------------
def test_worked_example_two_servers():
    w, d = np.array([0.0, 0.5]), np.array([0.2, 0.1])
    m = np.ones((1, 2))
    x = cwa(w, d, m)
    np.testing.assert_allclose(x, [[1.0, 0.0]], atol=1e-12)
    # the code's metric charges the idle server its wait; the physical one does not
    assert finish_times(w, d, x, m, counts_idle=True)[0] == pytest.approx(0.5)
    assert finish_times(w, d, x, m, counts_idle=False)[0] == pytest.approx(0.2)
    np.testing.assert_allclose(waterfill(w, d, m), [[1.0, 0.0]], atol=1e-12)


def test_worked_example_three_servers():
    w, d = np.array([0.0, 0.05, 0.6]), np.array([0.2, 0.2, 0.1])
    m = np.ones((1, 3))
    # unconstrained solve: T_full = 0.3625, x = (1.8125, 1.5625, -2.375) -> clip and renormalise
    x = cwa(w, d, m)[0]
    np.testing.assert_allclose(x, [1.8125 / 3.375, 1.5625 / 3.375, 0.0], rtol=1e-12)
    np.testing.assert_allclose(x, [0.537, 0.463, 0.0], atol=5e-4)
    assert finish_times(w, d, x[None], m, counts_idle=True)[0] == pytest.approx(0.6)
    physical = finish_times(w, d, x[None], m, counts_idle=False)[0]
    assert physical == pytest.approx(0.1426, abs=5e-5)
    assert physical == pytest.approx(0.05 + 1.5625 / 3.375 * 0.2)  # server 1 finishes last
    # one-pass clipping leaves unequal finish times
    finish = w + x * d
    assert finish[0] != pytest.approx(finish[1])

    xw = waterfill(w, d, m)[0]
    np.testing.assert_allclose(xw, [0.625, 0.375, 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose((w + xw * d)[:2], [0.125, 0.125], rtol=1e-12)
    assert finish_times(w, d, xw[None], m, counts_idle=False)[0] == pytest.approx(0.125)
    assert finish_times(w, d, xw[None], m, counts_idle=True)[0] == pytest.approx(0.6)


def test_cwa_equal_finish_times_when_no_clipping():
    w, d = np.array([0.1, 0.0, 0.05]), np.array([0.3, 0.2, 0.4])
    m = np.ones((1, 3))
    # T_full = (1 + 0.1/0.3 + 0 + 0.05/0.4) / (1/0.3 + 1/0.2 + 1/0.4)
    t_full = (1 + 0.1 / 0.3 + 0.05 / 0.4) / (1 / 0.3 + 1 / 0.2 + 1 / 0.4)
    x = cwa(w, d, m)[0]
    np.testing.assert_allclose(w + x * d, t_full, rtol=1e-12)
    np.testing.assert_allclose(x, (t_full - w) / d, rtol=1e-12)


def test_hecwa_is_inverse_duration_and_ignores_wait():
    d = np.array([0.2, 0.2, 0.1])
    m = np.ones((1, 3))
    for w in (np.zeros(3), np.array([0.0, 0.05, 0.6]), np.array([5.0, 0.0, 1.0])):
        np.testing.assert_allclose(hecwa(w, d, m), [[0.25, 0.25, 0.5]], rtol=1e-12)
    # over a pair: x ∝ 1/D -> D=(0.1, 0.3): (0.75, 0.25)
    d2 = np.array([0.1, 0.5, 0.3])
    np.testing.assert_allclose(hecwa(np.zeros(3), d2, np.array([[1.0, 0.0, 1.0]])), [[0.75, 0.0, 0.25]])


def test_hecwa_equals_cwa_when_waits_are_equal():
    d = np.array([0.2, 0.15, 0.1, 0.4])
    w = np.full(4, 0.3)
    masks = subset_masks(4)
    np.testing.assert_allclose(hecwa(w, d, masks), cwa(w, d, masks), rtol=1e-12, atol=1e-15)


def test_singletons_get_the_whole_task_under_every_rule():
    w, d = np.array([0.3, 0.0, 0.7]), np.array([0.2, 0.1, 0.05])
    eye = np.eye(3)
    for rule in ALLOCATORS:
        np.testing.assert_allclose(allocate(rule, w, d, eye), eye, atol=1e-12)


def test_allocate_unknown_rule_lists_allowed():
    with pytest.raises(ValueError) as info:
        allocate("greedy", np.zeros(2), np.ones(2), np.ones((1, 2)))
    msg = str(info.value)
    assert "greedy" in msg
    for rule in ("cwa", "hecwa", "waterfill"):
        assert rule in msg


def test_waterfill_ignores_non_members_with_small_waits():
    # server 0 has the smallest wait but is not in the subset
    w, d = np.array([0.0, 0.2, 0.3]), np.array([0.1, 0.2, 0.2])
    x = waterfill(w, d, np.array([[0.0, 1.0, 1.0]]))[0]
    assert x[0] == 0.0
    # both active: T = (1 + 1 + 1.5) / (5 + 5) = 0.35
    np.testing.assert_allclose(x, [0.0, 0.75, 0.25], rtol=1e-12)


def test_finish_times_counts_idle_members_only_when_asked():
    w, d = np.array([0.1, 0.9, 0.0]), np.array([0.2, 0.2, 0.2])
    masks = np.array([[1.0, 1.0, 0.0]])
    x = np.array([[1.0, 0.0, 0.0]])
    assert finish_times(w, d, x, masks, counts_idle=True)[0] == pytest.approx(0.9)
    assert finish_times(w, d, x, masks, counts_idle=False)[0] == pytest.approx(0.3)


def test_batch_rows_equal_row_by_row():
    rng = np.random.default_rng(7)
    w, d = rng.uniform(0, 1, 5), rng.uniform(0.05, 0.5, 5)
    masks = subset_masks(5)
    for rule in ALLOCATORS:
        batch = allocate(rule, w, d, masks)
        rows = np.vstack([allocate(rule, w, d, m[None]) for m in masks])
        np.testing.assert_allclose(batch, rows, rtol=1e-12, atol=1e-14)


# -- properties -----------------------------------------------------------------------------------
@st.composite
def problems(draw, min_members=1):
    n = draw(st.integers(2, 6))
    w = np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n)))
    d = np.array(draw(st.lists(st.floats(0.01, 2.0), min_size=n, max_size=n)))
    members = draw(st.sets(st.integers(0, n - 1), min_size=min_members, max_size=n))
    mask = np.zeros(n)
    mask[sorted(members)] = 1.0
    return w, d, mask[None]


def _t_full(w, d, mask):
    m = mask[0] > 0
    return (1.0 + np.sum(w[m] / d[m])) / np.sum(1.0 / d[m])


SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(problems())
def test_fractions_are_a_distribution_inside_the_subset(problem):
    w, d, mask = problem
    for rule in ALLOCATORS:
        x = allocate(rule, w, d, mask)[0]
        assert np.all(np.isfinite(x))
        assert np.all(x >= 0)
        assert np.all(x[mask[0] == 0] == 0)
        assert x.sum() == pytest.approx(1.0, abs=1e-9)


@SETTINGS
@given(problems(min_members=2))
def test_cwa_equals_waterfill_without_clipping(problem):
    w, d, mask = problem
    m = mask[0] > 0
    t_full = _t_full(w, d, mask)
    assume(np.all(t_full - w[m] > 1e-9))  # unconstrained CWA has no negative entry
    x_cwa = cwa(w, d, mask)
    x_wf = waterfill(w, d, mask)
    np.testing.assert_allclose(x_cwa, x_wf, rtol=1e-9, atol=1e-9)
    span = finish_times(w, d, x_cwa, mask, counts_idle=True)[0]
    assert span == pytest.approx(t_full, rel=1e-9)


@SETTINGS
@given(problems(min_members=2))
def test_waterfill_is_never_worse_than_cwa_and_levels_active_servers(problem):
    w, d, mask = problem
    x_wf = waterfill(w, d, mask)
    x_cwa = cwa(w, d, mask)
    phys_wf = finish_times(w, d, x_wf, mask, counts_idle=False)[0]
    phys_cwa = finish_times(w, d, x_cwa, mask, counts_idle=False)[0]
    assert phys_wf <= phys_cwa + 1e-9
    active = x_wf[0] > 0
    finish = (w + x_wf[0] * d)[active]
    np.testing.assert_allclose(finish, phys_wf, rtol=1e-9, atol=1e-12)
    # members left idle could not have helped: they would start at or after the level
    idle = (mask[0] > 0) & ~active
    assert np.all(w[idle] >= phys_wf - 1e-9)


@SETTINGS
@given(problems(min_members=2), st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6))
def test_waterfill_beats_any_feasible_split(problem, raw):
    w, d, mask = problem
    n = w.shape[0]
    weights = np.array(raw[:n]) * mask[0]
    assume(weights.sum() > 1e-3)
    x = weights / weights.sum()
    phys_any = finish_times(w, d, x[None], mask, counts_idle=False)[0]
    phys_wf = finish_times(w, d, waterfill(w, d, mask), mask, counts_idle=False)[0]
    assert phys_wf <= phys_any + 1e-9


@SETTINGS
@given(problems(min_members=2))
def test_cwa_attains_the_counts_idle_optimum(problem):
    # under the reference metric the optimum is max(T_full, max W) (spec §2.3)
    w, d, mask = problem
    m = mask[0] > 0
    target = max(_t_full(w, d, mask), w[m].max())
    for rule in ("cwa", "waterfill"):
        x = allocate(rule, w, d, mask)
        assert finish_times(w, d, x, mask, counts_idle=True)[0] == pytest.approx(target, rel=1e-9, abs=1e-12)


def test_brute_force_grid_agrees_with_waterfill():
    w, d = np.array([0.0, 0.05, 0.6]), np.array([0.2, 0.2, 0.1])
    best = np.inf
    steps = 200
    for i, j in itertools.product(range(steps + 1), repeat=2):
        if i + j > steps:
            continue
        x = np.array([i, j, steps - i - j]) / steps
        best = min(best, finish_times(w, d, x[None], np.ones((1, 3)), counts_idle=False)[0])
    assert best == pytest.approx(0.125, abs=2e-3)
    assert best >= 0.125 - 1e-12


@SETTINGS
@given(problems())
def test_plain_python_allocation_equals_the_array_rules(problem):
    """`allocate_members` (the event model's per-task path) against `allocate` on the same subset."""
    w, d, mask = problem
    members = np.flatnonzero(mask[0]).tolist()
    for rule in ALLOCATORS:
        got = allocate_members(rule, w.tolist(), d.tolist(), members)
        assert isinstance(got, list) and len(got) == len(w)
        # a small share is a difference of O(1) levels (cancellation), so its rounding is absolute, at the
        # scale of the whole task (shares sum to 1)
        np.testing.assert_allclose(got, allocate(rule, w, d, mask)[0], rtol=1e-12, atol=1e-12)

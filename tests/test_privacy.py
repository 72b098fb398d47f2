"""Private-ApproxIFER: Laplace noise scale, sensitivities, composition across workers, and an empirical audit."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from approxifer import privacy
from approxifer.codec import encoder_matrix
from approxifer.privacy import (
    PrivacyCost,
    advanced_composition,
    audit,
    clip_logits,
    clipped_logits_l1_sensitivity,
    discrete_laplace,
    epsilon_worker_for_total,
    laplace_grid,
    laplace_mechanism,
    laplace_scale,
    queries_reach_all_workers,
    round_privacy,
    softmax,
    softmax_l1_sensitivity,
    textbook_laplace,
    workers_per_query,
)

# Configurations of the paper: straggler-only N = K + S, Byzantine K = 12 with N = 2K + 2E - 1 or 2K + 2E.
PAPER_CONFIGS = [(8, 9), (10, 11), (12, 13), (8, 10), (8, 11), (12, 25), (12, 26), (12, 27), (12, 28), (12, 30)]


def scalar_laplace(epsilon: float, l1_sensitivity: float):
    """A mechanism on scalars x (sensitivity 1 when |x - x'| <= 1), noised with the given calibration."""

    def mechanism(x, rng, size):
        return laplace_mechanism(np.full((size, 1), float(x)), epsilon, l1_sensitivity, rng)[:, 0]

    return mechanism


def discrete_laplace_cdf(z: np.ndarray, units: int) -> np.ndarray:
    """P[Z <= z] for the discrete Laplace of scale `units`: q^-z / (1 + q) below 0, 1 - q^(z+1) / (1 + q) from 0."""
    q = math.exp(-1 / units)
    z = np.asarray(z, np.float64)
    return np.where(z < 0, q ** (-z) / (1 + q), 1 - q ** (z + 1) / (1 + q))


# ---------------------------------------------------------------- the release in floating point


@pytest.mark.parametrize(
    ("x", "x_prime", "l1_sensitivity"),
    [(0.0, 1.0, 1.0), (0.25, 0.75, 2.0)],  # a unit-sensitivity scalar; one probability entry (softmax, Δ = 2)
)
def test_the_textbook_sampler_releases_what_a_neighbour_never_can(x, x_prime, l1_sensitivity):
    """Mironov 2012: numpy's x + Laplace sample reaches different sets of doubles from x and x'. Most releases of x
    are impossible from x' (issue 35 measured 81.6 % and 77.6 %): one release rules x' out, an unbounded loss."""
    fraction = privacy.impossible_fraction(x, x_prime, 1.0, l1_sensitivity, mechanism="textbook", n_samples=4000, rng=0)
    assert 0.7 < fraction < 0.9, fraction
    # the reachability search has no false alarms: releases of x' itself are all reachable from x'
    assert privacy.impossible_fraction(x, x, 1.0, l1_sensitivity, mechanism="textbook", n_samples=500, rng=1) == 0
    # and the release is the grid mechanism's: none of its releases rules a neighbour out
    assert privacy.impossible_fraction(x, x_prime, 1.0, l1_sensitivity, mechanism="grid", n_samples=20_000, rng=0) == 0


def test_the_attack_replays_numpys_sampler_bit_for_bit():
    """The attack's model of numpy's Laplace sampler gives exactly numpy's samples from the same uniforms."""
    u = np.random.default_rng(5).random(20_000)
    samples = np.random.default_rng(5).laplace(0.0, 0.7, 20_000)
    replay = [privacy._textbook_noise(int(v * 2**53), 0.7) for v in u]
    np.testing.assert_array_equal(replay, samples)
    np.testing.assert_array_equal(textbook_laplace(np.zeros(5), 1.0, 0.7, rng=5), samples[:5])


@pytest.mark.parametrize(
    ("epsilon", "l1_sensitivity", "size"),
    [(1.0, 2.0, 10), (0.1, 2.0, 10), (100.0, 2.0, 10), (30.0, 100.0, 10), (1.0, 1.0, 1), (1e-6, 3.0, 7), (5e5, 1, 1)],
)
def test_grid_calibration_achieves_epsilon(epsilon, l1_sensitivity, size):
    grid = laplace_grid(epsilon, l1_sensitivity, size)
    gamma = Fraction(2) ** grid.k
    assert grid.step == float(gamma) and grid.scale == float(grid.units * gamma)
    index_sensitivity = math.floor(Fraction(l1_sensitivity) / gamma) + size
    assert Fraction(index_sensitivity, grid.units) <= Fraction(epsilon)  # exactly, not up to rounding
    assert grid.epsilon == pytest.approx(index_sensitivity / grid.units, rel=1e-15) and grid.epsilon <= epsilon
    b = laplace_scale(epsilon, l1_sensitivity)
    assert b <= grid.scale <= b * (1 + 2**-18)  # the grid costs at most a relative 2^-18 of noise
    assert grid.epsilon >= epsilon * (1 - 2**-18)  # and gives away at most as little of the budget


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12),
    st.floats(0.01, 100.0),
    st.floats(0.01, 50.0),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_grid_rounding_moves_neighbours_by_at_most_the_index_sensitivity(size, epsilon, l1, seed, on_edges):
    """Neighbours with ||x - x'||_1 <= Δ (also placed just beside half-steps, where rounding jumps) have grid indices
    at most floor(Δ/γ) + d apart: the bound the calibration pays for."""
    grid = laplace_grid(epsilon, l1, size)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size)
    if on_edges:  # just below a half step: rounding goes down for x, up for x + a hair
        x = (np.round(x / grid.step) + 0.5) * grid.step - grid.step * 2**-30
    direction = rng.normal(size=size)
    x_prime = x + direction / np.abs(direction).sum() * l1
    assert np.abs(x_prime - x).sum() <= l1 * (1 + 1e-12)
    index = privacy._grid_index(x, grid)
    index_prime = privacy._grid_index(x_prime, grid)
    assert np.abs(index - index_prime).sum() <= math.floor(Fraction(l1) / Fraction(2) ** grid.k) + size
    exact = [math.floor(Fraction(v) / Fraction(2) ** grid.k + Fraction(1, 2)) for v in x]  # nearest, ties up
    np.testing.assert_array_equal(index, exact)


def test_grid_release_privacy_loss_is_bounded_on_every_output():
    """Exhaustive over the outputs: the log-ratio of the two output pmfs, sum_i (|j_i - r'_i| - |j_i - r_i|)/T, is
    constant outside [min(r, r'), max(r, r')] per value, so checking every integer in between checks them all."""
    epsilon, l1 = 1.0, 2.0
    a, b = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.05, 0.9])  # two softmax outputs, ℓ1 distance 1.7
    grid = laplace_grid(epsilon, l1, a.size)
    r, r_prime = privacy._grid_index(a, grid), privacy._grid_index(b, grid)
    worst = 0.0
    for ri, rpi in zip(r, r_prime, strict=True):
        j = np.arange(min(ri, rpi) - 2, max(ri, rpi) + 3)
        worst += np.max((np.abs(j - rpi) - np.abs(j - ri)) / grid.units)
    assert worst <= grid.epsilon <= epsilon
    assert worst == pytest.approx(np.abs(a - b).sum() / grid.scale, rel=1e-5)  # attained: the bound is tight


@pytest.mark.parametrize("units", [1, 2, 5])
def test_discrete_laplace_matches_its_pmf(units):
    n, m = 200_000, 8 * units  # cells: Z <= -m, each integer in between, Z >= m

    def counts(sample):
        return np.bincount(np.clip(sample, -m, m) + m, minlength=2 * m + 1)

    cdf = discrete_laplace_cdf(np.arange(-m, m + 1), units)
    expected = np.diff(np.concatenate([[0.0], cdf[:-1], [1.0]])) * n
    z = discrete_laplace(units, n, rng=0)
    assert z.dtype == np.int64 and z.shape == (n,)
    assert stats.chisquare(counts(z), expected).pvalue > 1e-3
    assert stats.chisquare(counts(discrete_laplace(units + 1, n, rng=0)), expected).pvalue < 1e-6  # power


def test_laplace_noise_has_the_calibrated_scale():
    grid = laplace_grid(0.5, 2.0, 1)
    noise = laplace_mechanism(np.zeros((200_000, 1)), epsilon=0.5, l1_sensitivity=2.0, rng=0)[:, 0]
    assert laplace_scale(0.5, 2.0) == 4.0 and grid.scale == pytest.approx(4.0, rel=2**-18)
    assert np.all(np.ldexp(noise, -grid.k) == np.round(np.ldexp(noise, -grid.k)))  # on the grid
    assert stats.kstest(noise, "laplace", args=(0, grid.scale)).pvalue > 1e-3
    assert stats.kstest(noise, "laplace", args=(0, 1.05 * grid.scale)).pvalue < 1e-6  # a 5 % wrong scale fails
    assert stats.kstest(noise, "laplace", args=(0, grid.scale / 1.05)).pvalue < 1e-6
    assert np.mean(np.abs(noise)) == pytest.approx(4.0, rel=0.01)  # E|L| = b
    assert abs(np.mean(noise)) < 0.05


def test_opendp_release_agrees_in_distribution_with_the_seeded_one():
    """OpenDP (the operating system's randomness) and the seeded sampler release the same grid distribution."""
    values, epsilon, l1 = np.full((20, 1000), 0.3), 1.0, 2.0
    grid = laplace_grid(epsilon, l1, 1000)
    ours = np.ldexp(laplace_mechanism(values, epsilon, l1, rng=0), -grid.k).ravel()
    theirs = np.ldexp(privacy.laplace_release(values, epsilon, l1), -grid.k).ravel()
    assert np.all(theirs == np.round(theirs))  # OpenDP's releases lie on the same grid
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4
    wider = np.ldexp(laplace_mechanism(values, epsilon / 1.5, l1 * 1.0, rng=1), -grid.k).ravel()
    assert stats.ks_2samp(wider, theirs).pvalue < 1e-6  # the comparison can tell a 1.5 times wider noise apart
    import opendp.prelude as dp

    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=1000), dp.l1_distance(T=float)
    certified = dp.m.make_laplace(*space, scale=grid.scale, k=grid.k).map(l1)
    assert certified <= epsilon and certified == pytest.approx(grid.epsilon, rel=1e-6)  # OpenDP's own accounting


def test_laplace_mechanism_adds_noise_to_values_and_keeps_shape():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = laplace_mechanism(values, 1.0, 1.0, rng=np.random.default_rng(1))
    assert out.shape == (2, 3) and out.dtype == np.float64
    noise = laplace_mechanism(np.zeros((2, 3)), 1.0, 1.0, rng=np.random.default_rng(1))
    np.testing.assert_allclose(out - values, noise)
    assert laplace_mechanism(np.zeros((0, 3)), 1.0, 1.0, rng=0).shape == (0, 3)
    assert laplace_mechanism(2.5, 1.0, 1.0, rng=0).shape == ()


def test_seeded_reproducibility():
    a = laplace_mechanism(np.zeros(100), 1.0, 2.0, rng=7)
    b = laplace_mechanism(np.zeros(100), 1.0, 2.0, rng=np.random.default_rng(7))
    c = laplace_mechanism(np.zeros(100), 1.0, 2.0, rng=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    rng = np.random.default_rng(7)  # a Generator is advanced, not re-seeded: two calls give fresh noise
    assert not np.allclose(
        laplace_mechanism(np.zeros(100), 1.0, 2.0, rng), laplace_mechanism(np.zeros(100), 1.0, 2.0, rng)
    )


# ---------------------------------------------------------------- sensitivities


def test_softmax_l1_sensitivity_bounds_random_and_extreme_pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(scale=10, size=(5000, 10))
    b = rng.normal(scale=10, size=(5000, 10))
    dist = np.abs(softmax(a) - softmax(b)).sum(axis=-1)
    assert softmax_l1_sensitivity() == 2.0
    assert dist.max() <= softmax_l1_sensitivity() + 1e-12
    extreme = np.abs(softmax([100.0, 0.0, 0.0]) - softmax([0.0, 100.0, 0.0])).sum()
    assert extreme > 2 - 1e-12  # the bound is attained: it cannot be lowered


def test_softmax_is_stable_and_matches_scipy():
    z = np.random.default_rng(1).normal(size=(4, 7)) * 50 + 1000  # exp(1000) overflows without the shift
    p = softmax(z)
    np.testing.assert_allclose(p, special.softmax(z, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)


def test_clipped_logits_l1_sensitivity_bounds_random_and_extreme_pairs():
    c, C = 3.0, 10
    rng = np.random.default_rng(2)
    a = rng.normal(scale=10, size=(5000, C))
    b = rng.normal(scale=10, size=(5000, C))
    dist = np.abs(clip_logits(a, c) - clip_logits(b, c)).sum(axis=-1)
    assert clipped_logits_l1_sensitivity(c, C) == 2 * c * C
    assert dist.max() <= clipped_logits_l1_sensitivity(c, C)
    extreme = np.abs(clip_logits(np.full(C, 1e6), c) - clip_logits(np.full(C, -1e6), c)).sum()
    assert extreme == clipped_logits_l1_sensitivity(c, C)  # attained
    assert clip_logits(a, c).min() >= -c and clip_logits(a, c).max() <= c


# ---------------------------------------------------------------- composition across the N workers


@pytest.mark.parametrize(("K", "N"), PAPER_CONFIGS)
def test_every_query_reaches_every_worker_in_the_paper_configs(K, N):
    assert queries_reach_all_workers(K, N)
    assert np.all(encoder_matrix(K, N) != 0)
    np.testing.assert_array_equal(workers_per_query(K, N), np.full(K, N))


@pytest.mark.parametrize(("K", "N"), [(2, 4), (3, 4), (5, 6), (12, 24)])
def test_a_worker_point_on_a_query_point_gets_that_query_in_the_clear(K, N):
    E = encoder_matrix(K, N)
    assert not queries_reach_all_workers(K, N)
    one_hot = np.flatnonzero((E != 0).sum(axis=1) == 1)
    assert one_hot.size > 0
    np.testing.assert_array_equal(workers_per_query(K, N), (E != 0).sum(axis=0))
    assert workers_per_query(K, N).min() < N


def test_round_privacy_is_basic_composition_over_the_workers():
    cost = round_privacy(0.1, 9)
    assert cost == PrivacyCost(epsilon_worker=0.1, n_workers=9, epsilon_total=pytest.approx(0.9))
    assert cost.advanced_epsilon is None and cost.advanced_delta is None
    assert epsilon_worker_for_total(1.0, 9) == pytest.approx(1 / 9)
    for eps_total, N in [(1.0, 9), (0.3, 13), (8.0, 30)]:
        assert round_privacy(epsilon_worker_for_total(eps_total, N), N).epsilon_total == pytest.approx(eps_total)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.epsilon_total = 0.1  # type: ignore[misc]


def test_advanced_composition_formula_and_when_it_helps():
    eps, N, delta = 0.5, 9, 1e-5
    expected = math.sqrt(2 * N * math.log(1 / delta)) * eps + N * eps * (math.exp(eps) - 1)
    cost = round_privacy(eps, N, delta=delta)
    assert cost.advanced_epsilon == pytest.approx(expected)
    assert cost.advanced_delta == delta
    assert cost.advanced_epsilon > cost.epsilon_total  # for the paper's N, basic composition is the better bound
    assert advanced_composition(0.01, 1000, delta) < round_privacy(0.01, 1000).epsilon_total  # large N: it helps


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: laplace_mechanism([0.0], 0.0, 1.0, 0), ValueError, r"epsilon.*0\.0"),
        (lambda: laplace_mechanism([0.0], -1.0, 1.0, 0), ValueError, r"epsilon.*-1\.0"),
        (lambda: laplace_mechanism([0.0], math.inf, 1.0, 0), ValueError, r"epsilon.*inf"),
        (lambda: laplace_mechanism([0.0], math.nan, 1.0, 0), ValueError, r"epsilon.*nan"),
        (lambda: laplace_mechanism([0.0], "1", 1.0, 0), TypeError, r"epsilon.*'1'"),
        (lambda: laplace_mechanism([0.0], 1.0, 0.0, 0), ValueError, r"l1_sensitivity.*0\.0"),
        (lambda: laplace_mechanism([0.0], 1.0, -2.0, 0), ValueError, r"l1_sensitivity.*-2\.0"),
        (lambda: laplace_mechanism([0.0, np.nan], 1.0, 1.0, 0), ValueError, r"values.*NaN or Inf.*\[\[1\]\]"),
        (lambda: laplace_mechanism([np.inf], 1.0, 1.0, 0), ValueError, r"values.*NaN or Inf"),
        (lambda: laplace_mechanism(["a"], 1.0, 1.0, 0), TypeError, r"values.*real numbers"),
        (lambda: laplace_mechanism([0.0], 1.0, 1.0, None), ValueError, r"rng is required"),
        (lambda: laplace_mechanism([0.0], 1.0, 1.0, 0.5), TypeError, r"rng.*float"),
        (lambda: laplace_mechanism([0.0], 1.0, 1.0), TypeError, r"rng"),
        (lambda: laplace_mechanism([0.0], 5e-324, 2.0, 0), ValueError, r"epsilon = 5e-324 is so small.*overflows"),
        (lambda: laplace_mechanism([0.0], 1e-300, 1e10, 0), ValueError, r"so small.*overflows float64"),
        (lambda: laplace_mechanism([0.0], 1e300, 1e-10, 0), ValueError, r"so large.*below 2\^-1000"),
        (lambda: laplace_mechanism([0.0], 1e-12, 2.0, 0), ValueError, r"too small for an exact release"),
        (lambda: laplace_mechanism([1e6], 1e6, 2.0, 0), ValueError, r"values up to 1e\+06 are too large"),
        (lambda: privacy.laplace_release([0.0], 5e-324, 2.0), ValueError, r"overflows"),
        (lambda: privacy.laplace_release([np.nan], 1.0, 2.0), ValueError, r"values.*NaN"),
        (lambda: laplace_grid(1.0, 2.0, 0), ValueError, r"size must be >= 1, got 0"),
        (lambda: discrete_laplace(0, 5, 0), ValueError, r"units must be >= 1, got 0"),
        (lambda: discrete_laplace(2**52, 5, 0), ValueError, r"units must be < 2\^52"),
        (lambda: discrete_laplace(1.5, 5, 0), TypeError, r"units must be an integer"),
        (
            lambda: privacy.impossible_fraction(0, 1, 1.0, 1.0, mechanism="opendp", n_samples=10, rng=0),
            ValueError,
            r"unknown mechanism 'opendp'; known: textbook, grid",
        ),
        (
            lambda: privacy.impossible_fraction(0, np.inf, 1.0, 1.0, mechanism="grid", n_samples=10, rng=0),
            ValueError,
            r"x_prime.*NaN or Inf",
        ),
        (lambda: advanced_composition(800.0, 9, 1e-5), ValueError, r"advanced composition overflows.*N epsilon = 7200"),
        (lambda: advanced_composition(700.0, 10**9, 1e-5), ValueError, r"advanced composition overflows"),
        (lambda: round_privacy(1e308, 9), ValueError, r"overflows float64"),
        (lambda: round_privacy(800.0, 9, delta=1e-5), ValueError, r"advanced composition overflows"),
        (lambda: clip_logits([1.0], 0.0), ValueError, r"c must be finite and > 0, got 0\.0"),
        (lambda: clip_logits([1.0], -1.0), ValueError, r"c must be.*-1\.0"),
        (lambda: clip_logits([np.nan], 1.0), ValueError, r"values.*NaN"),
        (lambda: clipped_logits_l1_sensitivity(0.0, 10), ValueError, r"c must be.*0\.0"),
        (lambda: clipped_logits_l1_sensitivity(1.0, 0), ValueError, r"num_classes must be >= 1, got 0"),
        (lambda: clipped_logits_l1_sensitivity(1.0, 2.5), TypeError, r"num_classes.*2\.5"),
        (lambda: softmax([[1.0, np.inf]]), ValueError, r"values.*NaN or Inf"),
        (lambda: softmax(np.zeros((3, 0))), ValueError, r"non-empty last axis"),
        (lambda: round_privacy(0.0, 9), ValueError, r"epsilon_worker.*0\.0"),
        (lambda: round_privacy(0.1, 0), ValueError, r"N must be >= 1, got 0"),
        (lambda: round_privacy(0.1, True), TypeError, r"N must be an integer"),
        (lambda: round_privacy(0.1, 9, delta=1.0), ValueError, r"delta must be < 1"),
        (lambda: round_privacy(0.1, 9, delta=0.0), ValueError, r"delta.*0\.0"),
        (lambda: epsilon_worker_for_total(-1.0, 9), ValueError, r"epsilon_total.*-1\.0"),
        (lambda: epsilon_worker_for_total(1.0, 0), ValueError, r"N must be >= 1, got 0"),
        (lambda: queries_reach_all_workers(3, 0), ValueError, r"N must be >= 1"),
        (lambda: audit(scalar_laplace(1, 1), 0, 1, 0.0, n_samples=100, rng=0), ValueError, r"epsilon.*0\.0"),
        (lambda: audit(scalar_laplace(1, 1), 0, 1, 1.0, n_samples=1, rng=0), ValueError, r"n_samples must be >= 2"),
        (lambda: audit(scalar_laplace(1, 1), 0, 1, 1.0, n_samples=100, rng=None), ValueError, r"rng is required"),
        (
            lambda: audit(scalar_laplace(1, 1), 0, 1, 1.0, n_samples=100, rng=0, confidence=1.0),
            ValueError,
            "confidence",
        ),
        (lambda: audit(scalar_laplace(1, 1), 0, 1, 1.0, n_samples=100, rng=0, bins=[1.0, 0.0]), ValueError, "bins"),
        (lambda: audit("f", 0, 1, 1.0, n_samples=100, rng=0), TypeError, r"mechanism must be callable"),
        (lambda: audit(lambda x, r, n: np.zeros((n, 2)), 0, 1, 1.0, n_samples=100, rng=0), ValueError, r"shape"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- the empirical audit


AUDIT = {"n_samples": 50_000, "bins": 20, "confidence": 0.95}


def test_audit_passes_a_correct_mechanism():
    result = audit(scalar_laplace(1.0, 1.0), 0.0, 1.0, 1.0, rng=0, **AUDIT)
    assert result.passed, result.epsilon_lower
    assert 0.5 < result.epsilon_lower <= 1.0  # not vacuous: the true loss in the tail bins is exactly 1
    assert result.counts_x.sum() == result.counts_x_prime.sum() == AUDIT["n_samples"]


def test_audit_fails_a_mechanism_with_four_times_too_little_noise():
    result = audit(scalar_laplace(1.0, 0.25), 0.0, 1.0, 1.0, rng=0, **AUDIT)  # b = Δ1 / (4 ε)
    assert not result.passed
    assert result.epsilon_lower > 3.0  # the true loss is 4


def test_audit_detects_calibration_to_l2_instead_of_l1_sensitivity():
    """The report's error: C clipped logits have l2 sensitivity 2c√C but l1 sensitivity 2cC."""
    c, C, eps = 1.0, 4, 1.0

    def vector_mechanism(l1_sensitivity):
        return lambda x, rng, size: laplace_mechanism(np.full((size, C), float(x)), eps, l1_sensitivity, rng)

    def llr(r):  # the Laplace log-likelihood-ratio statistic (up to a factor), a post-processing
        return np.clip(r, -c, c).sum(axis=1)

    l1 = audit(vector_mechanism(2 * c * C), c, -c, eps, rng=0, project=llr, **AUDIT)
    l2 = audit(vector_mechanism(2 * c * math.sqrt(C)), c, -c, eps, rng=0, project=llr, **AUDIT)
    assert l1.passed, l1.epsilon_lower
    assert not l2.passed, l2.epsilon_lower  # true loss 2 eps


def test_audit_of_a_whole_round_needs_N_times_the_worker_epsilon():
    """One query changes all N coded queries: the N noisy releases together leak more than one worker's epsilon."""
    K, N, c, eps_worker = 8, 9, 1.0, 0.5
    E = encoder_matrix(K, N)

    def round_release(queries, rng, size):
        worker_outputs = clip_logits(E @ np.asarray(queries), c)  # a scalar "model" f = clip, one class
        releases = np.broadcast_to(worker_outputs, (size, N))
        return laplace_mechanism(releases, eps_worker, clipped_logits_l1_sensitivity(c, 1), rng)

    x = np.zeros(K)
    x_prime = np.zeros(K)
    x[0], x_prime[0] = 1000.0, -1000.0  # neighbours: query 0 replaced; every worker's output flips sign
    assert np.all(np.abs(E[:, 0]) * 1000 > c)

    def combine(r):  # the receiver knows the encoder: align the signs and add up the N releases
        return r @ np.sign(E[:, 0])

    single = audit(round_release, x, x_prime, eps_worker, rng=0, project=combine, **AUDIT)
    total = round_privacy(eps_worker, N).epsilon_total
    composed = audit(round_release, x, x_prime, total, rng=0, project=combine, **AUDIT)
    assert not single.passed, single.epsilon_lower  # the report's one-worker claim is refuted
    assert composed.passed and composed.epsilon_lower == single.epsilon_lower


def test_audit_is_reproducible_and_takes_explicit_bins():
    a = audit(scalar_laplace(1.0, 1.0), 0.0, 1.0, 1.0, n_samples=5000, rng=3)
    b = audit(scalar_laplace(1.0, 1.0), 0.0, 1.0, 1.0, n_samples=5000, rng=np.random.default_rng(3))
    assert a.epsilon_lower == b.epsilon_lower
    np.testing.assert_array_equal(a.counts_x, b.counts_x)
    edges = np.linspace(-3, 4, 8)
    r = audit(scalar_laplace(1.0, 1.0), 0.0, 1.0, 1.0, n_samples=5000, rng=3, bins=edges)
    np.testing.assert_array_equal(r.edges, edges)
    assert r.counts_x.size == edges.size + 1 and r.bin_lower[r.worst_bin] == r.epsilon_lower


def test_public_names():
    assert set(privacy.__all__) <= set(dir(privacy))

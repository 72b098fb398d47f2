"""The Byzantine error locator: planted adversaries, invariances, the loop reference, groups and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from locator import condition_numbers, loop_locate_groups

from approxifer import codec, locator
from approxifer.locator import METHODS, decode_excluding, locate, min_returned, robust_decode

C = 10


def rational_outputs(K: int, N: int, groups: int, rng: np.random.Generator) -> np.ndarray:
    """(groups, N, C) outputs Y_i = P(beta_i) / Q(beta_i), deg P = deg Q = K-1, one random pair per coordinate.

    P has Chebyshev coefficients N(0, 1/(k+1)^2); Q = 1 + sum_{k>=1} a_k T_k with sum |a_k| = 1/2, so Q >= 1/2 on
    [-1, 1] (no zero there).
    """
    z = codec.worker_points(N)
    T = np.polynomial.chebyshev.chebvander(z, K - 1)  # (N, K)
    b = rng.normal(size=(groups, C, K)) / np.arange(1, K + 1)
    a = rng.uniform(-1, 1, size=(groups, C, K))
    a[..., 0] = 0.0
    if K > 1:
        a *= 0.5 / np.abs(a).sum(axis=-1, keepdims=True)
    a[..., 0] = 1.0
    return np.einsum("nk,gck->gnc", T, b) / np.einsum("nk,gck->gnc", T, a)


def plant(Y: np.ndarray, E: int, rng: np.random.Generator, sigma: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Add N(0, sigma^2) noise to E random rows (positions) per group; returns (Y, sorted positions (G, E))."""
    G, R, _ = Y.shape
    pos = np.sort(np.argsort(rng.random((G, R)), axis=1)[:, :E], axis=1)
    Y = Y.copy()
    Y[np.arange(G)[:, None], pos] += rng.normal(0, sigma, (G, E, Y.shape[2]))
    return Y, pos


def straggler_setup(K: int, E: int, rng: np.random.Generator, groups: int = 24):
    """N = min_returned + 1 workers, one random straggler, returned in random order; Y with E planted adversaries."""
    R = min_returned(K, E)
    N = R + 1
    returned = rng.permutation(N)[:R].tolist()
    Y, pos = plant(rational_outputs(K, N, groups, rng)[:, returned], E, rng)
    adversaries = np.sort(np.asarray(returned)[pos], axis=1)
    return Y, returned, N, adversaries


# ---------------------------------------------------------------- the count of returned results


def test_min_returned_counts_the_unknowns():
    for K in (1, 4, 12):
        for E in (1, 2, 3):
            d = K + E - 1
            assert min_returned(K, E) == (d + 1) + d == 2 * K + 2 * E - 1
            assert all(min_returned(K, E, m) == 2 * K + 2 * E - 1 for m in METHODS)
    assert min_returned(12, 0) == 1
    # the paper's 2(K+E) is one more than needed; the report's 2K+E is E-1 short
    assert min_returned(12, 3) == 2 * (12 + 3) - 1 == (2 * 12 + 3) + 3 - 1


# ---------------------------------------------------------------- planted adversaries


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K", [4, 8, 12])
@pytest.mark.parametrize("E", [1, 2, 3])
def test_finds_every_planted_adversary(method, K, E):
    rng = np.random.default_rng(1000 * K + 10 * E + METHODS.index(method))
    Y, returned, N, adversaries = straggler_setup(K, E, rng)
    assert len(returned) == min_returned(K, E, method)
    found = locate(Y, returned, K, N, E, method=method, axis=1)
    assert found.shape == adversaries.shape and found.dtype == np.int64
    np.testing.assert_array_equal(found, adversaries)


def test_robust_decode_equals_decoding_the_honest_workers():
    rng = np.random.default_rng(7)
    K, E = 8, 2
    Y, returned, N, adversaries = straggler_setup(K, E, rng, groups=6)
    for method in METHODS:
        decoded, suspects = robust_decode(Y, returned, K, N, E, method=method, axis=1)
        np.testing.assert_array_equal(suspects, adversaries)
        assert decoded.shape == (6, K, C)
        for g in range(6):
            honest = [p for p, w in enumerate(returned) if w not in adversaries[g]]
            expect = codec.decode(Y[g, honest], [returned[p] for p in honest], K, N)
            np.testing.assert_allclose(decoded[g], expect, rtol=0, atol=1e-12)


def test_robust_decode_beats_plain_decode_under_attack():
    rng = np.random.default_rng(8)
    K, E = 8, 2
    N = min_returned(K, E)
    clean = rational_outputs(K, N, 16, rng)
    Y, _ = plant(clean, E, rng)
    target = codec.decode(clean, range(N), K, N, axis=1)
    plain = np.abs(codec.decode(Y, range(N), K, N, axis=1) - target).max()
    robust = np.abs(robust_decode(Y, range(N), K, N, E, axis=1)[0] - target).max()
    assert plain > 10 and robust < 1


def test_lts_greedy_search_finds_planted_adversaries(monkeypatch):
    monkeypatch.setattr(locator, "LTS_MAX_SUBSETS", 0)  # force greedy selection + swaps
    for K, E in [(4, 3), (8, 2), (12, 3)]:
        rng = np.random.default_rng(K + E)
        Y, returned, N, adversaries = straggler_setup(K, E, rng, groups=16)
        np.testing.assert_array_equal(locate(Y, returned, K, N, E, method="lts", axis=1), adversaries)


def test_lts_finds_clustered_sign_flips():
    """Adjacent workers flipping the sign of their outputs: a block attack that masks single-worker scores."""
    rng = np.random.default_rng(9)
    K, E = 12, 3
    N = min_returned(K, E)
    Y = rational_outputs(K, N, 16, rng) + 3.0  # away from zero, so a flip is a large change
    start = rng.integers(0, N - E, 16)
    pos = start[:, None] + np.arange(E)
    Y[np.arange(16)[:, None], pos] *= -1
    np.testing.assert_array_equal(locate(Y, range(N), K, N, E, method="lts", axis=1), pos)


def test_rank_deficient_coordinate_falls_back_to_minimum_norm():
    """An all-zero coordinate makes its reduced system singular: |Q| = 1 everywhere, finite, and no crash."""
    z = codec.worker_points(9)
    y = np.zeros((2, 9))
    y[1] = np.linspace(-1, 1, 9) ** 2
    abs_q = locator._paper_abs_q(y, z, 4, "monomial")
    assert np.isfinite(abs_q).all()
    np.testing.assert_allclose(abs_q[0], 1.0, atol=1e-12)
    rng = np.random.default_rng(10)
    K, E = 4, 2
    Y, returned, N, adversaries = straggler_setup(K, E, rng, groups=8)
    Y[..., 0] = 0.0
    for method in METHODS:
        np.testing.assert_array_equal(locate(Y, returned, K, N, E, method=method, axis=1), adversaries)


# ---------------------------------------------------------------- E = 0, order, groups


@pytest.mark.parametrize("method", METHODS)
def test_no_adversary_changes_nothing(method):
    rng = np.random.default_rng(11)
    Y = rng.normal(size=(3, 7, C))
    returned = [5, 0, 6, 2, 3, 1, 4]
    decoded, suspects = robust_decode(Y, returned, 4, 9, 0, method=method, axis=1)
    assert suspects.shape == (3, 0) and suspects.dtype == np.int64
    assert np.array_equal(decoded, codec.decode(Y, returned, 4, 9, axis=1))
    assert locate(Y[0], returned, 4, 9, 0, method=method).shape == (0,)
    Yt = torch.from_numpy(Y).float()
    assert torch.equal(robust_decode(Yt, returned, 4, 9, 0, axis=1)[0], codec.decode(Yt, returned, 4, 9, axis=1))


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    K=st.integers(1, 6),
    E=st.integers(1, 3),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_order_of_returned_does_not_matter(method, K, E, extra, seed, data):
    rng = np.random.default_rng(seed)
    R = min_returned(K, E) + extra
    N = R + data.draw(st.integers(0, 3))
    returned = rng.permutation(N)[:R].tolist()
    Y = rng.normal(size=(3, R, C))  # unstructured: the decisions are arbitrary, yet must not depend on the order
    perm = np.asarray(data.draw(st.permutations(range(R))))
    a = locate(Y, returned, K, N, E, method=method, axis=1)
    b = locate(Y[:, perm], [returned[p] for p in perm], K, N, E, method=method, axis=1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_groups_match_single_calls(method):
    rng = np.random.default_rng(12)
    K, E = 4, 2
    Y, returned, N, _ = straggler_setup(K, E, rng, groups=6)
    Y[:3] = rng.normal(size=Y[:3].shape)  # half the groups without structure
    batched = locate(Y, returned, K, N, E, method=method, axis=1)
    single = np.stack([locate(y, returned, K, N, E, method=method) for y in Y])
    np.testing.assert_array_equal(batched, single)
    Y4 = Y.reshape(2, 3, *Y.shape[1:])
    np.testing.assert_array_equal(locate(Y4, returned, K, N, E, method=method, axis=-2), batched.reshape(2, 3, E))
    decoded, suspects = robust_decode(Y4, returned, K, N, E, method=method, axis=2)
    assert decoded.shape == (2, 3, K, C) and suspects.shape == (2, 3, E)
    for g in range(6):
        one, s = robust_decode(Y[g], returned, K, N, E, method=method)
        np.testing.assert_array_equal(s, batched[g])
        np.testing.assert_allclose(decoded.reshape(6, K, C)[g], one, rtol=0, atol=1e-12)


def test_payload_axes_and_torch():
    rng = np.random.default_rng(13)
    K, E = 4, 1
    Y, returned, N, adversaries = straggler_setup(K, E, rng, groups=4)
    Y5 = Y.reshape(4, len(returned), 2, 5)  # two payload axes, flattened into C = 10 coordinates
    np.testing.assert_array_equal(locate(Y5, returned, K, N, E, axis=1), adversaries)
    decoded, suspects = robust_decode(torch.from_numpy(Y5), returned, K, N, E, axis=1)
    assert isinstance(decoded, torch.Tensor) and decoded.dtype == torch.float64 and decoded.shape == (4, K, 2, 5)
    np.testing.assert_array_equal(suspects, adversaries)
    np.testing.assert_allclose(decoded.numpy(), robust_decode(Y5, returned, K, N, E, axis=1)[0], atol=1e-12)


# ---------------------------------------------------------------- the loop reference


@pytest.mark.parametrize("basis", ["monomial", "chebyshev"])
@pytest.mark.parametrize(("K", "E", "extra"), [(4, 1, 0), (4, 2, 2), (8, 2, 0), (12, 2, 0), (6, 3, 1)])
def test_batched_paper_locator_matches_loop(basis, K, E, extra):
    """Same suspects on unstructured data and on rational data with small (sigma = 1) planted errors."""
    method = "paper" if basis == "monomial" else "paper-chebyshev"
    rng = np.random.default_rng(K * 100 + E * 10 + extra)
    R = min_returned(K, E) + extra
    N = R + 2
    returned = rng.permutation(N)[:R].tolist()
    noise = rng.normal(size=(8, R, C))
    planted, _ = plant(rational_outputs(K, N, 8, rng)[:, returned], E, rng, sigma=1.0)
    for Y in (noise, planted):
        expect = loop_locate_groups(Y, returned, K, N, E, basis)
        np.testing.assert_array_equal(locate(Y, returned, K, N, E, method=method, axis=1), expect)


def test_chebyshev_design_is_better_conditioned():
    c = condition_numbers(12, 2, samples=20)
    assert c["basis chebyshev"] < 10 < 1e4 < c["basis monomial"]
    assert c["design chebyshev"] * 100 < c["design monomial"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [locate, robust_decode])
def test_bad_input_raises_with_a_clear_message(fn):
    Y = np.random.default_rng(14).normal(size=(9, C))
    ok = dict(returned=list(range(9)), K=4, N=9)
    with pytest.raises(ValueError, match=r"E must be an integer, got 1\.5"):
        fn(Y, E=1.5, **ok)
    with pytest.raises(ValueError, match="E must be an integer"):
        fn(Y, E=True, **ok)
    with pytest.raises(ValueError, match=r"E must be >= 0, got -1"):
        fn(Y, E=-1, **ok)
    with pytest.raises(ValueError, match=r"needs at least 2K\+2E-1 = 11 .* E=2 .* K=4 .*got 9"):
        fn(Y, E=2, **ok)
    with pytest.raises(ValueError, match=r"method must be one of .*'median'.*got 'mean'"):
        fn(Y, E=1, method="mean", **ok)
    with pytest.raises(ValueError, match="Y has 8 rows along axis 0 but returned lists 9 workers"):
        fn(Y[:8], E=1, **ok)
    for bad in (np.nan, np.inf):
        Yb = Y.copy()
        Yb[4, 3] = bad
        with pytest.raises(ValueError, match="Y contains NaN or Inf in the rows of workers 4"):
            fn(Yb, E=1, **ok)
    with pytest.raises(ValueError, match="returned holds worker 9, outside"):
        fn(Y, E=1, returned=list(range(1, 10)), K=4, N=9)
    with pytest.raises(ValueError, match="axis=2 is not an axis of Y"):
        fn(Y, E=1, axis=2, **ok)
    with pytest.raises(TypeError, match="floating-point dtype"):
        fn(Y.astype(np.int64), E=1, **ok)


def test_median_baseline_finds_gross_errors_and_decode_excluding_is_the_oracle():
    rng = np.random.default_rng(7)
    K, E = 4, 2
    N = 2 * K + 2 * E - 1
    X = rng.normal(size=(K, 3))
    Y = np.stack([codec.encode(X, N)] * 5)  # 5 groups, a linear model
    bad = np.array([[1, 6], [0, 2], [3, 10], [4, 5], [9, 10]])
    for g, b in enumerate(bad):
        Y[g, b] += 1000.0
    assert np.array_equal(locate(Y, range(N), K, N, E, method="median", axis=1), bad)
    clean = decode_excluding(Y, list(range(N)), K, N, bad, axis=1)
    for g, b in enumerate(bad):
        keep = [i for i in range(N) if i not in b]
        assert np.allclose(clean[g], codec.decode(Y[g][keep], keep, K, N), atol=1e-12)
    with pytest.raises(ValueError, match="not in returned"):
        decode_excluding(Y[:, :-1], list(range(N - 1)), K, N, bad, axis=1)


def test_under_determined_fit_only_when_not_strict():
    rng = np.random.default_rng(3)
    K, E = 4, 2
    R = 2 * K + E  # the report's count: E - 1 fewer than the unknowns
    Y = rng.normal(size=(R, 3))
    with pytest.raises(ValueError, match="too few returned results"):
        locate(Y, range(R), K, R, E)
    assert locate(Y, range(R), K, R, E, strict=False).shape == (E,)
    with pytest.raises(ValueError, match=r"even for an under-determined fit: need K\+2E = 8"):
        locate(Y[:7], range(7), K, R, E, strict=False)


def test_bfloat16_outputs_are_located_like_their_float32_values():
    rng = np.random.default_rng(21)
    Y, returned, N, adversaries = straggler_setup(4, 1, rng, groups=6)
    Yb = torch.from_numpy(Y).to(torch.bfloat16)
    for method in METHODS:
        want = locate(Yb.float(), returned, 4, N, 1, method=method, axis=1)
        assert np.array_equal(locate(Yb, returned, 4, N, 1, method=method, axis=1), want)
    decoded, suspects = robust_decode(Yb, returned, 4, N, 1, axis=1)
    assert decoded.dtype == torch.bfloat16 and decoded.shape == (6, 4, C)
    assert np.array_equal(suspects, adversaries)


def test_zero_groups_give_empty_results_and_zero_coordinates_are_refused():
    K, E = 4, 1
    N = min_returned(K, E)
    for method in METHODS:
        assert locate(np.zeros((0, N, C)), range(N), K, N, E, method=method, axis=1).shape == (0, E)
    decoded, suspects = robust_decode(torch.zeros(0, N, C), range(N), K, N, E, axis=1)
    assert decoded.shape == (0, K, C) and suspects.shape == (0, E)
    for fn in (locate, robust_decode):
        with pytest.raises(ValueError, match=r"Y has no output coordinates \(shape \(3, 9, 0\), workers along axis 1"):
            fn(np.zeros((3, N, 0)), range(N), K, N, E, axis=1)
    assert robust_decode(np.zeros((N, 0)), range(N), K, N, 0)[0].shape == (K, 0)  # E = 0: nothing to locate


@pytest.mark.parametrize("excluded", [[6.7], [6.0], [[1.5, 2.0]], [True]])
def test_decode_excluding_refuses_non_integer_indices(excluded):
    Y = np.random.default_rng(0).normal(size=(9, C))
    with pytest.raises(ValueError, match="excluded must hold integer worker indices"):
        decode_excluding(Y, list(range(9)), 4, 9, excluded)
    with pytest.raises(ValueError, match=r"excluded has shape \(\), expected \('E',\)"):
        decode_excluding(Y, list(range(9)), 4, 9, 6)


def test_paper_basis_is_blind_at_zero_where_chebyshev_is_not():
    """For even N, beta_{N/2} = cos(pi/2) = 0, and the paper's normalisation (Q's constant term 1) gives Q(0) = 1: an
    adversary there with a small error goes unnamed, while a Chebyshev basis (T_0's coefficient 1) names it. At any
    other worker both name it."""
    K, E, N, G = 4, 1, 10, 200
    rng = np.random.default_rng(0)
    clean = rational_outputs(K, N, G, rng)
    found = {}
    for worker in (N // 2, 3):
        Y = clean.copy()
        Y[:, worker] += rng.normal(0, 0.1, (G, C))
        for m in ("paper", "paper-chebyshev"):
            found[worker, m] = (locate(Y, list(range(N)), K, N, E, method=m, axis=1)[:, 0] == worker).mean()
    assert found[N // 2, "paper-chebyshev"] == found[3, "paper-chebyshev"] == found[3, "paper"] == 1.0
    assert found[N // 2, "paper"] < 0.5, found

"""Properties of the Berrut codec, checked against a loop implementation and against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_codec import loop_decode, loop_encode
from scipy.interpolate import FloaterHormannInterpolator

from approxifer import codec
from approxifer.codec import decode, decoder_matrix, encode, encoder_matrix, query_points, worker_points


@st.composite
def setups(draw, max_k: int = 16):
    """(K, N, returned, seed) with K <= 16, K <= N <= 3K and a random non-empty returned subset in random order."""
    K = draw(st.integers(1, max_k))
    N = draw(st.integers(K, 3 * K))
    returned = draw(st.permutations(range(N)).flatmap(lambda p: st.integers(1, N).map(lambda r: list(p[:r]))))
    return K, N, returned, draw(st.integers(0, 2**32 - 1))


def berrut_eval(nodes, values, z):
    """Evaluate Berrut's interpolant at arbitrary z (nodes in line order)."""
    w = codec.berrut_matrix(np.asarray(nodes), np.atleast_1d(z))
    return w @ values


# ---------------------------------------------------------------- points


def test_points_are_chebyshev():
    assert np.allclose(query_points(4), np.cos(np.array([1, 3, 5, 7]) * np.pi / 8))
    assert np.allclose(worker_points(4), [1.0, np.cos(np.pi / 4), 0.0, np.cos(3 * np.pi / 4)])
    assert np.all(np.diff(query_points(9)) < 0) and np.all(np.diff(worker_points(9)) < 0)


# ---------------------------------------------------------------- interpolation properties


@settings(max_examples=60, deadline=None)
@given(setups())
def test_encoder_interpolant_passes_through_the_queries(s):
    K, N, _, seed = s
    X = np.random.default_rng(seed).normal(size=(K, 5))
    assert np.allclose(berrut_eval(query_points(K), X, query_points(K)), X, atol=1e-12)
    # and the coded queries are that interpolant at the worker points
    assert np.allclose(encode(X, N), berrut_eval(query_points(K), X, worker_points(N)), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(setups())
def test_decoder_reproduces_returned_values_at_their_nodes(s):
    _, N, returned, seed = s
    Y = np.random.default_rng(seed).normal(size=(len(returned), 3))
    order = np.argsort(returned)
    nodes = worker_points(N)[np.sort(returned)]
    assert np.allclose(berrut_eval(nodes, Y[order], nodes), Y[order], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(setups())
def test_weights_sum_to_one_and_constants_are_exact(s):
    K, N, returned, _ = s
    assert np.allclose(encoder_matrix(K, N).sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(decoder_matrix(K, N, returned).sum(axis=1), 1.0, atol=1e-12)
    c = np.full((K, 4), 3.25)
    assert np.allclose(encode(c, N), 3.25, atol=1e-12)
    assert np.allclose(decode(np.full((len(returned), 4), -7.5), returned, K, N), -7.5, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(setups())
def test_order_of_returned_does_not_matter(s):
    K, N, returned, seed = s
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(len(returned), 6))
    perm = rng.permutation(len(returned))
    a = decode(Y, returned, K, N)
    b = decode(Y[perm], [returned[p] for p in perm], K, N)
    assert np.allclose(a, b, atol=1e-13)


@settings(max_examples=40, deadline=None)
@given(setups())
def test_numpy_and_torch_agree_in_float64(s):
    K, N, returned, seed = s
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, 2, 3))
    Y = rng.normal(size=(len(returned), 10))
    et = encode(torch.from_numpy(X), N)
    dt = decode(torch.from_numpy(Y), returned, K, N)
    assert isinstance(et, torch.Tensor) and et.dtype == torch.float64
    assert np.allclose(et.numpy(), encode(X, N), rtol=0, atol=1e-12)
    assert np.allclose(dt.numpy(), decode(Y, returned, K, N), rtol=0, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(setups())
def test_agrees_with_the_loop_implementation_of_the_paper(s):
    K, N, returned, seed = s
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, 4, 3))
    Y = rng.normal(size=(len(returned), 10))
    assert np.allclose(encode(X, N), loop_encode(X, N), rtol=0, atol=1e-10)
    assert np.allclose(decode(Y, returned, K, N), loop_decode(Y, returned, K, N), rtol=0, atol=1e-10)


@settings(max_examples=80, deadline=None)
@given(setups())
def test_agrees_with_scipy_floater_hormann_d0(s):
    """SciPy's Floater–Hormann interpolant with d = 0 is Berrut's; an implementation nobody here wrote."""
    K, N, returned, seed = s
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, 7))
    Y = rng.normal(size=(len(returned), 10))
    if K > 1:  # SciPy needs d < n, i.e. at least two nodes
        fh = FloaterHormannInterpolator(query_points(K), X, d=0)
        assert np.allclose(encode(X, N), fh(worker_points(N)), rtol=0, atol=1e-10)
    if len(returned) > 1:
        F = np.sort(returned)
        rows = {r: Y[i] for i, r in enumerate(returned)}
        fh = FloaterHormannInterpolator(worker_points(N)[F], np.stack([rows[r] for r in F]), d=0)
        assert np.allclose(decode(Y, returned, K, N), fh(query_points(K)), rtol=0, atol=1e-10)


def test_global_index_signs_would_create_a_pole():
    """Why the sign follows the sorted position: with the paper's (-1)^i a straggler breaks alternation."""
    N = 9
    returned = [i for i in range(N) if i != 4]
    nodes = worker_points(N)[returned]
    z = np.linspace(nodes[4], nodes[3], 2001)[1:-1]  # the gap left by worker 4
    ours = np.sum(np.where(np.arange(len(returned)) % 2 == 0, 1.0, -1.0) / (z[:, None] - nodes), axis=1)
    paper = np.sum((-1.0) ** np.array(returned) / (z[:, None] - nodes), axis=1)
    assert np.all(np.sign(ours) == np.sign(ours[0]))  # no zero of the denominator
    assert np.any(np.diff(np.sign(paper)) != 0)  # a zero: a pole of the decoder


# ---------------------------------------------------------------- shapes, groups, types


def test_group_axis_matches_per_group_calls():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 8, 3, 4, 4)).astype(np.float32)
    Xc = encode(X, 9, axis=1)
    assert Xc.shape == (5, 9, 3, 4, 4) and Xc.dtype == np.float32
    for g in range(5):
        assert np.allclose(Xc[g], encode(X[g], 9), atol=1e-6)
    Y = rng.normal(size=(5, 7, 10))
    ret = [8, 0, 3, 2, 5, 6, 1]
    D = decode(Y, ret, 8, 9, axis=-2)
    assert D.shape == (5, 8, 10)
    for g in range(5):
        assert np.allclose(D[g], decode(Y[g], ret, 8, 9), atol=1e-12)


def test_torch_dtype_and_device_are_preserved():
    X = torch.randn(2, 8, 3, dtype=torch.bfloat16)
    out = encode(X, 9, axis=1)
    assert out.dtype == torch.bfloat16 and out.device == X.device and out.shape == (2, 9, 3)
    Y = torch.randn(9, 10, dtype=torch.float32)
    assert decode(Y, range(9), 8, 9).dtype == torch.float32


def test_exact_hits_return_the_node_value():
    # K=2, N=4: alpha_0 = cos(pi/4) = beta_1, so worker 1's coded query is query 0 itself
    X = np.array([[1.0, 2.0], [5.0, -3.0]])
    assert np.array_equal(encode(X, 4)[1], X[0])
    Y = np.arange(8.0).reshape(4, 2)
    assert np.allclose(decode(Y, [0, 1, 2, 3], 2, 4)[0], Y[1], atol=0)
    # all N = K workers of K = N = 1, and a single returned worker
    assert np.array_equal(encode(np.array([[2.0, 3.0]]), 1), [[2.0, 3.0]])
    assert np.allclose(decode(np.array([[4.0]]), [2], 3, 5), 4.0)


def test_matrices_are_cached_and_read_only():
    assert encoder_matrix(8, 9) is encoder_matrix(8, 9)
    with pytest.raises(ValueError):
        encoder_matrix(8, 9)[0, 0] = 1.0
    with pytest.raises(ValueError):
        decoder_matrix(8, 9, [0, 1, 2])[0, 0] = 1.0


def test_index_signs_are_the_papers_literal_formula():
    """signs="index" is r(z) with (-1)^i over the returned i; with every worker returned the readings coincide."""
    K, N = 8, 9
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(N, 10))
    assert np.allclose(decode(Y, range(N), K, N, signs="index"), decode(Y, range(N), K, N), atol=1e-12)
    ret = [0, 1, 2, 3, 5, 6, 7, 8]
    w = np.array([(-1.0) ** i for i in ret]) / (query_points(K)[:, None] - worker_points(N)[ret])
    expected = (w / w.sum(axis=1, keepdims=True)) @ Y[ret]
    assert np.allclose(decode(Y[ret], ret, K, N, signs="index"), expected, atol=1e-10)
    assert not np.allclose(decode(Y[ret], ret, K, N, signs="index"), decode(Y[ret], ret, K, N), atol=1e-3)
    with pytest.raises(ValueError, match="signs must be one of position, index"):
        decode(Y, range(N), K, N, signs="paper")


@settings(max_examples=30, deadline=None)
@given(setups())
def test_endpoint_worker_points_are_an_exact_berrut_codec_too(s):
    K, N, returned, seed = s
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, 4))
    pts = worker_points(N, "endpoints")
    if N > 1:
        assert pts[0] == 1.0 and np.isclose(pts[-1], -1.0)
    assert np.allclose(encode(X, N, points="endpoints"), berrut_eval(query_points(K), X, pts), atol=1e-12)
    Y = rng.normal(size=(len(returned), 3))
    order = np.argsort(returned)
    expected = berrut_eval(pts[np.sort(returned)], Y[order], query_points(K))
    assert np.allclose(decode(Y, returned, K, N, points="endpoints"), expected, atol=1e-12)
    with pytest.raises(ValueError, match="points must be one of paper, endpoints"):
        encode(X, N, points="chebyshev")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_results_are_the_same_product_bit_for_bit(dtype, layout):
    """What the notebooks' outputs depend on: the weights in the input's dtype times the (groups, K, payload) view,
    one batched product, whatever the input's memory layout (a channels-last batch is not copied, and stays one)."""
    x = torch.randn(6, 8, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=dtype)
    if layout == "channels-last":
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # (C, H, W) stored as (H, W, C)
    returned = [3, 0, 8, 5, 1, 7, 2, 6]
    for lib in ("torch", "numpy"):
        xs = x if lib == "torch" else x.numpy()
        for out, w in [
            (encode(xs, 9, axis=1), encoder_matrix(8, 9)),
            (decode(xs, returned, 8, 9, axis=1), decoder_matrix(8, 9, returned)),
        ]:
            if lib == "torch":
                want = torch.matmul(torch.tensor(w, dtype=dtype), x.reshape(6, 8, -1)).reshape(out.shape)
                assert torch.equal(out, want)
            else:
                want = np.matmul(w.astype(xs.dtype), np.ascontiguousarray(xs).reshape(6, 8, -1)).reshape(out.shape)
                assert np.array_equal(out, want)
            stored = out.transpose(0, 1, 3, 4, 2) if lib == "numpy" else out.permute(0, 1, 3, 4, 2)
            contiguous = stored.flags.c_contiguous if lib == "numpy" else stored.is_contiguous()
            assert contiguous == (layout == "channels-last")

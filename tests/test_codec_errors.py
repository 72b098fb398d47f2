"""Every bad input to the codec raises one clear error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from approxifer.codec import decode, decoder_matrix, encode, encoder_matrix, query_points, worker_points

X = np.zeros((8, 3))
Y = np.zeros((9, 10))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: query_points(0), "K must be >= 1"),
        (lambda: worker_points(-2), "N must be >= 1"),
        (lambda: encoder_matrix(8, 7), r"N \(workers\) must be >= K"),
        (lambda: encoder_matrix(2.5, 3), "K must be an integer"),
        (lambda: encode(X, 7), r"N \(workers\) must be >= K"),
        (lambda: encode(X, 9.0), "N must be an integer"),
        (lambda: encode(X, True), "N must be an integer"),
        (lambda: encode(np.zeros((0, 3)), 4), "K must be >= 1"),
        (lambda: encode(X, 9, axis=2), "axis=2 is not an axis of X"),
        (lambda: encode(np.where(np.eye(8, 3) > 0, np.nan, 0.0), 9), "NaN or Inf in the rows of queries 0, 1, 2"),
        (lambda: decode(Y, list(range(9)), 0, 9), "K must be >= 1"),
        (lambda: decode(Y, list(range(9)), 8, 7), "N .* must be >= K"),
        (lambda: decode(Y, [], 8, 9), "returned is empty"),
        (lambda: decode(Y[:2], [1, 1], 8, 9), r"more than once: \[1\]"),
        (lambda: decode(Y[:2], [1, 9], 8, 9), "worker 9, outside 0..8"),
        (lambda: decode(Y[:2], [1, -1], 8, 9), "worker -1, outside"),
        (lambda: decode(Y[:2], [1, 2.0], 8, 9), "integer worker indices"),
        (lambda: decode(Y, list(range(8)), 8, 9), "Y has 9 rows along axis 0 but returned lists 8 workers"),
        (lambda: decoder_matrix(8, 9, []), "returned is empty"),
    ],
)
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_nan_in_outputs_names_the_worker():
    Yb = np.zeros((3, 10))
    Yb[1, 4] = np.inf
    with pytest.raises(ValueError, match=r"rows of workers 7$"):
        decode(Yb, [2, 7, 5], 8, 9)
    Yt = torch.zeros(2, 3, 10)
    Yt[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rows of workers 5$"):
        decode(Yt, [2, 7, 5], 8, 9, axis=1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: encode([[1.0, 2.0]], 2), "X must be a numpy array or a torch tensor, got list"),
        (lambda: encode(np.zeros((8, 3), dtype=np.uint8), 9), "floating-point dtype, got uint8"),
        (lambda: encode(torch.zeros(8, 3, dtype=torch.int64), 9), "floating-point dtype"),
        (lambda: decode(Y, "012345678", 8, 9), "sequence of worker indices, got str"),
        (lambda: decode(Y, 3, 8, 9), "sequence of worker indices, got int"),
        (lambda: decode("Y", range(9), 8, 9), "Y must be a numpy array"),
    ],
)
def test_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_returned_may_be_an_array_or_tensor():
    a = decode(Y, np.arange(9), 8, 9)
    b = decode(Y, torch.arange(9), 8, 9)
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- unordered `returned`


UNORDERED = [{1, 8}, frozenset({1, 8}), {1: 0, 8: 0}.keys(), {0: 1, 1: 8}.values()]


@pytest.mark.parametrize("returned", UNORDERED, ids=["set", "frozenset", "dict_keys", "dict_values"])
def test_unordered_returned_is_refused(returned):
    """A set's iteration order is not the order of Y's rows: decode(Y, {1, 8}, ...) would permute the results."""
    from approxifer import locator

    Y2 = np.random.default_rng(0).normal(size=(2, 10))
    match = r"returned must be an ordered sequence .* got the unordered (set|frozenset|dict_keys|dict_values)"
    calls = [
        lambda: decode(Y2, returned, 2, 9),
        lambda: decoder_matrix(2, 9, returned),
        lambda: locator.locate(Y2, returned, 1, 9, 0),
        lambda: locator.robust_decode(Y2, returned, 1, 9, 0),
        lambda: locator.decode_excluding(Y2, returned, 1, 9, np.zeros(0, int)),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=match):
            call()


# ---------------------------------------------------------------- NaN and Inf, detected on the output


@pytest.mark.parametrize(("K", "N", "points"), [(8, 9, "paper"), (4, 8, "paper"), (3, 3, "endpoints"), (5, 5, "paper")])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_every_query_with_nan_or_inf_is_named(K, N, points, bad, lib):
    """Also where some encoder rows are one-hot (N = 2K: odd workers sit on query points; zero weights)."""
    for j in range(K):
        X = np.random.default_rng(j).normal(size=(6, K, 2, 3))
        X[4, j, 1, 2] = bad
        X = torch.from_numpy(X).float() if lib == "torch" else X
        with pytest.raises(ValueError, match=rf"X contains NaN or Inf in the rows of queries {j}$"):
            encode(X, N, axis=1, points=points)


def test_a_worker_that_no_decoded_output_uses_is_still_checked():
    """N = 2K, every worker returned: each query point is an odd worker's node, so every decoder row is one-hot and
    the even workers' outputs are multiplied by zero; a NaN there must still be named."""
    K, N = 4, 8
    assert set(np.flatnonzero(decoder_matrix(K, N, range(N)).any(axis=0))) == {1, 3, 5, 7}
    Yb = np.zeros((3, N, 5))
    Yb[2, 6, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows of workers 6$"):
        decode(Yb, list(range(N)), K, N, axis=1)


def test_finite_inputs_whose_product_overflows_are_returned_as_before():
    X = np.full((8, 3), 3e38, dtype=np.float32)  # an encoder row with weights 1.1, -0.1, ...: a partial sum overflows
    W = encoder_matrix(8, 9).astype(np.float32)
    with np.errstate(over="ignore"):
        out, want = encode(X, 9), np.matmul(W, X)
    assert not np.isfinite(out).all() and np.array_equal(out, want, equal_nan=True)
    out_t, want_t = encode(torch.from_numpy(X), 9), torch.matmul(torch.from_numpy(W), torch.from_numpy(X)[None])[0]
    assert not out_t.isfinite().all() and np.array_equal(out_t.numpy(), want_t.numpy(), equal_nan=True)


def test_bfloat16_float16_and_autograd():
    X = torch.randn(4, 8, 6, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16):
        out = encode(X.to(dtype), 9, axis=1)
        assert out.dtype == dtype and torch.allclose(out.float(), encode(X, 9, axis=1), atol=0.1)
    Xg = X.clone().requires_grad_()
    encode(Xg, 9, axis=1).sum().backward()  # d(sum of coded queries)/dX_j = sum_i E_ij
    assert torch.allclose(Xg.grad, torch.from_numpy(encoder_matrix(8, 9).sum(axis=0)).float()[:, None].expand(8, 6))

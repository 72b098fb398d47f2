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

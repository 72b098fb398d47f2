r"""The Berrut codec of ApproxIFER: encode K queries into N coded queries, decode from any returned subset.

Berrut's rational interpolant through nodes $x_0, \dots, x_{n-1}$ (listed in their order along the real line)
with values $f_0, \dots, f_{n-1}$ is

$$ r(z) = \frac{\sum_{l} \frac{(-1)^l}{z - x_l} f_l}{\sum_{l} \frac{(-1)^l}{z - x_l}}, $$

a convex-like combination whose weights sum to one and which has no pole on the real line (Berrut, 1988).

* Encoder: nodes $\alpha_j = \cos\frac{(2j+1)\pi}{2K}$ (Chebyshev, first kind) carry the queries $X_j$; the coded
  query of worker $i$ is $u(\beta_i)$ with $\beta_i = \cos\frac{i\pi}{N}$ (Chebyshev, second kind).
* Decoder: nodes $\beta_i$ of the returned workers carry their outputs $Y_i$; the decoded outputs are $r(\alpha_j)$.

Both are linear in the data, so each is one matrix product with a weight matrix that depends only on
$(K, N)$ — and, for the decoder, the returned set. The matrices are computed once in float64 and cached (within a
byte budget, `approxifer.cache`). Arrays carry the K queries (or the returned outputs) along ``axis``; the axes
before it are group axes (many groups of K at once), the axes after it are the payload (an image, a vector of
logits). A batched call costs about one copy of its input (``make bench``): the product reads the input once and
writes the output once, and NaN or Inf in the input is detected on the output (see `_apply`).
"""

from __future__ import annotations

import math
from collections.abc import MappingView, Sequence, Set
from numbers import Integral
from typing import TypeVar

import numpy as np
import torch

from approxifer.cache import ByteLRU, byte_cached

__all__ = [
    "berrut_matrix",
    "decode",
    "decoder_matrix",
    "encode",
    "encoder_matrix",
    "query_points",
    "systematic_rows",
    "worker_points",
]

Array = TypeVar("Array", np.ndarray, torch.Tensor)

#: Two nodes closer than this are treated as the same point (an "exact hit").
EXACT_HIT_TOL = 1e-13


# ---------------------------------------------------------------- validation


def _check_size(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_sizes(K: object, N: object) -> tuple[int, int]:
    K = _check_size("K", K)
    N = _check_size("N", N)
    if N < K:
        raise ValueError(f"N (workers) must be >= K (queries), got K={K}, N={N}")
    return K, N


def _check_returned(returned: object, N: int) -> tuple[int, ...]:
    if isinstance(returned, torch.Tensor | np.ndarray):
        returned = returned.tolist()
    if isinstance(returned, Set | MappingView):
        raise TypeError(
            f"returned must be an ordered sequence of worker indices (the order of the rows), got the unordered "
            f"{type(returned).__name__} {returned!r}; pass a list in the order of the rows, e.g. sorted(returned)"
        )
    if isinstance(returned, str | bytes) or not isinstance(returned, Sequence):
        raise TypeError(f"returned must be a sequence of worker indices, got {type(returned).__name__}")
    out = []
    for i in returned:
        if isinstance(i, bool) or not isinstance(i, Integral):
            raise ValueError(f"returned must hold integer worker indices, got {i!r}")
        if not 0 <= i < N:
            raise ValueError(f"returned holds worker {i}, outside 0..{N - 1} (N={N})")
        out.append(int(i))
    if not out:
        raise ValueError("returned is empty: at least one worker must have returned")
    if len(set(out)) != len(out):
        dup = sorted({i for i in out if out.count(i) > 1})
        raise ValueError(f"returned lists workers more than once: {dup}")
    return tuple(out)


def _check_array(name: str, x: object, axis: object) -> int:
    """Check that `x` is a floating numpy array or torch tensor and `axis` one of its axes; return axis >= 0."""
    if isinstance(x, torch.Tensor):
        floating = x.is_floating_point()
    elif isinstance(x, np.ndarray):
        floating = np.issubdtype(x.dtype, np.floating)
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if not floating:
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}; convert it first")
    if isinstance(axis, bool) or not isinstance(axis, Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis!r} is not an axis of {name}, whose shape is {tuple(x.shape)}")
    return int(axis) % x.ndim


def _check_finite(name: str, x: Array, axis: int, what: str, labels: Sequence[int]) -> None:
    """Raise ValueError naming the rows (queries or workers) along `axis` that hold NaN or Inf."""
    finite = torch.isfinite(x) if isinstance(x, torch.Tensor) else np.isfinite(x)
    if bool(finite.all()):
        return
    bad = (~finite).cpu().numpy() if isinstance(x, torch.Tensor) else ~finite
    rows = np.moveaxis(bad, axis, 0).reshape(bad.shape[axis], -1).any(axis=1)
    names = ", ".join(str(labels[r]) for r in np.flatnonzero(rows))
    raise ValueError(f"{name} contains NaN or Inf in the rows of {what} {names}")


# ---------------------------------------------------------------- points and weights


def query_points(K: int) -> np.ndarray:
    r"""Chebyshev points of the first kind, $\alpha_j = \cos\frac{(2j+1)\pi}{2K}$, $j = 0..K-1$ (decreasing)."""
    K = _check_size("K", K)
    return np.cos((2 * np.arange(K) + 1) * np.pi / (2 * K))


POINTS = ("paper", "endpoints")


def worker_points(N: int, points: str = "paper") -> np.ndarray:
    r"""Worker points, decreasing: the paper's $\beta_i = \cos\frac{i\pi}{N}$, $i = 0..N-1$, or ``"endpoints"``,
    $\beta_i = \cos\frac{i\pi}{N-1}$, the Chebyshev points of the second kind proper, which include $-1$.

    The paper's points stop short of $-1$, so the query point nearest $-1$ is decoded by extrapolation; the
    ``"endpoints"`` variant is measured as an ablation.
    """
    N = _check_size("N", N)
    if points not in POINTS:
        raise ValueError(f"points must be one of {', '.join(POINTS)}, got {points!r}")
    if points == "endpoints" and N > 1:
        return np.cos(np.arange(N) * np.pi / (N - 1))
    return np.cos(np.arange(N) * np.pi / N)


def berrut_matrix(nodes: np.ndarray, targets: np.ndarray, signs: np.ndarray | None = None) -> np.ndarray:
    r"""Berrut weights $W_{tl} = \frac{(-1)^l/(z_t - x_l)}{\sum_m (-1)^m/(z_t - x_m)}$, shape (targets, nodes).

    `nodes` must be listed in their order along the real line (either direction): the sign $(-1)^l$ follows the
    position $l$ in that list. Each row sums to one. A target within `EXACT_HIT_TOL` of a node gets the one-hot
    row of that node (the interpolant's value there), so nothing is divided by zero. `signs` overrides the
    alternating signs (only to measure other readings of the formula; it can put poles on the real line).
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    diff = targets[:, None] - nodes[None, :]
    hit = np.abs(diff) < EXACT_HIT_TOL
    rows = hit.any(axis=1)  # targets on a node: the one-hot row of that node
    if signs is None:
        signs = np.where(np.arange(nodes.size) % 2 == 0, 1.0, -1.0)
    w = hit / np.maximum(hit.sum(axis=1, keepdims=True), 1)
    w[~rows] = signs / diff[~rows]
    w[~rows] /= w[~rows].sum(axis=1, keepdims=True)
    return w


@byte_cached()
def encoder_matrix(K: int, N: int, points: str = "paper") -> np.ndarray:
    r"""The (N, K) matrix $E_{ij} = l_j(\beta_i)$: coded query $i$ is $\sum_j E_{ij} X_j$. Read-only."""
    K, N = _check_sizes(K, N)
    w = berrut_matrix(query_points(K), worker_points(N, points))
    w.flags.writeable = False
    return w


SIGNS = ("position", "index")


def decoder_matrix(
    K: int, N: int, returned: Sequence[int], *, signs: str = "position", points: str = "paper"
) -> np.ndarray:
    r"""The (K, len(returned)) matrix $D_{jl} = \ell_l(\alpha_j)$, columns in the order of `returned`. Read-only.

    The sign of a returned worker is $(-1)^l$ with $l$ its position in the *sorted* returned set, not
    $(-1)^i$ with $i$ its index among all N. The paper writes $(-1)^i$ over $i \in \mathcal{F}$, but Berrut's
    interpolant is pole-free only when the signs alternate between *consecutive* nodes: with the global index,
    two returned workers on either side of a straggler get the same sign, the denominator changes sign between
    them and the decoder can have a pole inside $[-1, 1]$, near the query points. With all N workers returned
    the two readings coincide; the original authors' code uses the position, as we do. ``signs="index"`` gives
    the paper's literal reading, for measuring what the difference costs.
    """
    K, N = _check_sizes(K, N)
    if signs not in SIGNS:
        raise ValueError(f"signs must be one of {', '.join(SIGNS)}, got {signs!r}")
    return _decoder_matrix_ordered(K, N, _check_returned(returned, N), signs, points)


@byte_cached()
def _decoder_matrix_ordered(K: int, N: int, returned: tuple[int, ...], signs: str, points: str) -> np.ndarray:
    """The sorted set's matrix with its columns put back in the order of `returned` (cached per order)."""
    w = _decoder_matrix_sorted(K, N, tuple(sorted(returned)), signs, points)
    out = np.empty_like(w)
    out[:, np.argsort(returned)] = w
    out.flags.writeable = False
    return out


@byte_cached()
def _decoder_matrix_sorted(
    K: int, N: int, returned: tuple[int, ...], signs: str = "position", points: str = "paper"
) -> np.ndarray:
    by_index = (-1.0) ** np.array(returned) if signs == "index" else None
    return berrut_matrix(worker_points(N, points)[list(returned)], query_points(K), by_index)


# ---------------------------------------------------------------- encode / decode


#: The weight matrices in each input's dtype and device, with the rows that check the output (`_weights`).
_WEIGHTS = ByteLRU()


def _weights(w: np.ndarray, key: tuple, like: Array) -> tuple[Array, list[int], np.ndarray]:
    """`w` cast to `like`'s library, dtype and device (cached under `key`); the output rows that together carry every
    input row, and the input rows that no output row carries (see `_apply`)."""
    device = str(like.device) if isinstance(like, torch.Tensor) else "numpy"

    def make() -> tuple[Array, list[int], np.ndarray]:
        if isinstance(like, torch.Tensor):
            cast = torch.tensor(w, dtype=like.dtype, device=like.device)
            nonzero = (cast != 0).cpu().numpy()
        else:
            cast = w.astype(like.dtype, copy=False)
            nonzero = cast != 0
        rows, left = [], nonzero.any(axis=0)
        unseen = np.flatnonzero(~left)
        while left.any():  # greedy cover; one row when some row has no zero weight (the usual case)
            r = int(nonzero[:, left].sum(axis=1).argmax())
            rows.append(r)
            left &= ~nonzero[r]
        return cast, rows, unseen

    return _WEIGHTS.get((*key, like.dtype, device), make)


def _finite_rows(a3: Array, rows: Sequence[int]) -> bool:
    """Whether the rows `rows` of `a3` (groups, rows, payload) hold no NaN or Inf. In torch from a sum (one pass:
    NaN and Inf survive a sum; an overflow of finite values reads as not finite, which only costs the exact check)."""
    if isinstance(a3, torch.Tensor):
        acc = torch.float32 if a3.element_size() < 4 else a3.dtype
        return bool(torch.isfinite(sum(a3[:, r].sum(dtype=acc) for r in rows)))
    return all(np.isfinite(a3[:, r]).all() for r in rows)


def _apply(w: np.ndarray, key: tuple, x: Array, axis: int, name: str, what: str, labels: Sequence[int]) -> Array:
    """Contract the rows of `x` along `axis` with the matrix `w` (out, in); same type, dtype, device and layout.

    `x` is viewed as (groups, in, payload), its payload axes in memory order (so a channels-last batch is not
    copied), and the product is one batched BLAS matrix multiplication. NaN or Inf is looked for on the output: a
    NaN or ±Inf input times a nonzero weight is NaN or ±Inf, and no sum with it is finite, so the output rows of
    `_weights` (usually one) carry every input's. Only when they are not finite are the input rows along `axis`
    checked one by one, to name the offending ones with `name`, `what` and `labels`; finite inputs whose product
    overflowed are returned as they are.
    """
    lead, rows = x.shape[:axis], x.shape[axis]
    is_torch = isinstance(x, torch.Tensor)
    strides = x.stride() if is_torch else x.strides
    payload = sorted(range(axis + 1, x.ndim), key=lambda d: -abs(strides[d]))  # memory order (stable)
    perm = (*range(axis + 1), *payload)
    moved = payload != sorted(payload)
    xp = (x.permute(perm) if is_torch else x.transpose(perm)) if moved else x
    x3 = xp.reshape(math.prod(lead), rows, math.prod(xp.shape[axis + 1 :]))  # a view unless the layout forbids
    W, check_rows, unseen = _weights(w, key, x)
    if is_torch:
        out3 = torch.matmul(W, x3)
    else:
        with np.errstate(invalid="ignore"):  # Inf in the input (reported below) times a zero weight
            out3 = np.matmul(W, x3)
    if not _finite_rows(out3, check_rows) or (unseen.size and not _finite_rows(x3, unseen.tolist())):
        _check_finite(name, x, axis, what, labels)
    out = out3.reshape(*lead, w.shape[0], *xp.shape[axis + 1 :])
    if not moved:
        return out
    inverse = sorted(range(x.ndim), key=perm.__getitem__)
    return out.permute(inverse) if is_torch else out.transpose(inverse)


def encode(X: Array, N: int, *, axis: int = 0, points: str = "paper") -> Array:
    r"""Berrut-encode K queries into N coded queries: $\tilde X_i = u(\beta_i) = \sum_j l_j(\beta_i) X_j$.

    Args:
        X: floating numpy array or torch tensor with the K queries along `axis`, shape (..., K, *payload).
        N: number of workers (coded queries), N >= K.
        axis: the query axis; axes before it are independent groups.
        points: the worker points, ``"paper"`` or ``"endpoints"`` (see `worker_points`).

    Returns:
        The coded queries, shape (..., N, *payload), same type, dtype and device as `X`.

    Example:
        >>> X = np.eye(3)                       # K = 3 queries of 3 features
        >>> encode(X, 4).sum(axis=0).round(6)   # weights sum to one per coded query
        array([1.333333, 1.333333, 1.333333])
    """
    axis = _check_array("X", X, axis)
    K, N = _check_sizes(X.shape[axis], N)
    if points not in POINTS:
        raise ValueError(f"points must be one of {', '.join(POINTS)}, got {points!r}")
    return _apply(encoder_matrix(K, N, points), ("encoder", K, N, points), X, axis, "X", "queries", range(K))


def decode(
    Y: Array, returned: Sequence[int], K: int, N: int, *, axis: int = 0, signs: str = "position", points: str = "paper"
) -> Array:
    r"""Berrut-decode the returned outputs: $\hat Y_j = r(\alpha_j) = \sum_{l} \ell_l(\alpha_j)\, Y_l$.

    Args:
        Y: outputs of the returned workers along `axis`, in the order of `returned`, shape (..., R, *payload).
        returned: distinct worker indices in 0..N-1, any order, any count >= 1.
        K: number of queries; N: number of workers.
        axis: the worker axis; axes before it are independent groups.
        signs: ``"position"`` (sign by position in the sorted returned set; see `decoder_matrix`) or ``"index"``.
        points: the worker points the outputs were computed at, ``"paper"`` or ``"endpoints"``.

    Returns:
        The K approximate outputs, shape (..., K, *payload), same type, dtype and device as `Y`.
    """
    K, N = _check_sizes(K, N)
    returned = _check_returned(returned, N)
    axis = _check_array("Y", Y, axis)
    if Y.shape[axis] != len(returned):
        raise ValueError(f"Y has {Y.shape[axis]} rows along axis {axis} but returned lists {len(returned)} workers")
    D = decoder_matrix(K, N, returned, signs=signs, points=points)
    return _apply(D, ("decoder", K, N, returned, signs, points), Y, axis, "Y", "workers", returned)


def systematic_rows(E: np.ndarray) -> np.ndarray:
    """For an encoder matrix `E` (N, K): the query each worker receives unchanged (its row is one-hot), -1 for a
    worker that receives a blend of queries."""
    one = ((E == 1).sum(axis=1) == 1) & ((E != 0).sum(axis=1) == 1)
    return np.where(one, E.argmax(axis=1), -1)

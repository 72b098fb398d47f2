r"""Training-free codes for coded inference, behind one API: encoder weights (N, K), decoder weights (K, R).

Every code here is an *interpolation code*. The K queries sit at nodes $a_j$, the N workers at nodes $b_i$
(distinct reals). Worker $i$ receives the interpolant through the pairs $(a_j, X_j)$ evaluated at $b_i$; the decoder
evaluates the interpolant through the returned pairs $(b_i, Y_i)$ at every $a_j$. The interpolant is Floater and
Hormann's barycentric rational one with blending degree $d$ (Floater and Hormann, 2007), through nodes
$x_0, \dots, x_n$ listed in their order along the line:

$$ r(z) = \frac{\sum_k \frac{w_k}{z - x_k} f_k}{\sum_k \frac{w_k}{z - x_k}}, \qquad
   w_k = (-1)^{k-d} \sum_{i \in J_k} \prod_{j=i,\, j \ne k}^{i+d} \frac{1}{|x_k - x_j|}, \qquad
   J_k = \{i : k-d \le i \le k,\ 0 \le i \le n-d\}. $$

It has no pole on the real line, reproduces polynomials of degree $\le d$ (so every row of weights sums to one),
and $d = 0$ is Berrut's interpolant, $w_k = (-1)^k$: the codec of ApproxIFER. With fewer than $d + 1$ nodes the
degree drops to (nodes - 1). A target on a node gets that node's value (a one-hot row), so a worker whose node is
a query node receives that query unchanged (*systematic*), and a returned systematic worker decodes its query
exactly.

Codes (`make` builds them by scheme name; `SCHEMES` names them for a reader):

- ``approxifer``: Berrut at the paper's points, $a_j = \cos\frac{(2j+1)\pi}{2K}$, $b_i = \cos\frac{i\pi}{N}$, the
  matrices of `codec.encoder_matrix` / `codec.decoder_matrix` exactly (the default);
- ``endpoints``: Berrut at $b_i = \cos\frac{i\pi}{N-1}$ (`codec.worker_points(N, "endpoints")`);
- ``fh1``, ``fh2``: Floater–Hormann with $d = 1, 2$ for encoder and decoder, at the paper's points;
- ``lebesgue``: Berrut at worker nodes that minimise the decoder's mean Lebesgue constant (`lebesgue_points`);
- ``systematic``: worker $j < K$ at $a_j$ (it serves query $j$ itself), $N - K$ parity workers at extra nodes that
  receive the Berrut encoder's interpolant; a missing output is decoded by Berrut interpolation over all returned
  nodes, systematic and parity sorted together, and every round in which all systematic workers return is exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import combinations
from numbers import Integral

import numpy as np
import torch
from scipy.optimize import minimize

from approxifer import codec
from approxifer.codec import EXACT_HIT_TOL, _check_returned, query_points, worker_points
from approxifer.codec import _check_array as _check_axis

__all__ = [
    "PARITY",
    "SCHEMES",
    "Code",
    "berrut",
    "floater_hormann",
    "floater_hormann_weights",
    "interpolation_matrix",
    "lebesgue_code",
    "lebesgue_constant",
    "lebesgue_points",
    "make",
    "mean_lebesgue",
    "systematic",
]

#: Scheme keys and the names a reader sees.
SCHEMES = {
    "approxifer": "ApproxIFER (Berrut)",
    "systematic": "systematic Berrut",
    "syslebesgue": "systematic Berrut, Lebesgue-optimal parity",
    "fh1": "Floater–Hormann, d = 1",
    "fh2": "Floater–Hormann, d = 2",
    "endpoints": "Berrut, endpoint points",
    "lebesgue": "Berrut, Lebesgue-optimal points",
}

#: Parity placements of the systematic code (or an explicit array of N - K nodes).
PARITY = ("midpoints", "lebesgue")

#: Two nodes of one code closer than this are rejected: the interpolant would not tell them apart.
MIN_GAP = 1e-9


# ---------------------------------------------------------------- validation


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_nodes(name: str, nodes: object, size: int | None = None) -> np.ndarray:
    """A read-only float64 copy of 1-D finite, pairwise distinct nodes (of `size` if given)."""
    try:
        x = np.array(nodes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D sequence of real numbers, got {nodes!r}") from None
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of nodes, got shape {x.shape}")
    if size is not None and x.size != size:
        raise ValueError(f"{name} must hold {size} nodes, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got {x}")
    gaps = np.diff(np.sort(x))
    if gaps.size and gaps.min() < MIN_GAP:
        i = int(np.argmin(gaps))
        raise ValueError(f"{name} must be distinct: two nodes at {np.sort(x)[i]:.12g} (closer than {MIN_GAP:g})")
    x.flags.writeable = False
    return x


# ---------------------------------------------------------------- weights


def floater_hormann_weights(nodes: np.ndarray, d: int) -> np.ndarray:
    r"""Barycentric weights $w_k$ of Floater–Hormann's interpolant of degree $d$ through `nodes` (in line order).

    $d = 0$ gives Berrut's $(-1)^k$; $d \ge$ len(nodes) is lowered to len(nodes) - 1 (polynomial interpolation).
    """
    x = np.asarray(nodes, dtype=np.float64)
    n = x.size
    d = min(_check_int("d", d, 0), n - 1)
    dist = np.abs(x[:, None] - x[None, :])
    np.fill_diagonal(dist, 1.0)
    w = np.zeros(n)
    for i in range(n - d):  # the blended polynomial through x_i .. x_{i+d}
        w[i : i + d + 1] += 1.0 / dist[i : i + d + 1, i : i + d + 1].prod(axis=1)
    return w * np.where((np.arange(n) - d) % 2 == 0, 1.0, -1.0)


def interpolation_matrix(nodes: object, targets: object, d: int = 0) -> np.ndarray:
    r"""The (targets, nodes) weights $W_{tk} = \frac{w_k/(z_t - x_k)}{\sum_m w_m/(z_t - x_m)}$, nodes in any order.

    The nodes are put in decreasing order for the weights (the order of the codec's points) and the columns back
    in the given order. For $d = 0$ this is `codec.berrut_matrix` itself. A target within `codec.EXACT_HIT_TOL` of
    a node gets the one-hot row of that node. Every row sums to one.

    Example:
        >>> interpolation_matrix([1.0, -1.0, 0.0], [0.5, 0.0], d=1).round(3)
        array([[0.5, 0. , 0.5],
               [0. , 0. , 1. ]])
    """
    x = _check_nodes("nodes", nodes)
    z = np.atleast_1d(np.asarray(targets, dtype=np.float64))
    order = np.argsort(-x, kind="stable")
    d = min(_check_int("d", d, 0), x.size - 1)
    if d == 0:
        w = codec.berrut_matrix(x[order], z)
    else:
        diff = z[:, None] - x[order][None, :]
        hit = np.abs(diff) < EXACT_HIT_TOL
        rows = hit.any(axis=1)
        w = hit / np.maximum(hit.sum(axis=1, keepdims=True), 1)
        w[~rows] = floater_hormann_weights(x[order], d) / diff[~rows]
        w[~rows] /= w[~rows].sum(axis=1, keepdims=True)
    out = np.empty_like(w)
    out[:, order] = w
    return out


# ---------------------------------------------------------------- the code object


def _check_array(name: str, x: object, axis: object, rows: int, what: str) -> int:
    """`x` is a floating numpy array or torch tensor with `rows` rows along `axis`, all finite; return axis >= 0."""
    axis = _check_axis(name, x, axis)
    if x.shape[axis] != rows:
        raise ValueError(f"{name} has {x.shape[axis]} rows along axis {axis} but the code expects {rows} {what}")
    if not bool(torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return axis


def _contract(w: np.ndarray, x, axis: int):
    """Contract the rows of `x` along `axis` with `w` (out, in): one batched matrix product; same type and dtype."""
    lead, rows, trail = x.shape[:axis], x.shape[axis], x.shape[axis + 1 :]
    x3 = x.reshape(math.prod(lead), rows, math.prod(trail))
    if isinstance(x, torch.Tensor):
        out = torch.matmul(torch.tensor(w, dtype=x.dtype, device=x.device), x3)
    else:
        out = np.matmul(w.astype(x.dtype, copy=False), x3)
    return out.reshape(*lead, w.shape[0], *trail)


@dataclass(frozen=True, eq=False)
class Code:
    """An interpolation code: queries at `query_nodes` (K), workers at `worker_nodes` (N >= K), degree `d`.

    Attributes:
        encoder: (N, K) read-only weights, coded query $i$ is $\\sum_j E_{ij} X_j$.
        decoder(returned): (K, R) read-only weights, columns in the order of `returned`, cached per set.
        systematic: (N,) the query each worker serves unchanged (its encoder row is one-hot), -1 for a coded one.
    """

    name: str
    query_nodes: np.ndarray
    worker_nodes: np.ndarray
    d: int = 0
    _decoders: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        a = _check_nodes("query_nodes", self.query_nodes)
        b = _check_nodes("worker_nodes", self.worker_nodes)
        if b.size < a.size:
            raise ValueError(f"N (workers) must be >= K (queries), got K={a.size}, N={b.size}")
        object.__setattr__(self, "query_nodes", a)
        object.__setattr__(self, "worker_nodes", b)
        object.__setattr__(self, "d", _check_int("d", self.d, 0))

    @property
    def K(self) -> int:
        return self.query_nodes.size

    @property
    def N(self) -> int:
        return self.worker_nodes.size

    @cached_property
    def encoder(self) -> np.ndarray:
        E = interpolation_matrix(self.query_nodes, self.worker_nodes, self.d)
        E.flags.writeable = False
        return E

    def decoder(self, returned: Sequence[int]) -> np.ndarray:
        returned = _check_returned(returned, self.N)
        if returned not in self._decoders:
            D = interpolation_matrix(self.worker_nodes[list(returned)], self.query_nodes, self.d)
            D.flags.writeable = False
            self._decoders[returned] = D
        return self._decoders[returned]

    @cached_property
    def systematic(self) -> np.ndarray:
        return codec.systematic_rows(self.encoder)

    def exact(self, returned: Sequence[int]) -> bool:
        """Whether decoding from `returned` is exact: every query has a returned systematic worker."""
        served = self.systematic[list(_check_returned(returned, self.N))]
        return set(range(self.K)) <= set(served.tolist())

    def encode(self, X, *, axis: int = 0):
        """Coded queries $\\tilde X_i = \\sum_j E_{ij} X_j$: (..., K, *payload) -> (..., N, *payload), numpy or
        torch, same dtype and device."""
        axis = _check_array("X", X, axis, self.K, "queries")
        return _contract(self.encoder, X, axis)

    def decode(self, Y, returned: Sequence[int], *, axis: int = 0):
        """Decoded outputs $\\hat Y_j = \\sum_l D_{jl} Y_l$: (..., R, *payload) in the order of `returned` ->
        (..., K, *payload)."""
        returned = _check_returned(returned, self.N)
        axis = _check_array("Y", Y, axis, len(returned), "returned outputs")
        return _contract(self.decoder(returned), Y, axis)


# ---------------------------------------------------------------- constructors


def _check_sizes(K: object, N: object) -> tuple[int, int]:
    K, N = _check_int("K", K, 1), _check_int("N", N, 1)
    if N < K:
        raise ValueError(f"N (workers) must be >= K (queries), got K={K}, N={N}")
    return K, N


def berrut(K: int, N: int, points: str = "paper") -> Code:
    """ApproxIFER's code: Berrut at the paper's points (or the ``"endpoints"`` variant); equal to the codec's."""
    K, N = _check_sizes(K, N)
    return Code("approxifer" if points == "paper" else points, query_points(K), worker_points(N, points))


def floater_hormann(K: int, N: int, d: int) -> Code:
    """Floater–Hormann of degree `d` for encoder and decoder, at the paper's points (d = 0 is `berrut`)."""
    K, N = _check_sizes(K, N)
    return Code(f"fh{d}", query_points(K), worker_points(N), _check_int("d", d, 0))


def lebesgue_constant(code: Code, returned: Sequence[int]) -> float:
    r"""The decoder's Lebesgue constant at the query points, $\max_j \sum_l |D_{jl}|$ (1 for an exact decoder)."""
    return float(np.abs(code.decoder(returned)).sum(axis=1).max())


def _returned_sets(N: int, S: int, max_sets: int, seed: int) -> np.ndarray:
    """Every returned set of N - S workers, or `max_sets` of them drawn with `seed` when there are more."""
    if math.comb(N, S) <= max_sets:
        return np.array([c for c in combinations(range(N), N - S)], dtype=np.int64).reshape(-1, N - S)
    rng = np.random.default_rng(seed)
    return np.sort(np.argsort(rng.random((max_sets, N)), axis=1)[:, : N - S], axis=1)


def mean_lebesgue(code: Code, S: int, *, max_sets: int = 2000, seed: int = 0) -> float:
    """The mean over returned sets with S stragglers (all of them, or `max_sets` drawn) of `lebesgue_constant`."""
    S = _check_int("S", S, 0)
    if S >= code.N:
        raise ValueError(f"S={S} stragglers leave no worker of N={code.N}")
    return float(np.mean([lebesgue_constant(code, r) for r in _returned_sets(code.N, S, max_sets, seed)]))


def _berrut_lebesgue(a: np.ndarray, b: np.ndarray, sets: np.ndarray) -> float:
    """Vectorised `mean_lebesgue` of Berrut's decoder from worker nodes `b` over the returned `sets` (rows)."""
    if np.diff(np.sort(b)).min(initial=np.inf) < MIN_GAP:
        return np.inf
    order = np.argsort(-b)
    nodes = b[order][np.sort(np.argsort(order)[sets], axis=1)]  # each set's nodes in decreasing order
    diff = a[None, :, None] - nodes[:, None, :]  # (sets, K, R)
    hit = np.abs(diff) < EXACT_HIT_TOL
    signs = np.where(np.arange(sets.shape[1]) % 2 == 0, 1.0, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = signs / diff
        lam = np.abs(w).sum(axis=2) / np.abs(w.sum(axis=2))
    lam = np.where(hit.any(axis=2), 1.0, lam)
    return float(lam.max(axis=1).mean())


#: Nelder–Mead starts of `lebesgue_points`: the default start and seeded random ones (the objective is not smooth).
STARTS = 8
#: Seconds each point search took, by (K, N, S, with fixed nodes): the one-off cost of a Lebesgue-optimal code.
SEARCH_SECONDS: dict[tuple[int, int, int, bool], float] = {}


@lru_cache(maxsize=64)
def _optimise(K: int, N: int, S: int, fixed: tuple[float, ...], first: tuple[float, ...]) -> tuple[float, ...]:
    t0 = time.perf_counter()
    a, sets, M = query_points(K), _returned_sets(N, S, 2000, 0), N - len(fixed)
    objective = lambda t: _berrut_lebesgue(a, np.concatenate([fixed, np.cos(t)]), sets)  # noqa: E731
    rng = np.random.default_rng([K, N, S, len(fixed)])
    starts = [np.arccos(first)] + [np.sort(rng.uniform(0, np.pi, M)) for _ in range(STARTS - 1)]
    opts = {"maxfev": 200 * M, "xatol": 1e-7, "fatol": 1e-10, "adaptive": True}
    best = min((minimize(objective, t, method="Nelder-Mead", options=opts) for t in starts), key=lambda r: r.fun)
    for _ in range(2):  # restarted from its own optimum (the usual remedy for a collapsed simplex)
        best = minimize(objective, best.x, method="Nelder-Mead", options=opts)
    SEARCH_SECONDS[K, N, S, bool(fixed)] = time.perf_counter() - t0
    return tuple(np.concatenate([fixed, np.cos(best.x)]).tolist())


def lebesgue_points(
    K: int, N: int, S: int, *, fixed: Sequence[float] = (), start: Sequence[float] | None = None
) -> np.ndarray:
    r"""N worker nodes in $[-1, 1]$ that minimise Berrut's mean decoder Lebesgue constant at the K query points over
    the returned sets of N - S workers (`mean_lebesgue`), the nodes in `fixed` kept where they are.

    The free nodes are $\cos\theta_i$. Nelder–Mead runs from `STARTS` starts (`start`, default the paper's
    points, and seeded random ones), and the best is restarted twice from its optimum: deterministic, cached per
    arguments, and never worse than `start`, but a local optimum of a non-smooth objective.
    """
    K, N = _check_sizes(K, N)
    S = _check_int("S", S, 0)
    if S >= N:
        raise ValueError(f"S={S} stragglers leave no worker of N={N}")
    fixed = tuple(float(v) for v in _check_nodes("fixed", fixed)) if len(fixed) else ()
    if len(fixed) >= N:
        raise ValueError(f"fixed holds {len(fixed)} nodes, so none of the N={N} is left to place")
    start = worker_points(N - len(fixed)) if start is None else _check_nodes("start", start, N - len(fixed))
    if np.abs(start).max() > 1:
        raise ValueError(f"start nodes must lie in [-1, 1], got {start}")
    return np.array(_optimise(K, N, S, fixed, tuple(start.tolist())))


def lebesgue_code(K: int, N: int, S: int | None = None) -> Code:
    """Berrut at the worker nodes of `lebesgue_points` for S = N - K stragglers (or `S`)."""
    K, N = _check_sizes(K, N)
    return Code("lebesgue", query_points(K), lebesgue_points(K, N, N - K if S is None else S))


def _midpoints(K: int, M: int) -> np.ndarray:
    """M parity nodes at midpoints of the K + 1 gaps of +1, a_0, ..., a_{K-1}, -1, spread evenly and symmetrically."""
    if M > K + 1:
        raise ValueError(f"'midpoints' places at most K + 1 = {K + 1} parity nodes, asked for {M}")
    edges = np.concatenate([[1.0], query_points(K), [-1.0]])
    gaps = np.round((np.arange(M) + 1) * (K + 2) / (M + 1) - 1).astype(int)
    return (edges[gaps] + edges[gaps + 1]) / 2


def systematic(K: int, N: int, parity: str | Sequence[float] = "midpoints") -> Code:
    r"""Systematic Berrut: worker $j < K$ at the query point $a_j$ (it serves query $j$ unchanged), workers
    $K \ldots N-1$ at parity nodes: ``"midpoints"`` (of the gaps between +1, the query points and -1, spread
    evenly), ``"lebesgue"`` (`lebesgue_points` with the query points fixed, S = N - K, starting from the
    midpoints), or N - K explicit nodes off the query points."""
    K, N = _check_sizes(K, N)
    if N == K:
        raise ValueError(f"a systematic code needs at least one parity worker: N={N} = K")
    a = query_points(K)
    if isinstance(parity, str):
        if parity not in PARITY:
            raise ValueError(f"parity must be one of {', '.join(PARITY)} or N - K nodes, got {parity!r}")
        g = _midpoints(K, N - K)
        if parity == "lebesgue":
            g = lebesgue_points(K, N, N - K, fixed=a, start=g)[K:]
    else:
        g = _check_nodes("parity", parity, N - K)
        if np.abs(g[:, None] - a[None, :]).min() < MIN_GAP:
            raise ValueError("parity nodes must differ from the query points (a parity there is a replica)")
    return Code("systematic" if parity == "midpoints" else "syslebesgue", a, np.concatenate([a, g]))


def make(scheme: str, K: int, N: int) -> Code:
    """The code of `scheme` (a key of `SCHEMES`) for K queries on N workers (optimised for S = N - K)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if scheme in ("approxifer", "endpoints"):
        return berrut(K, N, "paper" if scheme == "approxifer" else "endpoints")
    if scheme in ("fh1", "fh2"):
        return floater_hormann(K, N, int(scheme[2:]))
    if scheme == "lebesgue":
        return lebesgue_code(K, N)
    return systematic(K, N, "midpoints" if scheme == "systematic" else "lebesgue")

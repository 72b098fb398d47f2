r"""Byzantine error locator of ApproxIFER: find the E adversarial workers among the returned ones, then decode.

$R$ workers return outputs $Y_i \in \mathbb{R}^C$ (e.g. $C = 10$ logits) at their points $\beta_i$; up to $E$ of
them are adversarial (arbitrary outputs). :func:`locate` names E suspects per group, :func:`robust_decode` drops
them and runs the Berrut decoder of :mod:`approxifer.codec` on the rest.

**The paper's locator** (``method="paper"``, as the authors' scripts run it). With $d = K + E - 1$, for each output
coordinate $c$ separately, fit $Y_{ic} \approx P(\beta_i)/Q(\beta_i)$ with $\deg P = \deg Q = d$ by solving the
linearised system

$$ \sum_{k=0}^{d} p_k \varphi_k(\beta_i) - Y_{ic} \sum_{k=1}^{d} q_k \varphi_k(\beta_i) = Y_{ic}\,\varphi_0(\beta_i)
   \qquad (i \text{ returned}) $$

in least squares ($q_0 = 1$, $\varphi_0 = 1$). The E workers with the smallest $|Q(\beta_i)|$ are the candidates of
coordinate $c$; a vote across coordinates picks the final E: most candidacies first, ties to the smaller summed
rank of $|Q(\beta_i)|$ over the coordinates, then to the smaller worker index. Basis: monomials
$\varphi_k = z^k$ (``"paper"``, the authors' ``np.vander``) or Chebyshev $\varphi_k = T_k$ (``"paper-chebyshev"``).
The normalisation $q_0 = 1$ means different things in the two bases: with monomials it fixes $Q(0) = 1$, so $Q$
cannot vanish at a worker point $\beta_i = 0$ (worker $N/2$ when $N$ is even), and an adversary there is named only
if its error happens to be large; the Chebyshev basis has no such blind spot. On a square system ($R = 2K + 2E - 1$)
with no worker at 0 both give the same $P/Q$, up to rounding.

**How many results it needs** (errata 1 of the anchors). The unknowns are $p_0..p_d$ and $q_1..q_d$:
$(d+1) + d = 2(K+E) - 1$ of them, so the least-squares fit is determined only when $R \ge 2K + 2E - 1$. This is
also the Berlekamp–Welch count: if $(P_1, Q_1)$ and $(P_2, Q_2)$ both satisfy the equations at every returned
point, $P_1 Q_2 - P_2 Q_1$ (degree $\le 2d$) vanishes at $R$ points, hence is zero when $R \ge 2d + 1$: the rational
function is unique, and when the honest outputs are a rational function of type $(K-1, K-1)$ its denominator $Q$ is
forced to vanish at the E adversaries. The paper's $2(K+E)$ is one more than needed; the reproducibility report's
$2K+E$ is $E - 1$ too few (equal for $E = 1$, under-determined for $E \ge 2$); the authors' scripts use
$N = 2K + 2E - 1 + S$ (or $2K + 2E + S$). :func:`min_returned` gives $2K + 2E - 1$ for every method here.

**Batched solver.** The basis matrix $\Phi$ ($R \times (d+1)$) is shared by all groups and coordinates, so $P$ is
eliminated exactly: with $U_\perp$ an orthonormal basis of the complement of $\operatorname{range}\Phi$ (one QR),
$q$ solves the $(R-d-1) \times d$ system $U_\perp^\top \operatorname{diag}(y)\,\Phi_{1:}\, q = -U_\perp^\top y$,
square at $R = 2d+1$. All $G \cdot C$ systems are built with one matrix product and solved by one batched LU;
systems whose LU pivots reveal (numerical) rank deficiency fall back to the authors' minimum-norm solution, the
pseudo-inverse of the full design $[\Phi, -\operatorname{diag}(y)\Phi_{1:}]$. For full-rank systems this equals the
least-squares solution of the full design (the loop reference in ``benchmarks/locator.py`` checks it).

Conditioning (measured by ``benchmarks/locator.py``; $K = 12$, all $R = N = 2K+2E-1$ workers returned): 2-norm
condition number of the basis matrix $\Phi$, and the median over 200 coordinates $y \sim \mathcal{N}(0, I)$ of that
of the full design $[\Phi, -\operatorname{diag}(y)\Phi_{1:}]$:

| E | $\Phi$ monomial | $\Phi$ Chebyshev | design monomial | design Chebyshev |
|---|---|---|---|---|
| 1 | 2.15e+04 | 2.01 | 3.13e+05 | 8.2e+01 |
| 2 | 5.12e+04 | 2.01 | 6.91e+05 | 7.9e+01 |
| 3 | 1.24e+05 | 2.01 | 1.93e+06 | 1.0e+02 |

Monomials on Chebyshev points cost four digits more than the Chebyshev basis, and the gap grows about 2.4x per
added degree; in float64 both still leave about ten digits, and the two variants named the same suspects in all
2400 groups of the benchmark's detection runs.

**Improved locator** (ours), ``method="lts"``: least trimmed squares with a Chebyshev polynomial of degree
$m = K - 1$ (one coefficient per query, as in Lagrange-coded computing, where it would be exact for a linear model;
of $m \in \{K/2, K-1, 3K/2, 2K-2\}$ it detected best on synthetic outputs of random tanh and ReLU networks).
With $H = \Phi_m \Phi_m^{+}$ the hat matrix of the fit through all returned workers and $e = (I - H)\,Y$, each
coordinate divided by its median $|e_{ic}|$ over the workers, deleting a set $S$ of workers lowers the residual sum
of squares by

$$ \Delta(S) = \operatorname{tr}\!\big(e_S^\top\, [(I-H)_{SS}]^{-1}\, e_S\big), $$

and the suspects are $\arg\max_{|S| = E} \Delta(S)$: the E workers whose removal leaves the most consistent fit,
searched exhaustively over all $\binom{R}{E}$ sets (by greedy selection then coordinate-wise swaps when there are
more than ``LTS_MAX_SUBSETS``). Why it should beat the vote: (i) it scores the E adversaries *jointly* on all C
coordinates, where the paper makes C independent decisions and counts them; (ii) the block inverse
$[(I-H)_{SS}]^{-1}$ accounts for how each adversary leaks into its neighbours' residuals, so adjacent adversaries do
not mask one another; (iii) at $R = 2K + 2E - 1$ the paper's system is square, so its rational function
*interpolates* every output and any departure of the honest outputs from a type-$(d, d)$ rational function (a
nonlinear model) moves the zeros of $Q$ anywhere, while the trimmed fit keeps $R - E - K = K + E - 1$ residual
degrees of freedom to average it out. Identifiability alone needs $R \ge K + 2E$, but at that size the honest
model error dominates; :func:`min_returned` asks the same $2K + 2E - 1$ as the paper, which also makes the
comparison fair. ``benchmarks/locator.py`` measures detection rates of both under Gaussian ($\sigma$ = 1, 10,
100) and sign-flip attacks.

Arrays carry the returned workers along ``axis`` (in the order of ``returned``); axes before it are groups, axes
after it are the output coordinates (flattened into C).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import combinations
from typing import Literal

import numpy as np
import torch

from approxifer.cache import byte_cached
from approxifer.codec import (
    _check_array,
    _check_finite,
    _check_returned,
    _check_size,
    _check_sizes,
    _decoder_matrix_sorted,
    decode,
    worker_points,
)

__all__ = ["LTS_MAX_SUBSETS", "METHODS", "decode_excluding", "locate", "min_returned", "robust_decode"]

Method = Literal["paper", "paper-chebyshev", "lts", "median"]
METHODS: tuple[str, ...] = ("paper", "paper-chebyshev", "lts", "median")

#: ``"lts"`` searches every E-subset when there are at most this many (K = 12: E <= 3), else greedily + swaps.
LTS_MAX_SUBSETS = 10_000

#: An LU whose smallest/largest pivot ratio is below this is treated as rank deficient (pseudo-inverse fallback).
_PIVOT_RTOL = 1e-11
_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------- validation


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return str(method)


def min_returned(K: int, E: int, method: Method = "paper") -> int:
    r"""Returned results the locator needs to locate E adversaries among Berrut-coded outputs of K queries.

    $2K + 2E - 1$ for every method: the unknowns of the paper's fit, $(K+E) + (K+E-1)$. ``"lts"`` asks the same, so
    that both are compared at equal cost; it is identifiable from $K + 2E$ but needs the extra residual degrees of
    freedom in practice (module docstring). With E = 0 nothing is located, and the decoder needs one result.

    Example:
        >>> min_returned(12, 2)
        27
    """
    K = _check_size("K", K)
    E = _check_size("E", E, minimum=0)
    _check_method(method)
    return 2 * K + 2 * E - 1 if E else 1


def _prepare(
    Y: object, returned: object, K: object, N: object, E: object, method: object, axis: object, strict: bool = True
) -> tuple[int, int, int, str, tuple[int, ...], int]:
    K, N = _check_sizes(K, N)
    E = _check_size("E", E, minimum=0)
    method = _check_method(method)
    returned = _check_returned(returned, N)
    axis = _check_array("Y", Y, axis)
    R = len(returned)
    if Y.shape[axis] != R:
        raise ValueError(f"Y has {Y.shape[axis]} rows along axis {axis} but returned lists {R} workers")
    need = min_returned(K, E, method) if strict else (K + 2 * E if E else 1)
    if R < need and strict:
        raise ValueError(
            f"too few returned results: method {method!r} needs at least 2K+2E-1 = {need} to locate E={E} "
            f"adversaries among K={K} queries, got {R} (N={N}); wait for {need - R} more"
        )
    if R < need:
        raise ValueError(f"too few returned results even for an under-determined fit: need K+2E = {need}, got {R}")
    if E and not math.prod(Y.shape[axis + 1 :]):
        raise ValueError(
            f"Y has no output coordinates (shape {tuple(Y.shape)}, workers along axis {axis}): there is nothing to "
            f"locate {E} adversaries by"
        )
    _check_finite("Y", Y, axis, "workers", returned)
    return K, N, E, method, returned, axis


def _as_groups(Y: np.ndarray | torch.Tensor, axis: int, order: np.ndarray) -> np.ndarray:
    """View `Y` (any floating dtype, bfloat16 included) as float64 numpy (G, R, C), rows permuted by `order`."""
    y = Y.detach().cpu().to(torch.float64).numpy() if isinstance(Y, torch.Tensor) else Y
    lead, rows, trail = y.shape[:axis], y.shape[axis], y.shape[axis + 1 :]
    y3 = np.asarray(y, dtype=np.float64).reshape(math.prod(lead), rows, math.prod(trail))
    return y3[:, order]


# ---------------------------------------------------------------- the paper's locator


def _basis(z: np.ndarray, d: int, kind: str) -> np.ndarray:
    """(len(z), d+1) basis matrix: monomials $z^k$ or Chebyshev $T_k(z)$, $k = 0..d$."""
    if kind == "monomial":
        return np.vander(z, d + 1, increasing=True)
    return np.polynomial.chebyshev.chebvander(z, d)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: a batch of tiny products and factorisations gains nothing from threads,
    and on a busy machine their synchronisation costs several times the work (measured: 2.4 ms vs 24-80 ms for 2560
    LUs of 13x13 with 2 threads on 2 busy cores). The previous setting is restored on exit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@byte_cached()
def _elimination(z: tuple[float, ...], d: int, kind: str) -> tuple[np.ndarray, ...]:
    """For nodes `z` (shared by every group and coordinate): Φ, Φ₁ᵀ, U⊥ (orthonormal, ⟂ range Φ) and U⊥ ⊗ Φ₁;
    cached read-only within a byte budget (torch tensors of the last three)."""
    phi = _basis(np.array(z), d, kind)
    phi.flags.writeable = False
    complement = np.linalg.qr(phi, mode="complete")[0][:, d + 1 :]  # (R, R-d-1)
    outer = np.einsum("ij,ik->ijk", complement, phi[:, 1:]).reshape(len(z), -1)
    return phi, torch.from_numpy(phi[:, 1:].T.copy()), torch.from_numpy(complement), torch.from_numpy(outer)


def _paper_abs_q(y: np.ndarray, z: np.ndarray, d: int, kind: str) -> np.ndarray:
    """$|Q(\\beta_i)|$ of the rational fit of each row of `y` (B, R) at the nodes `z` (R,); shape (B, R)."""
    B, R = y.shape
    if R < 2 * d + 1:  # under-determined (only with strict=False): the authors' minimum-norm solution
        phi = _basis(z, d, kind)
        return np.abs(phi[:, 0] + _min_norm_q(y, phi, d) @ phi[:, 1:].T)
    phi, phi1_t, complement, outer = _elimination(tuple(z.tolist()), d, kind)
    yt = torch.from_numpy(y)
    with _one_thread():
        # M_b = U⊥ᵀ diag(y_b) Φ₁ = Σ_i y_bi (U⊥_i ⊗ Φ₁_i): one (B, R) x (R, (R-d-1)·d) product for all systems
        M = (yt @ outer).reshape(B, R - d - 1, d)
        rhs = -(yt @ complement)[:, :, None]
        if R == 2 * d + 1:  # square: LU
            LU, piv, _ = torch.linalg.lu_factor_ex(M)
            q = torch.linalg.lu_solve(LU, piv, rhs)
        else:  # over-determined: QR
            Qm, LU = torch.linalg.qr(M)
            q = torch.linalg.solve_triangular(LU, Qm.mT @ rhs, upper=True)
        values = (q[..., 0] @ phi1_t).numpy() + phi[:, 0]  # Q(β_i) = φ₀ + Σ_k q_k φ_k(β_i)
    pivots = np.abs(np.diagonal(LU.numpy(), axis1=-2, axis2=-1))
    bad = ~(pivots.min(axis=-1) > _PIVOT_RTOL * pivots.max(axis=-1)) | ~np.isfinite(values).all(axis=-1)
    if bad.any():  # rank deficient: the authors' minimum-norm solution of the full design
        values[bad] = phi[:, 0] + _min_norm_q(y[bad], phi, d) @ phi[:, 1:].T
    return np.abs(values)


def _min_norm_q(y: np.ndarray, phi: np.ndarray, d: int) -> np.ndarray:
    """q_1..q_d of the minimum-norm least-squares solution of the full design [Φ, -diag(y)Φ₁], rows of y (B, R)."""
    R = y.shape[1]
    A = np.concatenate([np.broadcast_to(phi, (len(y), R, d + 1)), -y[:, :, None] * phi[:, 1:]], axis=2)
    return (np.linalg.pinv(A, rtol=_EPS * max(A.shape[-2:])) @ y[:, :, None])[:, d + 1 :, 0]


def _vote(abs_q: np.ndarray, E: int) -> np.ndarray:
    """Pick E rows per group from per-coordinate |Q| of shape (G, C, R): most candidacies, then summed rank."""
    G, C, R = abs_q.shape
    order = np.argsort(abs_q, axis=-1, kind="stable") + (np.arange(G) * R)[:, None, None]  # flat (group, worker)
    ranks = np.broadcast_to(np.arange(R, dtype=np.float64), order.shape)
    rank_sum = np.bincount(order.ravel(), weights=ranks.ravel(), minlength=G * R)
    votes = np.bincount(order[..., :E].ravel(), minlength=G * R)
    key = (rank_sum - votes * (C * R)).reshape(G, R)  # summed rank < C·R, so votes dominate
    return np.sort(np.argsort(key, axis=-1, kind="stable")[:, :E], axis=-1)


def _locate_median(y3: np.ndarray, E: int) -> np.ndarray:
    """The authors' median baseline: per coordinate, the E outputs farthest from the coordinate's median; vote."""
    dev = np.abs(y3 - np.median(y3, axis=1, keepdims=True))  # (G, R, C)
    return _vote(-dev.transpose(0, 2, 1), E)


def _locate_paper(y3: np.ndarray, z: np.ndarray, K: int, E: int, kind: str) -> np.ndarray:
    G, R, C = y3.shape
    d = K + E - 1
    abs_q = _paper_abs_q(y3.transpose(0, 2, 1).reshape(G * C, R), z, d, kind)
    return _vote(abs_q.reshape(G, C, R), E)


# ---------------------------------------------------------------- least trimmed squares


def _robust_scale(res: np.ndarray) -> np.ndarray:
    """Median |residual| over the workers, per group and coordinate, floored; res (G, R, C) -> (G, 1, C)."""
    a = np.abs(res)
    med = np.median(a, axis=1)
    floor = 1e-12 * a.max(axis=(1, 2))[:, None] + np.finfo(np.float64).tiny
    return np.maximum(med, floor)[:, None, :]


def _deletion_gain(ih: np.ndarray, gram: np.ndarray, S: np.ndarray, inv: np.ndarray | None = None) -> np.ndarray:
    r"""$\Delta(S) = \operatorname{tr}([(I-H)_{SS}]^{-1} e_S e_S^\top)$ for index sets S, (G or 1, n, t) -> (G, n).

    `inv`, if given, holds the inverses $[(I-H)_{SS}]^{-1}$ (they depend on S only, not on the group).
    """
    g = np.arange(gram.shape[0])[:, None, None, None]
    rows, cols = S[..., :, None], S[..., None, :]
    if inv is None:
        inv = np.linalg.inv(ih[rows, cols])
    return np.einsum("...ab,...ab->...", inv, gram[g, rows, cols])


def _best_slot(ih: np.ndarray, gram: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per group, the worker not in `others` (G, t) whose addition to them maximises Δ; shape (G,)."""
    G, R = gram.shape[:2]
    everyone = np.broadcast_to(np.arange(R), (G, R))
    taken = (others[:, None, :] == everyone[:, :, None]).any(axis=-1)
    new = np.where(taken, taken.argmin(axis=1)[:, None], everyone)  # a free placeholder keeps (I-H)_SS invertible
    cand = np.concatenate([np.broadcast_to(others[:, None, :], (G, R, others.shape[1])), new[..., None]], axis=2)
    return np.where(taken, -np.inf, _deletion_gain(ih, gram, cand)).argmax(axis=1)


def _locate_lts(y3: np.ndarray, z: np.ndarray, K: int, E: int) -> np.ndarray:
    G, R, _ = y3.shape
    phi = np.polynomial.chebyshev.chebvander(z, K - 1)
    ih = np.eye(R) - phi @ np.linalg.pinv(phi)  # I - H, the residual projector of the polynomial fit
    e = ih @ y3
    e = e / _robust_scale(e)
    gram = e @ e.transpose(0, 2, 1)  # (G, R, R): sum over coordinates of e_i e_j
    if math.comb(R, E) <= LTS_MAX_SUBSETS:  # exhaustive
        S = np.array(list(combinations(range(R), E)))[None]
        inv = np.linalg.inv(ih[S[..., :, None], S[..., None, :]])
        best = np.empty(G, dtype=np.int64)
        chunk = max(1, 2**21 // (S.shape[1] * E * E))  # bounds the (chunk, subsets, E, E) gather to 16 MiB
        for g in range(0, G, chunk):
            best[g : g + chunk] = _deletion_gain(ih, gram[g : g + chunk], S, inv).argmax(axis=1)
        return S[0, best]
    S = np.empty((G, 0), dtype=np.int64)
    for _ in range(E):  # greedy: add the worker whose removal raises Δ the most
        S = np.concatenate([S, _best_slot(ih, gram, S)[:, None]], axis=1)
    for _ in range(10):  # then swaps: re-choose each slot given the others, until nothing changes
        before = S.copy()
        for k in range(E):
            S[:, k] = _best_slot(ih, gram, np.delete(S, k, axis=1))
        if (S == before).all():
            break
    return np.sort(S, axis=1)


# ---------------------------------------------------------------- public API


def locate(
    Y: np.ndarray | torch.Tensor,
    returned: Sequence[int],
    K: int,
    N: int,
    E: int,
    *,
    method: Method = "paper",
    axis: int = 0,
    strict: bool = True,
) -> np.ndarray:
    r"""Worker indices judged adversarial: E per group, in increasing order.

    Args:
        Y: outputs of the returned workers along `axis`, in the order of `returned`, shape (..., R, *coords);
            the coordinates after `axis` are flattened into C.
        returned: distinct worker indices in 0..N-1, any order; R = len(returned) >= :func:`min_returned`.
        K: number of queries; N: number of workers; E: number of adversaries to locate (>= 0).
        method: ``"paper"``, ``"paper-chebyshev"``, ``"lts"`` (module docstring) or ``"median"`` (the authors'
            baseline: per coordinate the E outputs farthest from the median, then the same vote).
        strict: require :func:`min_returned` results; False allows an under-determined fit from K + 2E.
        axis: the worker axis; axes before it are independent groups.

    Returns:
        int64 array of shape (..., E) (the group axes of `Y`, then E).

    Example:
        >>> from approxifer import codec
        >>> K, E, N = 2, 1, 5
        >>> Y = codec.encode(np.array([[1.0], [2.0]]), N)   # a linear model: outputs = coded queries
        >>> Y[3] += 100.0
        >>> locate(Y, range(N), K, N, E)
        array([3])
    """
    K, N, E, method, returned, axis = _prepare(Y, returned, K, N, E, method, axis, strict)
    workers, _, rows = _locate_rows(Y, returned, K, N, E, method, axis)
    return workers[rows].reshape(*Y.shape[:axis], E)


def _locate_rows(
    Y: np.ndarray | torch.Tensor, returned: tuple[int, ...], K: int, N: int, E: int, method: str, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(workers sorted, order with workers = returned[order], suspects as positions in `workers`, shape (G, E))."""
    order = np.argsort(returned, kind="stable")
    workers = np.asarray(returned, dtype=np.int64)[order]
    G = math.prod(Y.shape[:axis])
    if E == 0 or G == 0:
        return workers, order, np.empty((G, E), dtype=np.int64)
    z = worker_points(N)[workers]
    y3 = _as_groups(Y, axis, order)
    if method == "paper":
        rows = _locate_paper(y3, z, K, E, "monomial")
    elif method == "paper-chebyshev":
        rows = _locate_paper(y3, z, K, E, "chebyshev")
    elif method == "median":
        rows = _locate_median(y3, E)
    else:
        rows = _locate_lts(y3, z, K, E)
    return workers, order, rows


def robust_decode(
    Y: np.ndarray | torch.Tensor,
    returned: Sequence[int],
    K: int,
    N: int,
    E: int,
    *,
    method: Method = "paper",
    axis: int = 0,
    strict: bool = True,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
    r"""Locate E adversaries per group, drop them, decode the rest: $\hat Y_j = \sum_{l \notin S} \ell_l(\alpha_j) Y_l$.

    Each group gets the decoder matrix of its own kept set (that of :func:`approxifer.codec.decoder_matrix`, zero
    columns for its suspects), applied in one batched product. With E = 0 this is exactly :func:`codec.decode`.
    `strict=False` lets the paper's fit run under-determined (minimum-norm) from K + 2E results, to measure it.

    Returns:
        (decoded, suspects): decoded of shape (..., K, *coords), same type, dtype and device as `Y`; suspects as
        :func:`locate` returns them, shape (..., E).
    """
    K, N, E, method, returned, axis = _prepare(Y, returned, K, N, E, method, axis, strict)
    if E == 0:
        return decode(Y, returned, K, N, axis=axis), np.empty((*Y.shape[:axis], 0), dtype=np.int64)
    workers, order, rows = _locate_rows(Y, returned, K, N, E, method, axis)
    return _decode_without(Y, workers, order, rows, K, N, axis), workers[rows].reshape(*Y.shape[:axis], E)


def decode_excluding(
    Y: np.ndarray | torch.Tensor, returned: Sequence[int], K: int, N: int, excluded: np.ndarray, *, axis: int = 0
) -> np.ndarray | torch.Tensor:
    """Decode each group without its own `excluded` workers, shape (..., E) of worker indices from `returned`.

    What :func:`robust_decode` does after locating; with the true adversaries it is the oracle decoder.
    """
    K, N = _check_sizes(K, N)
    returned = _check_returned(returned, N)
    axis = _check_array("Y", Y, axis)
    if Y.shape[axis] != len(returned):
        raise ValueError(f"Y has {Y.shape[axis]} rows along axis {axis} but returned lists {len(returned)} workers")
    excluded = np.asarray(excluded)
    if excluded.size and excluded.dtype.kind not in "iu":
        raise ValueError(f"excluded must hold integer worker indices, got {excluded.dtype} {excluded.flat[0]!r}")
    excluded = excluded.astype(np.int64)
    if excluded.ndim == 0 or excluded.shape[:-1] != Y.shape[:axis]:
        raise ValueError(f"excluded has shape {excluded.shape}, expected {(*Y.shape[:axis], 'E')}")
    order = np.argsort(returned, kind="stable")
    workers = np.asarray(returned, dtype=np.int64)[order]
    rows = np.searchsorted(workers, excluded).reshape(-1, excluded.shape[-1])
    flat = excluded.reshape(rows.shape)
    if not np.array_equal(workers[np.minimum(rows, len(workers) - 1)], flat):
        raise ValueError("excluded names workers that are not in returned")
    if excluded.shape[-1] and (np.diff(np.sort(rows, axis=1), axis=1) == 0).any():
        raise ValueError("excluded names a worker twice in one group")
    if excluded.shape[-1] >= len(returned):
        raise ValueError(f"excluding {excluded.shape[-1]} of {len(returned)} returned workers leaves none to decode")
    return _decode_without(Y, workers, order, rows, K, N, axis)


def _decode_without(Y, workers: np.ndarray, order: np.ndarray, rows: np.ndarray, K: int, N: int, axis: int):
    """Decode each group from its returned workers minus the sorted positions `rows` (G, E)."""
    lead, R, trail = Y.shape[:axis], Y.shape[axis], Y.shape[axis + 1 :]
    sets, which = np.unique(rows, axis=0, return_inverse=True)
    kept = np.ones((len(sets), R), dtype=bool)
    kept[np.arange(len(sets))[:, None], sets] = False
    D = np.zeros((len(sets), K, R))
    for u, keep in enumerate(kept):  # the codec's cached decoder matrix of each distinct kept set
        D[u][:, order[keep]] = _decoder_matrix_sorted(K, N, tuple(workers[keep].tolist()))
    D = D[which.reshape(-1)]
    y3 = Y.reshape(math.prod(lead), R, math.prod(trail))
    if isinstance(Y, torch.Tensor):
        out = torch.matmul(torch.from_numpy(D).to(dtype=Y.dtype, device=Y.device), y3)
    else:
        out = np.matmul(D.astype(Y.dtype, copy=False), y3)
    return out.reshape(*lead, K, *trail)

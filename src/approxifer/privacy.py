r"""Output-perturbation privacy for ApproxIFER ("Private-ApproxIFER"), with correct sensitivity and accounting.

A reproducibility report proposed that every worker adds Laplace noise to its prediction and claimed
$\varepsilon$-differential privacy. Its statement has three gaps, fixed here: it defines the sensitivity with the
$\ell_2$ norm while the Laplace mechanism (and its own proof) needs the $\ell_1$ norm; it analyses one worker's
release while every query reaches all N workers; and it never measures the cost in accuracy.

**Laplace mechanism** (Dwork & Roth 2014, Thm 3.6). For $g: \mathcal{D} \to \mathbb{R}^d$ with $\ell_1$
sensitivity $\Delta_1 = \max_{D \sim D'} \lVert g(D) - g(D') \rVert_1$, releasing
$g(D) + (L_1, \dots, L_d)$ with $L_k$ i.i.d. $\mathrm{Lap}(0, b)$, density $\frac{1}{2b} e^{-|y|/b}$ and
$b = \Delta_1 / \varepsilon$, is $\varepsilon$-DP: for every measurable set $S$,
$P[M(D) \in S] \le e^{\varepsilon} P[M(D') \in S]$.

**What a worker releases** is a vector of C class scores for its coded query; we bound its sensitivity for *any*
change of the coded query, so the bound holds whatever the encoder does:

* probabilities, $\mathrm{softmax}(f(\tilde X_i))$: two probability vectors differ by at most $\Delta_1 = 2$;
* clipped logits, $\mathrm{clip}(f(\tilde X_i), -c, c)$: each of the C entries moves by at most $2c$, so
  $\Delta_1 = 2cC$. (Raw logits are unbounded: no finite sensitivity, no guarantee.)

**Neighbouring relation.** A round serves K queries $D = (X_0, \dots, X_{K-1})$; $D \sim D'$ when they differ in
ONE query, replaced by an arbitrary other one (replace-one). The report's "one row of one query" is a special case.

**Composition across workers.** Coded query $i$ is $\tilde X_i = \sum_j E_{ij} X_j$ with $E$ the Berrut encoder
matrix (`codec.encoder_matrix`); for the usual configurations every $E_{ij} \ne 0$, so changing one query changes
all N coded queries, and the round releases N independently noised outputs that all depend on it. By basic
(sequential) composition (Dwork & Roth 2014, Thm 3.16) the round is

$$ \varepsilon_{\text{total}} = N \, \varepsilon_{\text{worker}} \text{-DP}, $$

and to spend a budget $\varepsilon_{\text{total}}$ per round each worker must use $\varepsilon_{\text{total}} / N$.
Advanced composition (Dwork & Roth 2014, Thm 3.20; Dwork, Rothblum & Vadhan 2010) gives, for any $\delta > 0$,
$(\sqrt{2N \ln(1/\delta)}\,\varepsilon_{\text{worker}} + N \varepsilon_{\text{worker}}(e^{\varepsilon_{\text{worker}}}
- 1),\ \delta)$-DP — an $(\varepsilon, \delta)$ statement, which only beats $N\varepsilon$ for large N or small
$\varepsilon$. A worker whose coded query does not depend on $X_j$ releases the same distribution on $D$ and $D'$
and adds nothing, so $N \varepsilon_{\text{worker}}$ is an upper bound in every configuration. But the encoder
weights are NOT always all nonzero: when a worker point equals a query point ($\beta_i = \alpha_j$, e.g. odd K
with even N, or N = 2K) the encoder row is one-hot and that worker receives $X_j$ itself.
`queries_reach_all_workers` checks this. Each further round (or repeated query) spends its own budget again.

**Threat model — who sees what, and what the guarantee covers.**

* The master (encoder/decoder) sees all queries in the clear. Nothing here protects anything from it.
* Each worker sees its coded query in the clear; output noise is added *after* the model has read it, so it
  does NOT protect queries from the workers (any K workers with an invertible block of $E$ recover all queries).
* Whoever receives the workers' outputs — the decoder's output channel, the users who get the decoded
  predictions, an eavesdropper on the worker→master links, a worker that sees other workers' outputs — sees only
  noisy predictions. Against them the whole round's release is $N\varepsilon_{\text{worker}}$-DP with respect to
  each query, and so is anything computed from it (post-processing), including the decoded outputs.
* The guarantee is about the queries of one round, not the model's training data: protecting training data
  against model inversion needs DP with respect to the training set (e.g. DP-SGD), a different neighbouring
  relation.

**Empirical audit.** `audit` samples a (1-D projection of a) mechanism on two neighbouring inputs, counts the
samples in common bins $B$, and bounds each bin's privacy loss
$\bigl|\log \frac{P[M(x) \in B]}{P[M(x') \in B]}\bigr|$ from below with Clopper–Pearson intervals (Bonferroni over
all intervals). If the largest lower bound exceeds $\varepsilon$, the mechanism is refuted at the stated
confidence; passing means "no violation detected", not a proof of privacy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import stats

from approxifer import codec

__all__ = [
    "AuditResult",
    "PrivacyCost",
    "advanced_composition",
    "audit",
    "clip_logits",
    "clipped_logits_l1_sensitivity",
    "epsilon_worker_for_total",
    "laplace_mechanism",
    "laplace_scale",
    "queries_reach_all_workers",
    "round_privacy",
    "softmax",
    "softmax_l1_sensitivity",
    "workers_per_query",
]

RngLike = np.random.Generator | int
Mechanism = Callable[[object, np.random.Generator, int], np.ndarray]


# ---------------------------------------------------------------- validation


def _check_positive(name: str, value: object) -> float:
    """A finite real number > 0, as float; TypeError for non-numbers, ValueError for bad values."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_rng(rng: object) -> np.random.Generator:
    """A numpy Generator, or an int seed turned into one. No global state is ever used."""
    if rng is None:
        raise ValueError("rng is required: pass a numpy Generator (np.random.default_rng(seed)) or an int seed")
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, Integral):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    return np.random.default_rng(int(rng))


def _check_values(name: str, values: object) -> np.ndarray:
    """Finite real values as a float64 array."""
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[:5].tolist()
        raise ValueError(f"{name} contains NaN or Inf (first positions {bad}); sensitivity bounds need finite values")
    return arr


# ---------------------------------------------------------------- mechanism and sensitivities


def laplace_scale(epsilon: float, l1_sensitivity: float) -> float:
    r"""The Laplace scale $b = \Delta_1 / \varepsilon$ (standard deviation $\sqrt{2}\,b$)."""
    return _check_positive("l1_sensitivity", l1_sensitivity) / _check_positive("epsilon", epsilon)


def laplace_mechanism(values: object, epsilon: float, l1_sensitivity: float, rng: RngLike) -> np.ndarray:
    r"""Release `values` $+ \mathrm{Lap}(0, b)$ i.i.d. per entry, $b = \Delta_1/\varepsilon$ (float64, same shape).

    Dwork & Roth 2014, Thm 3.6: if `values` $= g(D)$ and $\lVert g(D) - g(D') \rVert_1 \le \Delta_1$ for all
    neighbours $D \sim D'$, the release is $\varepsilon$-DP. `l1_sensitivity` must be the $\ell_1$ bound for the
    whole array released (not $\ell_2$, not per entry). `rng` is a numpy Generator or an int seed.
    """
    b = laplace_scale(epsilon, l1_sensitivity)
    rng = _check_rng(rng)
    x = _check_values("values", values)
    return x + rng.laplace(0.0, b, size=x.shape)


def softmax_l1_sensitivity() -> float:
    r"""$\Delta_1 = 2$: probability vectors have $\lVert p - q \rVert_1 \le \lVert p \rVert_1 + \lVert q \rVert_1 = 2$.

    It holds for any change of the input, hence for whatever coded query a worker receives.
    """
    return 2.0


def softmax(values: object) -> np.ndarray:
    r"""Numerically stable softmax over the last axis, $p_k = e^{z_k - \max z} / \sum_l e^{z_l - \max z}$."""
    z = _check_values("values", values)
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"values must have a non-empty last axis (the classes), got shape {z.shape}")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def clip_logits(values: object, c: float) -> np.ndarray:
    r"""Clip every entry to $[-c, c]$, which bounds the release's $\ell_1$ sensitivity by $2cC$."""
    c = _check_positive("c", c)
    return np.clip(_check_values("values", values), -c, c)


def clipped_logits_l1_sensitivity(c: float, num_classes: int) -> float:
    r"""$\Delta_1 = 2cC$ for a vector of C logits clipped to $[-c, c]$ (each entry moves by at most $2c$)."""
    return 2.0 * _check_positive("c", c) * _check_int("num_classes", num_classes)


# ---------------------------------------------------------------- accounting


def workers_per_query(K: int, N: int) -> np.ndarray:
    r"""For each query $j$, the number of workers whose coded query depends on it: $\#\{i : E_{ij} \ne 0\}$."""
    K, N = _check_int("K", K), _check_int("N", N)
    return (codec.encoder_matrix(K, N) != 0).sum(axis=0)


def queries_reach_all_workers(K: int, N: int) -> bool:
    r"""True when every Berrut encoder weight $E_{ij}$ is nonzero, i.e. every query influences all N workers.

    Then no per-query bound better than $N\varepsilon_{\text{worker}}$ follows from the code's structure. False when
    a worker point coincides with a query point (e.g. odd K and even N, or N = 2K): that worker's encoder row is
    one-hot, and it receives a query in the clear.
    """
    return bool((workers_per_query(K, N) == _check_int("N", N)).all())


def advanced_composition(epsilon_worker: float, N: int, delta: float) -> float:
    r"""$\varepsilon'$ with $N$-fold composition of $\varepsilon$-DP releases $(\varepsilon', \delta)$-DP.

    $\varepsilon' = \sqrt{2N\ln(1/\delta)}\,\varepsilon + N\varepsilon(e^{\varepsilon} - 1)$
    (Dwork & Roth 2014, Thm 3.20). `delta` must lie in (0, 1).
    """
    eps = _check_positive("epsilon_worker", epsilon_worker)
    N = _check_int("N", N)
    delta = _check_positive("delta", delta)
    if delta >= 1:
        raise ValueError(f"delta must be < 1, got {delta!r}")
    return math.sqrt(2 * N * math.log(1 / delta)) * eps + N * eps * math.expm1(eps)


@dataclass(frozen=True)
class PrivacyCost:
    r"""Privacy of one round for ONE query: N workers each release an $\varepsilon_{\text{worker}}$-DP output.

    `epsilon_total` $= N \varepsilon_{\text{worker}}$ (pure $\varepsilon$-DP, basic composition).
    `advanced_epsilon`, `advanced_delta`: the $(\varepsilon, \delta)$-DP alternative from advanced composition,
    only when a delta was asked for (None otherwise). Use the smaller of the two statements, quoting $\delta$.
    """

    epsilon_worker: float
    n_workers: int
    epsilon_total: float
    advanced_epsilon: float | None = None
    advanced_delta: float | None = None


def round_privacy(epsilon_worker: float, N: int, *, delta: float | None = None) -> PrivacyCost:
    r"""Per-query privacy of one round, $\varepsilon_{\text{total}} = N \varepsilon_{\text{worker}}$.

    With `delta`, also the advanced-composition $(\varepsilon, \delta)$ statement.
    """
    eps = _check_positive("epsilon_worker", epsilon_worker)
    N = _check_int("N", N)
    if delta is None:
        return PrivacyCost(eps, N, N * eps)
    return PrivacyCost(eps, N, N * eps, advanced_composition(eps, N, delta), float(delta))


def epsilon_worker_for_total(epsilon_total: float, N: int) -> float:
    r"""The per-worker budget $\varepsilon_{\text{worker}} = \varepsilon_{\text{total}} / N$ for a round budget."""
    return _check_positive("epsilon_total", epsilon_total) / _check_int("N", N)


# ---------------------------------------------------------------- empirical audit


@dataclass(frozen=True)
class AuditResult:
    r"""Outcome of `audit`. `epsilon_lower` holds (with prob. $\ge$ `confidence`) below the true privacy loss.

    `edges`: inner bin edges (the first and last bins are open); `counts_x`, `counts_x_prime`: samples per bin;
    `bin_lower`: the per-bin lower bound on $|\log(p_B / q_B)|$; `worst_bin`: the index of its maximum.
    """

    epsilon: float
    epsilon_lower: float
    passed: bool
    n_samples: int
    confidence: float
    edges: np.ndarray
    counts_x: np.ndarray
    counts_x_prime: np.ndarray
    bin_lower: np.ndarray
    worst_bin: int


def _draw(
    mechanism: Mechanism,
    x: object,
    rng: np.random.Generator,
    size: int,
    project: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray:
    out = np.asarray(mechanism(x, rng, size))
    if project is not None:
        out = np.asarray(project(out))
    if out.shape != (size,):
        raise ValueError(
            f"mechanism(x, rng, size={size}) must give {size} scalar samples (after `project`), got shape {out.shape}"
        )
    return _check_values("mechanism samples", out)


def _clopper_pearson(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact binomial interval at level 1 - alpha for k successes out of n."""
    lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def audit(
    mechanism: Mechanism,
    x: object,
    x_prime: object,
    epsilon: float,
    *,
    n_samples: int,
    rng: RngLike,
    bins: int | Sequence[float] | np.ndarray = 20,
    confidence: float = 0.95,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> AuditResult:
    r"""Refute (or fail to refute) that `mechanism` is `epsilon`-DP on the neighbours `x`, `x_prime`.

    `mechanism(x, rng, size)` returns `size` independent releases; `project` (a post-processing, which cannot
    increase privacy loss) maps them to shape (size,) when they are not scalars. `n_samples` releases are drawn on
    each input and counted in common bins: `bins` inner edges, or an int number of bins with edges at the pooled
    quantiles of a separate pilot sample (so the bins do not depend on the counted samples). For each bin $B$,
    Clopper–Pearson intervals $[p_L, p_U]$, $[q_L, q_U]$ for $p = P[M(x) \in B]$, $q = P[M(x') \in B]$ give
    $|\log(p/q)| \ge \max(0, \log(p_L/q_U), \log(q_L/p_U))$. With Bonferroni over all $2 \cdot$ #bins
    intervals, every bound holds simultaneously with probability $\ge$ `confidence`; `epsilon_lower` is the
    largest, and `passed` is `epsilon_lower <= epsilon`.
    """
    if not callable(mechanism):
        raise TypeError(f"mechanism must be callable (x, rng, size) -> samples, got {type(mechanism).__name__}")
    epsilon = _check_positive("epsilon", epsilon)
    n_samples = _check_int("n_samples", n_samples, minimum=2)
    confidence = _check_positive("confidence", confidence)
    if confidence >= 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    rng = _check_rng(rng)

    if isinstance(bins, Integral) and not isinstance(bins, bool):
        n_bins = _check_int("bins", bins, minimum=2)
        n_pilot = max(1000, n_samples // 10)
        pilot = np.concatenate(
            [_draw(mechanism, x, rng, n_pilot, project), _draw(mechanism, x_prime, rng, n_pilot, project)]
        )
        edges = np.unique(np.quantile(pilot, np.arange(1, n_bins) / n_bins))
    else:
        edges = _check_values("bins", bins)
        if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins must be an int or a non-empty strictly increasing 1-D array, got {bins!r}")

    a = _draw(mechanism, x, rng, n_samples, project)
    b = _draw(mechanism, x_prime, rng, n_samples, project)
    n_cells = edges.size + 1
    counts_a = np.bincount(np.searchsorted(edges, a, side="left"), minlength=n_cells)
    counts_b = np.bincount(np.searchsorted(edges, b, side="left"), minlength=n_cells)

    alpha = (1 - confidence) / (2 * n_cells)
    p_lo, p_hi = _clopper_pearson(counts_a, n_samples, alpha)
    q_lo, q_hi = _clopper_pearson(counts_b, n_samples, alpha)
    with np.errstate(divide="ignore"):
        lower = np.maximum.reduce([np.zeros(n_cells), np.log(p_lo) - np.log(q_hi), np.log(q_lo) - np.log(p_hi)])
    worst = int(np.argmax(lower))
    eps_lower = float(lower[worst])
    return AuditResult(
        epsilon=epsilon,
        epsilon_lower=eps_lower,
        passed=eps_lower <= epsilon,
        n_samples=n_samples,
        confidence=confidence,
        edges=edges,
        counts_x=counts_a,
        counts_x_prime=counts_b,
        bin_lower=lower,
        worst_bin=worst,
    )

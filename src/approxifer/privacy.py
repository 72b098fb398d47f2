r"""Output-perturbation privacy for ApproxIFER ("Private-ApproxIFER"), with correct sensitivity and accounting.

A reproducibility report proposed that every worker adds Laplace noise to its prediction and claimed
$\varepsilon$-differential privacy. Its statement has three gaps, fixed here: it defines the sensitivity with the
$\ell_2$ norm while the Laplace mechanism (and its own proof) needs the $\ell_1$ norm; it analyses one worker's
release while every query reaches all N workers; and it never measures the cost in accuracy.

**Laplace mechanism** (Dwork & Roth 2014, Thm 3.6), over the reals. For $g: \mathcal{D} \to \mathbb{R}^d$ with
$\ell_1$ sensitivity $\Delta_1 = \max_{D \sim D'} \lVert g(D) - g(D') \rVert_1$, releasing
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
  A worker is therefore never a protected party, even one that also sees other workers' outputs.
* Whoever receives only the workers' outputs — the decoder's output channel, the users who get the decoded
  predictions, an eavesdropper on the worker→master links — sees only noisy predictions. Against them the whole
  round's release is $N\varepsilon_{\text{worker}}$-DP with respect to each query, and so is anything computed
  from it (post-processing), including the decoded outputs.
* The guarantee is about the queries of one round, not the model's training data: protecting training data
  against model inversion needs DP with respect to the training set (e.g. DP-SGD), a different neighbouring
  relation.

**In floating point.** The textbook sampler, $x + b \log(\cdot)$ of a uniform double (numpy's `laplace`), is not
$\varepsilon$-DP as implemented: the sets of doubles reachable from two neighbours differ, so one release can
rule a neighbour out (Mironov 2012; `impossible_fraction` measures it, `textbook_laplace` keeps the sampler for
that). The release here is exact on a grid instead, the construction of OpenDP's Laplace on floats: each value is
rounded to the nearest multiple of $\gamma = 2^k$ and exact discrete Laplace noise of scale $T$ grid steps is
added to the integer index (Canonne, Kamath & Steinke 2020). Every grid point has positive probability from
every input, and the integer privacy loss is bounded exactly: rounding moves two neighbours' indices apart by at
most $\lfloor \Delta_1/\gamma \rfloor + d$ for $d$ released values, so $T = \lceil (\Delta_1/\gamma + d) /
\varepsilon \rceil$ makes the release $\varepsilon' = (\lfloor \Delta_1/\gamma \rfloor + d)/T \le
\varepsilon$-DP (`laplace_grid`). Two samplers draw it: `laplace_release` (OpenDP, the operating system's
randomness, for deployment) and `laplace_mechanism` (seeded numpy, exact integer arithmetic, ~100 times faster,
for the experiments); the tests check that they agree in distribution.

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
from fractions import Fraction
from numbers import Integral, Real

import numpy as np
from scipy import stats

from approxifer import codec

__all__ = [
    "AuditResult",
    "LaplaceGrid",
    "PrivacyCost",
    "advanced_composition",
    "audit",
    "clip_logits",
    "clipped_logits_l1_sensitivity",
    "discrete_laplace",
    "epsilon_worker_for_total",
    "impossible_fraction",
    "laplace_grid",
    "laplace_mechanism",
    "laplace_release",
    "laplace_scale",
    "queries_reach_all_workers",
    "round_privacy",
    "softmax",
    "softmax_l1_sensitivity",
    "textbook_laplace",
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


# ---------------------------------------------------------------- the Laplace release, exact in floating point

GRID_BITS = 20  # the grid step is about 2^-20 of the noise scale (and of the sensitivity per value)
ATTACKED = ("textbook", "grid")


def laplace_scale(epsilon: float, l1_sensitivity: float) -> float:
    r"""The nominal Laplace scale $b = \Delta_1 / \varepsilon$ (standard deviation $\sqrt{2}\,b$).

    The implemented release noises on a grid with scale `laplace_grid(...).scale`, at most $2^{-18}$ larger.
    Scales outside $[2^{-1000}, 2^{1000}]$ are refused: float64 cannot carry such a release.
    """
    delta = _check_positive("l1_sensitivity", l1_sensitivity)
    eps = _check_positive("epsilon", epsilon)
    b = delta / eps
    if b > 2.0**1000:
        raise ValueError(
            f"epsilon = {eps!r} is so small that the Laplace scale l1_sensitivity / epsilon = {delta!r} / {eps!r} "
            f"= {b!r} overflows float64 (at most 2^1000 ~ 1e301): such a release is pure noise"
        )
    if b < 2.0**-1000:
        raise ValueError(
            f"epsilon = {eps!r} is so large that the Laplace scale l1_sensitivity / epsilon = {b!r} is below "
            f"2^-1000 ~ 1e-301, finer than float64 can carry: such a release protects nothing"
        )
    return b


@dataclass(frozen=True)
class LaplaceGrid:
    r"""How a release of `size` values with $\ell_1$ sensitivity $\Delta$ is noised at a budget $\varepsilon$.

    The values are rounded to the grid $\gamma = 2^k$ and integer noise of scale `units` $= T$ grid steps is
    added. `scale` $= T\gamma \ge \Delta/\varepsilon$ is the noise scale in value units; `epsilon` is the
    $\varepsilon' = (\lfloor \Delta/\gamma \rfloor + d)/T \le \varepsilon$ the release achieves, $d$ = `size`.
    """

    k: int
    units: int
    scale: float
    epsilon: float
    size: int

    @property
    def step(self) -> float:
        r"""The grid step $\gamma = 2^k$."""
        return math.ldexp(1.0, self.k)


def laplace_grid(epsilon: float, l1_sensitivity: float, size: int = 1) -> LaplaceGrid:
    r"""The grid and integer noise scale of an $\varepsilon$-DP release of $d$ = `size` values, sensitivity $\Delta$.

    $k = \lfloor \log_2(\Delta / \max(d, \varepsilon)) \rfloor - 20$, $\gamma = 2^k$ and
    $T = \lceil (\Delta/\gamma + d)/\varepsilon \rceil$, in exact rational arithmetic. Rounding moves each value
    by less than one grid step relative to its neighbour's, so two neighbours' grid indices differ by at most
    $\lfloor \Delta/\gamma \rfloor + d$ in $\ell_1$, and noise of $T$ steps makes the release
    $\varepsilon' = (\lfloor \Delta/\gamma \rfloor + d)/T \le \varepsilon$-DP. The noise scale
    $T\gamma \le (1 + 2^{-18}) \Delta/\varepsilon$.
    """
    b = laplace_scale(epsilon, l1_sensitivity)
    size = _check_int("size", size)
    epsilon, delta = float(epsilon), float(l1_sensitivity)
    k = math.frexp(delta / max(size, epsilon))[1] - 1 - GRID_BITS  # frexp gives floor(log2) + 1, exactly
    if k < -1000:
        raise ValueError(f"l1_sensitivity = {delta!r} over {size} values needs a grid below 2^-1000")
    gamma = Fraction(2) ** k
    units = math.ceil((Fraction(delta) / gamma + size) / Fraction(epsilon))
    if units >= 2**52:
        raise ValueError(
            f"epsilon = {epsilon!r} is too small for an exact release of {size} values (the noise would "
            f"span {units:.3g} grid steps, at most 2^52); at scale {b:.3g} such a release is pure noise"
        )
    index_sensitivity = math.floor(Fraction(delta) / gamma) + size
    return LaplaceGrid(k, units, math.ldexp(units, k), float(Fraction(index_sensitivity, units)), size)


def _grid_index(x: np.ndarray, grid: LaplaceGrid) -> np.ndarray:
    """The index of the nearest grid point, ties rounded up, exactly: x / 2^k and + 1/2 are exact below 2^52."""
    v = np.ldexp(x, -grid.k)
    if x.size and np.abs(v).max() >= 2.0**52:
        raise ValueError(
            f"values up to {np.abs(x).max():.3g} are too large for a noise scale of {grid.scale:.3g}: the exact grid "
            f"of step 2^{grid.k} holds |values| < {math.ldexp(1.0, 52 + grid.k):.3g} (use a smaller epsilon)"
        )
    return np.floor(v + 0.5).astype(np.int64)


def _bernoulli_exp(num: np.ndarray, den: int, rng: np.random.Generator) -> np.ndarray:
    r"""Exact Bernoulli($e^{-\text{num}/\text{den}}$) for integers $0 \le$ num $\le$ den (Canonne et al. 2020, Alg. 1):
    draw Bernoulli($\gamma/j$) for j = 1, 2, ... until the first failure; return whether it came at an odd j."""
    out = np.empty(num.shape, bool)
    pending = np.arange(num.size)
    j = 1
    while pending.size:
        success = rng.integers(0, den * j, size=pending.size) < num[pending]
        out[pending[~success]] = j % 2 == 1
        pending = pending[success]
        j += 1
    return out


def discrete_laplace(units: int, shape: int | tuple[int, ...], rng: RngLike) -> np.ndarray:
    r"""Exact i.i.d. discrete Laplace integers, $P[Z = z] = \frac{1 - e^{-1/T}}{1 + e^{-1/T}} e^{-|z|/T}$, T = `units`.

    Canonne, Kamath & Steinke 2020, Algorithm 2 (with $s = 1$, $t = T$): $U$ uniform on $\{0, \dots, T-1\}$,
    kept with probability $e^{-U/T}$; $V$ = the number of successes of Bernoulli($e^{-1}$) before a failure;
    $X = U + TV$ is geometric, $P[X = x] \propto e^{-x/T}$; a fair sign, with $-0$ rejected. Only exact uniform
    integers from `rng` are used (no floating point), so every probability is exactly as stated.
    """
    units = _check_int("units", units)
    if units >= 2**52:
        raise ValueError(f"units must be < 2^52, got {units}")
    rng = _check_rng(rng)
    n = math.prod((shape,) if isinstance(shape, Integral) else shape)
    out = np.empty(n, np.int64)
    pending = np.arange(n)
    while pending.size:
        u = rng.integers(0, units, size=pending.size)
        kept = _bernoulli_exp(u, units, rng)
        rejected, accepted, u = pending[~kept], pending[kept], u[kept]
        v = np.zeros(accepted.size, np.int64)
        going = np.arange(accepted.size)
        while going.size:
            going = going[_bernoulli_exp(np.ones(going.size, np.int64), 1, rng)]
            v[going] += 1
        x = u + units * v
        negative = rng.integers(0, 2, size=accepted.size).astype(bool)
        minus_zero = negative & (x == 0)
        out[accepted[~minus_zero]] = np.where(negative, -x, x)[~minus_zero]
        pending = np.concatenate([rejected, accepted[minus_zero]])
    return out.reshape(shape)


def _release_grid(values: object, epsilon: float, l1_sensitivity: float) -> tuple[np.ndarray, LaplaceGrid]:
    x = _check_values("values", values)
    return x, laplace_grid(epsilon, l1_sensitivity, x.shape[-1] if x.ndim and x.shape[-1] else 1)


def laplace_mechanism(values: object, epsilon: float, l1_sensitivity: float, rng: RngLike) -> np.ndarray:
    r"""The $\varepsilon$-DP Laplace release, exact in floating point, from a seeded numpy Generator (float64).

    Every vector along the last axis of `values` ($d$ values; a scalar is one value) is one release whose
    $\ell_1$ sensitivity is `l1_sensitivity` $= \Delta$; leading axes hold independent releases. With the grid
    $\gamma = 2^k$ and the integer scale $T$ of `laplace_grid`, each value $x$ is released as
    $\gamma\,(\lfloor x/\gamma + \tfrac12 \rfloor + Z)$, $Z$ exact discrete Laplace of scale $T$
    (`discrete_laplace`). The integers are exact, so each release is $\varepsilon'$-DP with
    $\varepsilon' = $ `laplace_grid(...).epsilon` $\le \varepsilon$; the conversion to float64 at the end is a
    post-processing. Same distribution as `laplace_release` (OpenDP); this one is seeded and fast (~0.3 µs per
    value), for experiments. `rng` is a numpy Generator or an int seed.
    """
    rng = _check_rng(rng)
    x, grid = _release_grid(values, epsilon, l1_sensitivity)
    index = _grid_index(x, grid) + discrete_laplace(grid.units, x.shape, rng)
    return np.ldexp(index.astype(np.float64), grid.k)


def laplace_release(values: object, epsilon: float, l1_sensitivity: float) -> np.ndarray:
    r"""The same release as `laplace_mechanism`, sampled by OpenDP from the operating system's randomness.

    For a deployment: OpenDP's `make_laplace` on float vectors rounds to the grid $2^k$ and adds exact discrete
    Laplace noise of scale $T 2^k$ (the `laplace_grid` values), and its own privacy map must certify at most
    `epsilon` for `l1_sensitivity` (checked). It cannot be seeded and takes ~30 µs per value.
    """
    import opendp.prelude as dp

    x, grid = _release_grid(values, epsilon, l1_sensitivity)
    _grid_index(x, grid)  # the same range check as the seeded release
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=grid.size), dp.l1_distance(T=float)
    measurement = dp.m.make_laplace(*space, scale=grid.scale, k=grid.k)
    certified = measurement.map(float(l1_sensitivity))
    if certified > epsilon:
        raise RuntimeError(f"OpenDP certifies epsilon = {certified!r} > {epsilon!r} for this grid: not released")
    rows = x.reshape(-1, grid.size)
    return np.asarray([measurement(row.tolist()) for row in rows], dtype=np.float64).reshape(x.shape)


def textbook_laplace(values: object, epsilon: float, l1_sensitivity: float, rng: RngLike) -> np.ndarray:
    r"""`values` + numpy's inverse-CDF Laplace sample of scale $\Delta/\varepsilon$: NOT differentially private in
    floating point (Mironov 2012). What this package released before; kept only to measure the attack."""
    b = laplace_scale(epsilon, l1_sensitivity)
    rng = _check_rng(rng)
    x = _check_values("values", values)
    return x + rng.laplace(0.0, b, size=x.shape)


def _textbook_noise(m: int, b: float) -> float:
    """numpy's Laplace sample for the uniform U = m 2^-53 it draws (numpy/random/src/distributions), bit for bit."""
    u = m * 2.0**-53
    return 0.0 - b * math.log(2.0 - u - u) if u >= 0.5 else 0.0 + b * math.log(u + u)


def _textbook_reachable(y: float, x: float, b: float) -> bool:
    """Whether some uniform m 2^-53 makes numpy's sampler release exactly y from x; x + noise(m) is monotone in m on
    each branch (U < 1/2 and U >= 1/2), so a binary search finds the candidates (checked with their neighbours)."""
    for lo, hi in ((1, 2**52), (2**52, 2**53)):
        a, c = lo, hi
        while a < c:
            mid = (a + c) // 2
            if x + _textbook_noise(mid, b) >= y:
                c = mid
            else:
                a = mid + 1
        if any(x + _textbook_noise(m, b) == y for m in range(max(lo, a - 2), min(hi, a + 3))):
            return True
    return False


def impossible_fraction(
    x: float, x_prime: float, epsilon: float, l1_sensitivity: float, *, mechanism: str, n_samples: int, rng: RngLike
) -> float:
    r"""The share of `n_samples` releases of the scalar `x` that the scalar `x_prime` can never produce.

    Each such release tells whoever sees it that the input was not $x'$: an infinite privacy loss (Mironov 2012).
    `textbook`: `textbook_laplace`, whose sample is $-b\log(2 - 2U)$ or $b\log(2U)$ for one of the $2^{53}$
    doubles $U = m 2^{-53}$; $y$ is reachable from $x'$ iff some $m$ gives exactly $y$ (decided by a binary
    search over $m$). `grid`: `laplace_mechanism`; $y$ is reachable from $x'$ iff $y/\gamma$ is an integer, since
    the discrete Laplace noise gives every integer a positive probability.
    """
    if mechanism not in ATTACKED:
        raise ValueError(f"unknown mechanism {mechanism!r}; known: {', '.join(ATTACKED)}")
    x, x_prime = (float(_check_values(name, v)) for name, v in (("x", x), ("x_prime", x_prime)))
    n_samples = _check_int("n_samples", n_samples)
    b = laplace_scale(epsilon, l1_sensitivity)
    if mechanism == "textbook":
        y = textbook_laplace(np.full(n_samples, x), epsilon, l1_sensitivity, rng)
        return float(np.mean([not _textbook_reachable(float(v), x_prime, b) for v in y]))
    y = laplace_mechanism(np.full((n_samples, 1), x), epsilon, l1_sensitivity, rng)
    index = np.ldexp(y, -laplace_grid(epsilon, l1_sensitivity).k)
    return float(np.mean(index != np.floor(index)))


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
    value = math.sqrt(2 * N * math.log(1 / delta)) * eps + N * eps * math.expm1(eps) if eps < 709 else math.inf
    if not math.isfinite(value):
        raise ValueError(
            f"advanced composition overflows for epsilon_worker = {eps!r}, N = {N}, delta = {delta!r}: "
            f"N epsilon (e^epsilon - 1) exceeds float64; basic composition gives N epsilon = {N * eps:.6g}"
        )
    return value


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
    if not math.isfinite(N * eps):
        raise ValueError(f"N epsilon_worker = {N} x {eps!r} overflows float64: no finite budget to state")
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

r"""Private-ApproxIFER in the experiments: accuracy under output noise, an audit on real outputs, what workers see.

The mechanism and its accounting live in `privacy`; this module runs them on serving rounds.

* `private_accuracy`: every worker releases its output vector — softmax probabilities ($\Delta_1 = 2$) or logits
  clipped to $[-c, c]$ ($\Delta_1 = 2cC$) — through `privacy.laplace_mechanism` (Laplace noise of scale
  $\Delta_1/\varepsilon_{\text{worker}}$, exact on a grid, so $\varepsilon_{\text{worker}}$-DP in floating point
  too); the decoder interpolates the noisy releases of a random set of $N - S$ workers. The base model with the
  same mechanism releases its own output on each raw query once (per-query $\varepsilon$ = its $\varepsilon$). The
  round's per-query privacy is $\varepsilon_{\text{total}} = N\varepsilon_{\text{worker}}$
  (`privacy.round_privacy`): stragglers release too, only later. Every $\varepsilon$ draws its noise from the same
  seed, so a point does not depend on which other $\varepsilon$ are swept.
* `noise_threshold`: the smallest $\varepsilon_{\text{worker}}$ of a grid from which on the accuracy stays within
  `tol` of the noiseless one, with a bootstrap interval over rounds (image groups), and the paired drop at each
  grid point with its CI.
* `neighbouring_rounds`, `audit_release`: two rounds that differ in one query, the worker outputs on both, and
  `privacy.audit` of the released vectors (one worker's, or all N) projected to the Laplace log-likelihood ratio.
* `coded_queries`, `reveal`, `reconstruct`: what one worker receives, how much of a query it shows in the clear,
  and that any K workers together recover every query exactly. Output noise does not change any of this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import ndimage

from approxifer import codec, data, privacy
from approxifer.experiments import (
    ParameterError,
    WorkerOutputs,
    accuracy_ci,
    check_config,
    decode_groups,
    draw_returned,
    test_groups,
    tile_draws,
)
from approxifer.report import NAMES
from approxifer.report import glue_key as dataset_key
from approxifer.serving import ServedModel

__all__ = [
    "ARCH_NAMES",
    "ATTACK_SETTINGS",
    "RELEASES",
    "NeighbouringRounds",
    "accuracy_figure",
    "accuracy_glue",
    "accuracy_table",
    "attack_table",
    "audit_display",
    "audit_glue",
    "audit_release",
    "audit_table",
    "budget_table",
    "check_private_params",
    "coded_figure",
    "coded_queries",
    "exposure",
    "glue_key",
    "neighbouring_rounds",
    "noise_threshold",
    "noisy_release",
    "one_hot_workers",
    "pair_table",
    "private_accuracy",
    "reconstruct",
    "release_comparison",
    "release_l2_sensitivity",
    "release_sensitivity",
    "released",
    "reveal",
    "ssim",
    "threshold_figure",
    "threshold_glue",
    "threshold_summary",
    "threshold_table",
]

RELEASES = ("probs", "clipped")


# ---------------------------------------------------------------- validation


def _epsilons(epsilons: object) -> list[float]:
    if isinstance(epsilons, str | bytes) or not isinstance(epsilons, Iterable):
        raise ParameterError(f"epsilons must be a list of positive numbers, got {epsilons!r}")
    out = []
    for e in epsilons:
        if isinstance(e, bool) or not isinstance(e, Real) or math.isnan(e) or e <= 0:
            raise ParameterError(f"every epsilon must be a number > 0 (math.inf: no noise), got {e!r}")
        out.append(float(e))
    if not out:
        raise ParameterError("epsilons is empty: give at least one per-worker epsilon")
    return out


def _release(release: object, clip: object) -> tuple[str, float | None]:
    if release not in RELEASES:
        raise ParameterError(f"unknown release {release!r}; known: {', '.join(RELEASES)}")
    if release == "probs":
        return "probs", None
    if isinstance(clip, bool) or not isinstance(clip, Real) or not math.isfinite(clip) or clip <= 0:
        raise ParameterError(f"release='clipped' needs a finite clip bound c > 0, got clip={clip!r}")
    return "clipped", float(clip)


def _posint(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_private_params(
    *,
    epsilons: object,
    release: object,
    clip: object,
    audit_epsilon: object = 1.0,
    audit_samples: object = 1000,
    fine_epsilons: object = (10.0,),
    tolerance: object = 0.01,
    attack_samples: object = 100,
) -> None:
    """Validate the privacy notebook's own parameters; raise one `ParameterError` that says what is wrong."""
    _epsilons(epsilons)
    if not all(math.isfinite(e) for e in _epsilons(fine_epsilons)):
        raise ParameterError(
            f"fine_epsilons must be finite (the grid the threshold is located on), got {fine_epsilons!r}"
        )
    _release(release, clip)
    if clip is not None:
        _release("clipped", clip)
    _epsilons([audit_epsilon])
    if math.isinf(audit_epsilon):
        raise ParameterError("audit_epsilon must be finite: an infinite epsilon adds no noise to audit")
    _posint("audit_samples", audit_samples, 1000)
    _posint("attack_samples", attack_samples, 100)
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 < tolerance < 1:
        raise ParameterError(f"tolerance must be a number in (0, 1), got {tolerance!r}")


# ---------------------------------------------------------------- the released vector


def released(scores: np.ndarray, release: str, *, clip: float | None = None) -> np.ndarray:
    """What a worker releases before noise: softmax probabilities, or logits clipped to [-clip, clip]."""
    release, clip = _release(release, clip)
    return privacy.softmax(scores) if release == "probs" else privacy.clip_logits(scores, clip)


def release_sensitivity(release: str, num_classes: int, *, clip: float | None = None) -> float:
    r"""$\Delta_1$ of one worker's release: 2 for probabilities, $2cC$ for logits clipped to $[-c, c]$."""
    release, clip = _release(release, clip)
    if release == "probs":
        return privacy.softmax_l1_sensitivity()
    return privacy.clipped_logits_l1_sensitivity(clip, _posint("num_classes", num_classes))


def release_l2_sensitivity(release: str, num_classes: int, *, clip: float | None = None) -> float:
    r"""The $\ell_2$ sensitivity the report's Definition 2 would use: $\sqrt 2$ for probabilities, $2c\sqrt C$ for
    clipped logits. Calibrating Laplace noise to it is NOT $\varepsilon$-DP (the audit's negative control)."""
    release, clip = _release(release, clip)
    C = _posint("num_classes", num_classes)
    return math.sqrt(2.0) if release == "probs" else 2.0 * clip * math.sqrt(C)


def noisy_release(
    scores: np.ndarray, epsilon: float, release: str, *, clip: float | None = None, rng: privacy.RngLike
) -> np.ndarray:
    r"""`released(scores)` through `privacy.laplace_mechanism` at `epsilon` (last axis: the C classes).

    Every vector along the last axis is one release, $\varepsilon$-DP on its own, in floating point too (noise
    of scale $\Delta_1/\varepsilon$, exact on a grid). `epsilon = math.inf` returns the release without noise
    (and draws none).
    """
    (epsilon,) = _epsilons([epsilon])
    values = released(scores, release, clip=clip)
    if math.isinf(epsilon):
        return values
    return privacy.laplace_mechanism(values, epsilon, release_sensitivity(release, values.shape[-1], clip=clip), rng)


# ---------------------------------------------------------------- accuracy under noise


def _noisy_correct(
    wo: WorkerOutputs, epsilon: float, release: str, clip: float | None, S: int, seed: int, draws: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per round (G * draws rounds, the groups tiled `draws` times): which decoded and which base predictions are
    right at `epsilon`. The returned sets and the noise seed depend on (seed, K, N, S) only."""
    K, N = wo.K, wo.N
    tile = lambda a: tile_draws(a, draws)  # noqa: E731
    truth = tile(wo.labels)
    returned = draw_returned(len(truth), N, S, np.random.default_rng([seed, K, N]))
    Y = noisy_release(tile(wo.coded), epsilon, release, clip=clip, rng=np.random.default_rng([seed, K, N, S, 1]))
    B = noisy_release(tile(wo.base), epsilon, release, clip=clip, rng=np.random.default_rng([seed, K, N, S, 2]))
    return decode_groups(Y, returned, K, N).argmax(-1) == truth, B.argmax(-1) == truth


def private_accuracy(
    wo: WorkerOutputs,
    epsilons: Sequence[float],
    *,
    release: str = "probs",
    clip: float | None = None,
    S: int = 1,
    seed: int = 0,
    draws: int = 1,
) -> pd.DataFrame:
    r"""Accuracy ± 95 % CI against the per-worker $\varepsilon$, for ApproxIFER and for the base model.

    ApproxIFER: each of the N workers releases `noisy_release` of its coded query's output; the decoder uses a
    uniformly random set of N − S of them (the same sets for every $\varepsilon$, and the same as
    `experiments.straggler_table` when S = N − K). Base: the same mechanism on the model's own output for each
    raw query. `epsilon_total` is the round's per-query $N\varepsilon_{\text{worker}}$; `epsilon_base` the base
    model's per-query $\varepsilon$; `laplace_scale` the implemented noise scale (`privacy.laplace_grid`).
    `math.inf` in `epsilons` gives the noiseless reference row. CIs resample image groups (`draws` > 1 reuses
    each group).
    """
    epsilons = _epsilons(epsilons)
    release, clip = _release(release, clip)
    K, N, S, _ = check_config(wo.K, wo.N, S)
    draws = _posint("draws", draws)
    seed = _posint("seed", seed, 0)
    clusters = np.tile(np.arange(wo.G), draws)
    C = wo.coded.shape[-1]
    delta = release_sensitivity(release, C, clip=clip)
    rows = []
    for eps in epsilons:
        approx, base = _noisy_correct(wo, eps, release, clip, S, seed, draws)
        inf = math.isinf(eps)
        row = {
            "release": release,
            "K": K,
            "N": N,
            "S": S,
            "epsilon_worker": eps,
            "epsilon_total": math.inf if inf else privacy.round_privacy(eps, N).epsilon_total,
            "epsilon_base": eps,
            "laplace_scale": 0.0 if inf else privacy.laplace_grid(eps, delta, C).scale,
            "rounds": len(approx),
            "queries": approx.size,
        }
        for name, correct in (("accuracy", approx), ("base", base)):
            lo, hi = ("ci_low", "ci_high") if name == "accuracy" else ("base_low", "base_high")
            row |= dict(zip((name, lo, hi), accuracy_ci(correct, clusters=clusters), strict=True))
        rows.append(row)
    return pd.DataFrame(rows)


def _first_within(drops: np.ndarray, epsilons: np.ndarray, tol: float) -> np.ndarray:
    """Over the last axis (the sorted grid): the smallest epsilon from which on every drop is <= tol (inf: none)."""
    ok = np.flip(np.logical_and.accumulate(np.flip(drops <= tol, -1), axis=-1), -1)  # within from here on
    first = np.argmax(ok, axis=-1)
    return np.where(ok.any(axis=-1), epsilons[first], math.inf)


def noise_threshold(
    wo: WorkerOutputs,
    epsilons: Sequence[float],
    *,
    tol: float = 0.01,
    release: str = "probs",
    clip: float | None = None,
    S: int = 1,
    seed: int = 0,
    draws: int = 1,
    n_boot: int = 2000,
    level: float = 0.95,
) -> tuple[pd.DataFrame, dict[str, float]]:
    r"""Where accuracy comes back: the smallest $\varepsilon_{\text{worker}}$ of the grid from which on the
    accuracy stays within `tol` of the noiseless one, for ApproxIFER and for the base model, with bootstrap CIs.

    The drop at $\varepsilon$ is the paired difference noiseless − noisy over the same rounds (`private_accuracy`'s
    draws). One bootstrap resamples image groups; each resample gives every grid point's drop (their percentile
    CIs: the table) and its own threshold (their percentile interval, on grid points: the summary). A threshold
    beyond the grid is `inf`. Returns the per-$\varepsilon$ table (`drop`, `drop_low`, `drop_high`, `within`, and
    `base_*`) and `{"eps", "lo", "hi", "base_eps", "base_lo", "base_hi"}`.
    """
    grid = np.array(sorted({e for e in _epsilons(epsilons) if math.isfinite(e)}))
    if grid.size == 0:
        raise ParameterError("noise_threshold needs finite epsilons")
    if isinstance(tol, bool) or not isinstance(tol, Real) or not 0 < tol < 1:
        raise ParameterError(f"tol must be a number in (0, 1), got {tol!r}")
    release, clip = _release(release, clip)
    _, N, S, _ = check_config(wo.K, wo.N, S)
    draws, seed, n_boot = _posint("draws", draws), _posint("seed", seed, 0), _posint("n_boot", n_boot, 100)
    clusters = np.tile(np.arange(wo.G), draws)
    counts = np.bincount(clusters).astype(np.float64)

    def per_group(correct: np.ndarray) -> np.ndarray:  # sum over each image group's rounds of the round accuracy
        return np.bincount(clusters, weights=correct.mean(axis=1), minlength=wo.G)

    runs = [_noisy_correct(wo, e, release, clip, S, seed, draws) for e in [math.inf, *grid]]
    boots = np.random.default_rng([seed, 7]).integers(0, wo.G, (n_boot, wo.G))
    q = [(1 - level) / 2, (1 + level) / 2]
    table = pd.DataFrame({"epsilon_worker": grid, "epsilon_total": N * grid})
    summary = {}
    for which, prefix in ((0, ""), (1, "base_")):
        sums = np.stack([per_group(run[which]) for run in runs])  # (1 + E, G)
        drop = (sums[0] - sums[1:]).sum(axis=1) / counts.sum()
        clean, n = sums[0][boots].sum(axis=1), counts[boots].sum(axis=1)
        boot_drop = np.stack([(clean - s[boots].sum(axis=1)) / n for s in sums[1:]])  # (E, n_boot)
        lo, hi = np.quantile(boot_drop, q, axis=1)
        table[f"{prefix}drop"], table[f"{prefix}drop_low"], table[f"{prefix}drop_high"] = drop, lo, hi
        table[f"{prefix}within"] = drop <= tol
        boot_eps = _first_within(boot_drop.T, grid, tol)
        interval = np.quantile(boot_eps, q, method="inverted_cdf")
        summary |= {f"{prefix}eps": float(_first_within(drop, grid, tol)), f"{prefix}lo": float(interval[0])}
        summary[f"{prefix}hi"] = float(interval[1])
    return table, summary


# ---------------------------------------------------------------- audit on real outputs


@dataclass(frozen=True)
class NeighbouringRounds:
    """Two rounds that differ in query `position`: the worker outputs on both, as released before noise.

    `a`, `b`: (N, C) noiseless releases of the N workers on D and on D'; `l1`: (N,) their per-worker ℓ1
    distance; `query`, `replacement`: the test indices of the changed query on D and on D'.
    """

    K: int
    N: int
    release: str
    clip: float | None
    sensitivity: float
    queries: np.ndarray
    position: int
    query: int
    replacement: int
    a: np.ndarray
    b: np.ndarray
    l1: np.ndarray


def neighbouring_rounds(
    model: ServedModel,
    K: int,
    N: int,
    *,
    release: str = "probs",
    clip: float | None = None,
    seed: int = 0,
    candidates: int = 8,
) -> NeighbouringRounds:
    """The first round of the seeded test split, and its worst neighbour among a few replace-one candidates.

    Every query position j of the round and each of the next `candidates` test images as its replacement are
    tried; the pair whose N releases differ most in total ℓ1 is kept (the auditor may pick the neighbours that
    make the privacy loss largest: a DP guarantee holds for every pair).
    """
    release, clip = _release(release, clip)
    K, N, _, _ = check_config(K, N)
    candidates = _posint("candidates", candidates)
    groups = test_groups(model.dataset, K, seed=seed, n_test=K + candidates + (-candidates) % K)
    x, _ = data.load(model.dataset, "test")
    queries, pool = groups[0], groups[1:].ravel()[:candidates]
    X = data.to_tensor(x[queries], model.dataset)
    P = data.to_tensor(x[pool], model.dataset)
    rounds = X.unsqueeze(0).repeat(K * candidates + 1, *(1,) * X.ndim)  # round 0: D itself
    for j in range(K):
        rounds[1 + j * candidates : 1 + (j + 1) * candidates, j] = P
    out = model.predict(codec.encode(rounds, N, axis=1).flatten(0, 1)).reshape(len(rounds), N, -1)
    rel = released(out.astype(np.float64), release, clip=clip)
    l1 = np.abs(rel[1:] - rel[0]).sum(axis=-1)  # (K * candidates, N)
    best = int(np.argmax(l1.sum(axis=1)))
    j, c = divmod(best, candidates)
    return NeighbouringRounds(
        K=K,
        N=N,
        release=release,
        clip=clip,
        sensitivity=release_sensitivity(release, rel.shape[-1], clip=clip),
        queries=queries,
        position=j,
        query=int(queries[j]),
        replacement=int(pool[c]),
        a=rel[0],
        b=rel[1 + best],
        l1=l1[best],
    )


def audit_release(
    pair: NeighbouringRounds,
    epsilon_worker: float,
    audited_epsilon: float,
    *,
    workers: Sequence[int] | None = None,
    sensitivity: float | None = None,
    n_samples: int,
    rng: privacy.RngLike,
    chunk: int = 20_000,
) -> privacy.AuditResult:
    r"""`privacy.audit` of the joint release of `workers` (default: all N) on the two neighbouring rounds.

    Each worker releases its vector through `privacy.laplace_mechanism` at $\varepsilon_{\text{worker}}$ with
    $\ell_1$ sensitivity $\Delta$ = `sensitivity` (default: the correct bound; pass a smaller one to audit a
    mis-calibrated mechanism): the implemented mechanism, not an idealisation of it. The releases are projected to
    $\sum_k |y_k - b_k| - |y_k - a_k|$, the Laplace log-likelihood ratio of D against D' (up to the scale), a fixed
    post-processing; the audit then checks `audited_epsilon`.
    """
    idx = np.arange(pair.N) if workers is None else np.asarray(workers, dtype=int)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= pair.N or len(set(idx.tolist())) != idx.size:
        raise ParameterError(f"workers must be distinct indices in 0..{pair.N - 1}, got {workers!r}")
    delta = pair.sensitivity if sensitivity is None else sensitivity
    a, b = pair.a[idx], pair.b[idx]  # (workers, C): each row is one worker's release
    chunk = _posint("chunk", chunk)

    def mechanism(mean: np.ndarray, g: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(size)
        for s in range(0, size, chunk):
            n = min(chunk, size - s)
            y = privacy.laplace_mechanism(np.broadcast_to(mean, (n, *mean.shape)), epsilon_worker, delta, g)
            out[s : s + n] = (np.abs(y - b) - np.abs(y - a)).sum(axis=(1, 2))
        return out

    return privacy.audit(mechanism, a, b, audited_epsilon, n_samples=n_samples, rng=rng, bins=20)


def audit_table(pair: NeighbouringRounds, epsilon_worker: float, *, n_samples: int, seed: int = 0) -> pd.DataFrame:
    r"""The audits the privacy chapter reports, on one pair of neighbouring rounds.

    1. the most affected worker alone, correct $\ell_1$ calibration, against $\varepsilon_{\text{worker}}$;
    2. all N releases of the round, correct calibration, against $N\varepsilon_{\text{worker}}$ (the theorem);
    3. the same N releases against $\varepsilon_{\text{worker}}$ (the report's claim for the round);
    4. negative control: the most affected worker with noise calibrated to the $\ell_2$ sensitivity
       (`release_l2_sensitivity`, the report's Definition 2), against the $\varepsilon_{\text{worker}}$ it claims.
    """
    (epsilon_worker,) = _epsilons([epsilon_worker])
    l2_sensitivity = release_l2_sensitivity(pair.release, pair.a.shape[-1], clip=pair.clip)
    worst = int(np.argmax(pair.l1))
    N = pair.N
    cases = [
        ("one worker", "ℓ1 (correct)", [worst], None, epsilon_worker),
        (f"all N = {N} workers", "ℓ1 (correct)", None, None, N * epsilon_worker),
        (f"all N = {N} workers", "ℓ1 (correct)", None, None, epsilon_worker),
        ("one worker", "ℓ2 (the report's)", [worst], l2_sensitivity, epsilon_worker),
    ]
    rows = []
    for i, (who, calib, workers, sens, audited) in enumerate(cases):
        res = audit_release(
            pair,
            epsilon_worker,
            audited,
            workers=workers,
            sensitivity=sens,
            n_samples=n_samples,
            rng=np.random.default_rng([seed, i]),
        )
        idx = np.arange(N) if workers is None else np.asarray(workers)
        delta = pair.sensitivity if sens is None else sens
        rows.append(
            {
                "release observed": who if workers is None else f"{who} (worker {worst})",
                "calibration": calib,
                "epsilon_worker": epsilon_worker,
                "true loss bound": float(pair.l1[idx].sum()) * epsilon_worker / delta,
                "audited epsilon": audited,
                "epsilon_lower": res.epsilon_lower,
                "passed": res.passed,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- what a worker sees


def one_hot_workers(K: int, N: int) -> list[int]:
    """The workers whose encoder row is one-hot (a worker point equals a query point): they get a query itself."""
    K, N, _, _ = check_config(K, N)
    E = codec.encoder_matrix(K, N)
    return np.flatnonzero((E != 0).sum(axis=1) == 1).tolist()


def coded_queries(images: np.ndarray, dataset: str, N: int) -> np.ndarray:
    """The N coded queries of K uint8 images (K, H, W, C), as workers get them, de-normalised to [0, 1] pixels.

    Encoded in float64 (the served models get the same in float32). Values can leave [0, 1] (Berrut weights can
    be negative); nothing is clipped here.
    """
    d = data.info(dataset)
    mean, std = np.asarray(d.mean), np.asarray(d.std)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != d.shape:
        shape = ", ".join(map(str, d.shape))
        raise ValueError(f"expected uint8 images (K, {shape}), got {images.dtype} {images.shape}")
    normalised = (images / 255.0 - mean) / std  # what data.to_tensor gives the model, in float64
    return codec.encode(normalised, N) * std + mean


def ssim(x: np.ndarray, y: np.ndarray, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images (H, W) or (H, W, C), Gaussian window σ=1.5.

    Channels are compared separately and averaged; 1 means identical.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"ssim needs two images of the same shape (H, W) or (H, W, C), got {x.shape}, {y.shape}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    scores = []
    for ch in range(x.shape[-1]):
        a, b = x[..., ch], y[..., ch]
        f = lambda z: ndimage.gaussian_filter(z, sigma, truncate=3.5)  # noqa: E731 - 11 x 11 window
        mx, my = f(a), f(b)
        vx, vy, cxy = f(a * a) - mx * mx, f(b * b) - my * my, f(a * b) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(s.mean())
    return float(np.mean(scores))


def reveal(images: np.ndarray, dataset: str, N: int) -> pd.DataFrame:
    r"""Per worker: how much of one query its coded query shows in the clear.

    `max |weight|`: the largest $|E_{ij}|$ of its encoder row (1: it receives a query itself); `nearest query`:
    the query its coded query correlates with most; `pearson`, `ssim`, `relative L2` ($\lVert \tilde X_i - X_j
    \rVert_2 / \lVert X_j \rVert_2$) against that query, on de-normalised pixels.
    """
    K = len(images)
    coded = coded_queries(images, dataset, N)
    plain = images.astype(np.float64) / 255.0
    E = codec.encoder_matrix(K, N)
    q = plain.reshape(K, -1)
    c = coded.reshape(N, -1)
    qc = (q - q.mean(1, keepdims=True)) / q.std(1, keepdims=True)
    cc = (c - c.mean(1, keepdims=True)) / c.std(1, keepdims=True)
    corr = cc @ qc.T / q.shape[1]  # (N, K)
    rows = []
    for i in range(N):
        j = int(np.argmax(corr[i]))
        rows.append(
            {
                "worker": i,
                "max |weight|": float(np.abs(E[i]).max()),
                "nearest query": j,
                "pearson": float(corr[i, j]),
                "ssim": ssim(coded[i], plain[j]),
                "relative L2": float(np.linalg.norm(c[i] - q[j]) / np.linalg.norm(q[j])),
            }
        )
    return pd.DataFrame(rows).set_index("worker")


def reconstruct(coded: np.ndarray, workers: Sequence[int], K: int, N: int) -> np.ndarray:
    r"""The K queries from the coded queries of `workers` (any K with an invertible block of $E$): solve
    $E_{\text{workers}} X = \tilde X_{\text{workers}}$. `coded` holds those workers' coded queries, in order."""
    workers = list(workers)
    if len(workers) != K:
        raise ParameterError(f"reconstruct needs exactly K={K} workers, got {len(workers)}")
    block = codec.encoder_matrix(K, N)[workers]
    coded = np.asarray(coded, np.float64)
    return np.linalg.solve(block, coded.reshape(K, -1)).reshape(coded.shape)


# ---------------------------------------------------------------- the privacy notebook: tables, figures, glue

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
ARCH_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "vgg16": "VGG-16", "mobilenetv2": "MobileNetV2",
              "lenet5": "LeNet-5", "mlp": "MLP"}  # fmt: skip


def glue_key(dataset: str, epsilon: float | None = None) -> str:
    """The glue-name stem of a dataset (`fashionmnist`), and of an epsilon in it (`mnist_e0p1`, `mnist_noiseless`)."""
    stem = dataset_key(dataset)
    if epsilon is None:
        return stem
    return f"{stem}_noiseless" if math.isinf(epsilon) else f"{stem}_e" + f"{epsilon:g}".replace(".", "p")


def _num(value: float) -> str:
    """A number for a table: 3 significant digits, powers of ten beyond 10⁴, `–` for NaN, `∞`."""
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞"
    if abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _ci(value: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _eps_ci(eps: float, lo: float, hi: float, grid_max: float, scale: float = 1.0) -> str:
    """A threshold with its interval on the grid: `26 [24, 30]`; beyond the grid: `> 50`."""
    show = lambda e: f"> {grid_max * scale:g}" if math.isinf(e) else f"{e * scale:g}"  # noqa: E731
    return f"{show(eps)} [{show(lo)}, {show(hi)}]"


def accuracy_glue(results: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Every point of `private_accuracy` per dataset: `<dataset>_<eps>_{acc,lo,hi,base,base_lo,base_hi,total,scale}`."""
    out = {}
    for d, df in results.items():
        for r in df.itertuples():
            k = glue_key(d, r.epsilon_worker)
            values = (r.accuracy, r.ci_low, r.ci_high, r.base, r.base_low, r.base_high, r.epsilon_total)
            names = ("acc", "lo", "hi", "base", "base_lo", "base_hi", "total")
            out |= {f"{k}_{n}": v for n, v in zip(names, values, strict=True)} | {f"{k}_scale": r.laplace_scale}
    return out


def accuracy_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy ± 95 % CI of ApproxIFER and of the base model at each per-worker epsilon, per dataset."""
    rows = []
    for d, df in results.items():
        for r in df.itertuples():
            inf = math.isinf(r.epsilon_worker)
            rows.append({
                "dataset": NAMES.get(d, d),
                "ε per worker": "no noise" if inf else f"{r.epsilon_worker:g}",
                "ε per query": "–" if inf else f"{r.epsilon_total:g}",
                "noise scale b": "–" if inf else _num(r.laplace_scale),
                "ApproxIFER [95 % CI]": _ci(r.accuracy, r.ci_low, r.ci_high),
                "base model [95 % CI]": _ci(r.base, r.base_low, r.base_high),
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "ε per worker"])


def _figure(height: float):
    """Two panels across, drawn at the width the book shows them (7.2 in), default 10 pt text."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.2, height), constrained_layout=True)
    return fig, axes


def _band(ax, x, y, lo, hi, **kw) -> None:
    (line,) = ax.plot(x, y, ms=4, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, lw=0)


STYLES = (("o", "-", "ApproxIFER"), ("s", "--", "base model, same mechanism"), ("", ":", "noiseless"))


def accuracy_figure(results: dict[str, pd.DataFrame]):
    """Accuracy against the per-worker epsilon (left) and against the per-query epsilon (right), 95 % CI bands;
    colour = dataset, solid = ApproxIFER, dashed = the base model, dotted = noiseless; the legend below."""
    from matplotlib.lines import Line2D

    fig, (left, right) = _figure(3.6)
    for i, df in enumerate(results.values()):
        noisy, clean = df[np.isfinite(df["epsilon_worker"])], df[~np.isfinite(df["epsilon_worker"])]
        c = f"C{i}"
        for ax, x_ours, x_base in (
            (left, "epsilon_worker", "epsilon_worker"),
            (right, "epsilon_total", "epsilon_base"),
        ):
            x = noisy[x_ours]
            _band(ax, x, noisy["accuracy"], noisy["ci_low"], noisy["ci_high"], color=c, marker="o")
            x = noisy[x_base]
            _band(ax, x, noisy["base"], noisy["base_low"], noisy["base_high"], color=c, marker="s", ls="--")
            for y in clean[["accuracy", "base"]].to_numpy().ravel():
                ax.axhline(y, color=c, ls=":", lw=1)
    left.set(xscale="log", xlabel="ε per worker", ylabel="accuracy", title="against each worker's budget")
    right.set(xscale="log", xlabel="ε per query (whole round)", title="against what a query spends")
    datasets = [(Line2D([], [], color=f"C{i}", lw=2), NAMES.get(d, d)) for i, d in enumerate(results)]
    styles = [(Line2D([], [], color="k", marker=m, ls=s, ms=4), n) for m, s, n in STYLES]
    blank = (Line2D([], [], alpha=0), "")
    columns = max(len(datasets), len(styles))
    datasets += [blank] * (columns - len(datasets))
    entries = [e for pair in zip(datasets, styles + [blank] * (columns - len(styles)), strict=True) for e in pair]
    fig.legend(*zip(*entries, strict=True), loc="outside lower center", ncols=columns, frameon=False)
    return fig


def threshold_glue(thresholds: dict[str, tuple[pd.DataFrame, dict]], N: int) -> dict[str, float]:
    """`<dataset>_within1_{eps,lo,hi,total,total_lo,total_hi}` and `<dataset>_base_within1_{eps,lo,hi}`."""
    out = {}
    for d, (_, s) in thresholds.items():
        k = glue_key(d)
        out |= {f"{k}_within1_eps": s["eps"], f"{k}_within1_lo": s["lo"], f"{k}_within1_hi": s["hi"]}
        out |= {f"{k}_within1_total": N * s["eps"], f"{k}_within1_total_lo": N * s["lo"]}
        out |= {f"{k}_within1_total_hi": N * s["hi"], f"{k}_base_within1_eps": s["base_eps"]}
        out |= {f"{k}_base_within1_lo": s["base_lo"], f"{k}_base_within1_hi": s["base_hi"]}
    return out


def threshold_summary(thresholds: dict[str, tuple[pd.DataFrame, dict]], N: int) -> pd.DataFrame:
    """Per dataset: the epsilon from which on the accuracy stays within tolerance, [95 % bootstrap interval]."""
    rows = []
    for d, (table, s) in thresholds.items():
        top = float(table["epsilon_worker"].max())
        rows.append({
            "dataset": NAMES.get(d, d),
            "ApproxIFER: ε per worker": _eps_ci(s["eps"], s["lo"], s["hi"], top),
            "ApproxIFER: ε per query": _eps_ci(s["eps"], s["lo"], s["hi"], top, N),
            "base model: ε": _eps_ci(s["base_eps"], s["base_lo"], s["base_hi"], top),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("dataset")


def threshold_table(thresholds: dict[str, tuple[pd.DataFrame, dict]], *, tol: float = 0.01) -> pd.DataFrame:
    """Per dataset and grid epsilon: the accuracy drop from noiseless [95 % CI] and whether it is within `tol`."""
    rows = []
    for d, (table, _) in thresholds.items():
        for r in table.itertuples():
            rows.append({
                "dataset": NAMES.get(d, d),
                "ε per worker": f"{r.epsilon_worker:g}",
                "ApproxIFER drop [95 % CI]": _ci(r.drop, r.drop_low, r.drop_high),
                f"≤ {tol:g}": "✓" if r.within else "✗",
                "base drop [95 % CI]": _ci(r.base_drop, r.base_drop_low, r.base_drop_high),
                f"base ≤ {tol:g}": "✓" if r.base_within else "✗",
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "ε per worker"])


def threshold_figure(
    thresholds: dict[str, tuple[pd.DataFrame, dict]], *, tol: float = 0.01, low: float = 14.0, high: float = 50.0
):
    """The accuracy drop from noiseless against the per-worker epsilon in [`low`, `high`], 95 % CI bands, with the
    tolerance: ApproxIFER (left) and the base model (right)."""
    from matplotlib.lines import Line2D

    fig, (left, right) = _figure(3.3)
    for i, (d, (table, _)) in enumerate(thresholds.items()):
        t = table[table["epsilon_worker"].between(low, high)]
        x = t["epsilon_worker"]
        label = NAMES.get(d, d)
        _band(left, x, t["drop"], t["drop_low"], t["drop_high"], color=f"C{i}", marker="o", label=label)
        _band(right, x, t["base_drop"], t["base_drop_low"], t["base_drop_high"], color=f"C{i}", marker="s")
    for ax, title in ((left, "ApproxIFER"), (right, "base model, same mechanism")):
        ax.axhline(tol, color="k", ls=":", lw=1)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set(xlabel="ε per worker", title=title)
    left.set_ylabel("accuracy drop from noiseless")
    right.sharey(left)
    handles, labels = left.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", ls=":", lw=1))
    labels.append(f"tolerance {tol:g}")
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    return fig


def release_comparison(
    outputs: dict[str, WorkerOutputs],
    epsilons: Sequence[float],
    *,
    clip: float,
    S: int = 1,
    seed: int = 0,
    draws: int = 1,
) -> pd.DataFrame:
    """ApproxIFER's and the base model's accuracy for the two releases with a finite sensitivity, per dataset and
    epsilon: rows (dataset, epsilon), columns (release, scheme)."""
    frames = {}
    for d, wo in outputs.items():
        columns = {}
        for name, release in (("probabilities", "probs"), (f"clipped logits, c = {clip:g}", "clipped")):
            df = private_accuracy(wo, epsilons, release=release, clip=clip, S=S, seed=seed, draws=draws)
            index = pd.Index(["no noise" if math.isinf(e) else f"{e:g}" for e in df["epsilon_worker"]])
            columns[(name, "ApproxIFER")] = pd.Series(df["accuracy"].map("{:.3f}".format).to_numpy(), index=index)
            columns[(name, "base")] = pd.Series(df["base"].map("{:.3f}".format).to_numpy(), index=index)
        frames[NAMES.get(d, d)] = pd.DataFrame(columns)
    return pd.concat(frames, names=["dataset", "ε per worker"])


def budget_table(epsilons: Sequence[float], N: int, *, delta: float = 1e-5) -> pd.DataFrame:
    """Per-worker epsilon -> the round's per-query budget: basic composition, and advanced composition at delta."""
    rows = []
    for e in sorted({float(e) for e in _epsilons(epsilons) if math.isfinite(e)}):
        cost = privacy.round_privacy(e, N)
        try:
            advanced = _num(privacy.advanced_composition(e, N, delta))
        except ValueError:
            advanced = "overflows"
        rows.append({"ε per worker": f"{e:g}", "ε per query (basic)": f"{cost.epsilon_total:g}",
                     f"ε per query (advanced, δ = {delta:g})": advanced})  # fmt: skip
    return pd.DataFrame(rows).set_index("ε per worker")


ATTACK_SETTINGS = {  # name: (x, x', l1 sensitivity, what)
    "unit": (0.0, 1.0, 1.0, "a scalar, Δ = 1: 0 vs 1"),
    "softmax": (0.25, 0.75, 2.0, "a probability, Δ = 2: 0.25 vs 0.75"),
}


def attack_table(*, epsilon: float = 1.0, n_samples: int = 20_000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Mironov's attack (`privacy.impossible_fraction`): the share of releases of x that x' can never produce,
    for numpy's textbook sampler and for the grid release used here; the table and the glue dict."""
    rows, glue = [], {}
    for name, (x, x_prime, l1, what) in ATTACK_SETTINGS.items():
        row = {"neighbours": what}
        for mechanism, column in (("textbook", "textbook sampler (numpy)"), ("grid", "grid release (here)")):
            share = privacy.impossible_fraction(
                x,
                x_prime,
                epsilon,
                l1,
                mechanism=mechanism,
                n_samples=n_samples,
                rng=np.random.default_rng([seed, len(glue)]),
            )
            glue[f"attack_{mechanism}_{name}"] = share
            row[column] = f"{100 * share:.1f} %"
        rows.append(row)
    glue |= {"attack_eps": float(epsilon), "attack_samples": f"{n_samples:,}"}
    return pd.DataFrame(rows).set_index("neighbours"), glue


def pair_table(pairs: dict[str, NeighbouringRounds]) -> pd.DataFrame:
    """Which query the audit's neighbouring rounds replace, by which test image, and how far the releases move."""
    rows = [
        {
            "dataset": NAMES.get(d, d),
            "query replaced": f"{p.position} (image {p.query})",
            "by image": p.replacement,
            "largest ℓ1 move (worker)": f"{p.l1.max():.2f} ({int(np.argmax(p.l1))})",
            "ℓ1 moved in all": f"{p.l1.sum():.2f}",
        }
        for d, p in pairs.items()
    ]
    return pd.DataFrame(rows).set_index("dataset")


def audit_display(audits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`audit_table` per dataset with a reader's names: ✓ no violation found, ✗ refuted at 95 % confidence."""
    frames = {}
    for d, t in audits.items():
        who = [
            w.replace("one worker (", "").replace(")", "").replace("all N = ", "all ") for w in t["release observed"]
        ]
        frames[NAMES.get(d, d)] = pd.DataFrame({
            "released by": who,
            "noise for": t["calibration"].str.replace(" (correct)", "").str.replace("the report's", "[R]"),
            "exact loss": t["true loss bound"].map("{:.3f}".format),
            "audited ε": t["audited epsilon"].map("{:g}".format),
            "lower bound": t["epsilon_lower"].map("{:.3f}".format),
            "": t["passed"].map({True: "✓", False: "✗"}),
        }).set_index("released by")  # fmt: skip
    return pd.concat(frames, names=["dataset", "released by"])


def audit_glue(audits: dict[str, pd.DataFrame]) -> dict[str, object]:
    """`<dataset>_audit<i>_{lower,audited,bound,verdict}` for each audit case i."""
    out = {}
    for d, t in audits.items():
        for i, r in t.iterrows():
            k = f"{glue_key(d)}_audit{i}"
            out |= {f"{k}_lower": r["epsilon_lower"], f"{k}_audited": r["audited epsilon"]}
            out |= {f"{k}_bound": r["true loss bound"], f"{k}_verdict": "passed" if r["passed"] else "failed"}
    return out


def coded_figure(dataset: str, K: int, N: int, *, seed: int = 0, n_test: int | None = None):
    """The first round of the seeded test split as the workers see it: its K queries (top) and the N coded queries
    (bottom, shown clipped to [0, 1] pixels: Berrut weights can be negative), as one picture."""
    import matplotlib.pyplot as plt

    from approxifer.experiments import test_groups as groups_of

    x, _ = data.load(dataset, "test")
    images = x[groups_of(dataset, K, seed=seed, n_test=n_test)[0]]
    coded = np.clip(coded_queries(images, dataset, N), 0, 1)
    plain = images.astype(np.float64) / 255.0
    h, w, ch = plain.shape[1:]
    pad = 4
    canvas = np.ones((2 * h + pad, N * (w + pad) - pad, ch))
    for j in range(N):
        x0 = j * (w + pad)
        if j < K:
            canvas[:h, x0 : x0 + w] = plain[j]
        canvas[h + pad :, x0 : x0 + w] = coded[j]
    fig, ax = plt.subplots(figsize=(7.2, 2.3), constrained_layout=True)
    ax.imshow(canvas.squeeze(), cmap="gray" if ch == 1 else None, vmin=0, vmax=1)
    ax.set_xticks([j * (w + pad) + w / 2 for j in range(N)], [str(j) for j in range(N)])
    ax.set_yticks([h / 2, h + pad + h / 2], ["query", "worker"])
    ax.tick_params(length=0)
    ax.set_frame_on(False)
    ax.set_title(f"{NAMES.get(dataset, dataset)}: the K = {K} queries of a round and the N = {N} coded queries")
    return fig


def exposure(datasets: Sequence[str], K: int, N: int, *, seed: int = 0, n_test: int | None = None):
    """What the workers see, over every round of the test split: per worker, the mean Pearson correlation and SSIM
    of its coded query with the query it resembles most; and whether workers 0..K-1 recover every query exactly.
    Returns the table and the glue dict (`<dataset>_{pearson,ssim}_{min,mean,max}`, `min_weight`, `recon_exact`)."""
    from approxifer.experiments import test_groups as groups_of

    columns, glue = {}, {}
    weight = float(np.abs(codec.encoder_matrix(K, N)).max(axis=1).min())
    for d in datasets:
        x, _ = data.load(d, "test")
        groups = groups_of(d, K, seed=seed, n_test=n_test)
        seen = pd.concat([reveal(x[g], d, N) for g in groups]).groupby("worker")[["pearson", "ssim"]].mean()
        error = max(
            float(np.abs(reconstruct(coded_queries(x[g], d, N)[:K], range(K), K, N) - x[g] / 255.0).max())
            for g in groups
        )
        name = NAMES.get(d, d)
        columns[(name, "Pearson ρ")] = seen["pearson"]
        columns[(name, "SSIM")] = seen["ssim"]
        k = glue_key(d)
        glue |= {
            f"{k}_{m}_{f}": float(getattr(seen[m], f)()) for m in ("pearson", "ssim") for f in ("min", "mean", "max")
        }
        glue |= {f"{k}_min_weight": weight, f"{k}_recon_exact": "yes" if error < 1e-9 else "no"}
        glue[f"{k}_recon_rounds"] = len(groups)
    return pd.DataFrame(columns).round(3), glue

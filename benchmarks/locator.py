"""Error-locator speed, conditioning and detection: the loop reference of the paper's locator vs the package.

`loop_locate` is the paper's locator written as its formulas read, one group and one output coordinate at a time
with `np.linalg.lstsq` on the full design matrix (reference for tests and this benchmark; not part of the package).
The script prints, measured in this one run: time per group of the loop and of the batched package (K=12, E=2,
R=2K+2E-1, C=10, 256 groups) and their ratio; time per group of the other methods; the condition numbers of the
monomial and Chebyshev design matrices (K=12, E=1..3); and detection rates under the attacks of the sources on
synthetic outputs (a random tanh network on Berrut-coded Gaussian queries; a proxy, not a trained model).
Run: `.venv/bin/python benchmarks/locator.py`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from approxifer import codec, locator

K, E, C, GROUPS = 12, 2, 10, 256


# ---------------------------------------------------------------- loop reference


def _abs_q_loop(z: list[float], y: list[float], K: int, E: int, basis: str) -> list[float]:
    """|Q(beta_i)| of the least-squares fit sum_k p_k phi_k(b_i) - y_i sum_{k>=1} q_k phi_k(b_i) = y_i (q_0 = 1)."""
    d = K + E - 1
    if basis == "monomial":
        phi = np.vander(np.array(z), d + 1, increasing=True)
    else:
        phi = np.polynomial.chebyshev.chebvander(np.array(z), d)
    A = np.hstack([phi, -np.array(y)[:, None] * phi[:, 1:]])
    coef = np.linalg.lstsq(A, np.array(y), rcond=None)[0]
    q = np.concatenate([[1.0], coef[d + 1 :]])
    if basis == "monomial":
        values = np.polynomial.polynomial.polyval(np.array(z), q)
    else:
        values = np.polynomial.chebyshev.chebval(np.array(z), q)
    return [abs(float(v)) for v in values]


def loop_locate(Y: np.ndarray, returned: Sequence[int], K: int, N: int, E: int, basis: str = "monomial") -> list[int]:
    """The paper's locator for one group: Y (R, C) in the order of `returned`; returns E sorted worker indices.

    Per coordinate, the E workers with the smallest |Q(beta_i)| are candidates; the final E have the most
    candidacies, ties to the smaller summed rank of |Q(beta_i)|, then to the smaller worker index.
    """
    rows = dict(zip(returned, Y, strict=True))
    workers = sorted(returned)
    z = [math.cos(i * math.pi / N) for i in workers]
    votes = dict.fromkeys(workers, 0)
    rank_sum = dict.fromkeys(workers, 0)
    for c in range(Y.shape[1]):
        y = [float(rows[i][c]) for i in workers]
        abs_q = _abs_q_loop(z, y, K, E, basis)
        ranked = sorted(range(len(workers)), key=lambda r: abs_q[r])  # stable: ties to the smaller worker
        for rank, r in enumerate(ranked):
            rank_sum[workers[r]] += rank
            if rank < E:
                votes[workers[r]] += 1
    final = sorted(workers, key=lambda i: (-votes[i], rank_sum[i], i))[:E]
    return sorted(final)


def loop_locate_groups(
    Y: np.ndarray, returned: Sequence[int], K: int, N: int, E: int, basis: str = "monomial"
) -> np.ndarray:
    """`loop_locate` over the groups of Y (G, R, C); shape (G, E)."""
    return np.array([loop_locate(y, returned, K, N, E, basis) for y in Y], dtype=np.int64).reshape(len(Y), E)


# ---------------------------------------------------------------- synthetic outputs and attacks


def tanh_outputs(K: int, N: int, groups: int, rng: np.random.Generator, C: int = 10) -> np.ndarray:
    """Outputs (groups, N, C) of a random 16-64-C tanh network (one per group) on Berrut-coded Gaussian queries."""
    X = rng.normal(size=(groups, K, 16))
    W1 = rng.normal(size=(groups, 16, 64)) / 4
    W2 = rng.normal(size=(groups, 64, C)) * 3 / 8
    return np.tanh(codec.encode(X, N, axis=1) @ W1) @ W2


def attack(Y: np.ndarray, E: int, kind: float | str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """E random rows per group get N(0, kind^2) noise added, or their sign flipped (kind="flip")."""
    G, R, C = Y.shape
    adv = np.sort(np.argsort(rng.random((G, R)), axis=1)[:, :E], axis=1)
    Y = Y.copy()
    g = np.arange(G)[:, None]
    Y[g, adv] = -Y[g, adv] if kind == "flip" else Y[g, adv] + rng.normal(0, kind, (G, E, C))
    return Y, adv


# ---------------------------------------------------------------- measurements


def timeit(fn: Callable[[], object], repeat: int = 7) -> float:
    """Best seconds per call over `repeat` calls (after one warm-up call): the least disturbed by other load."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return min(runs)


def condition_numbers(K: int, E: int, samples: int = 200, seed: int = 0) -> dict[str, float]:
    """2-norm condition numbers at R = N = 2K+2E-1: the basis Phi, and the median over y ~ N(0, I) of the design."""
    rng = np.random.default_rng(seed)
    d = K + E - 1
    z = codec.worker_points(2 * K + 2 * E - 1)
    out = {}
    for name, phi in [
        ("monomial", np.vander(z, d + 1, increasing=True)),
        ("chebyshev", np.polynomial.chebyshev.chebvander(z, d)),
    ]:
        y = rng.normal(size=(samples, z.size))
        A = np.concatenate([np.broadcast_to(phi, (samples, *phi.shape)), -y[:, :, None] * phi[:, 1:]], axis=2)
        out[f"basis {name}"] = float(np.linalg.cond(phi))
        out[f"design {name}"] = float(np.median(np.linalg.cond(A)))
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    N = locator.min_returned(K, E)
    returned = rng.permutation(N).tolist()
    Y, _ = attack(tanh_outputs(K, N, GROUPS, rng), E, 100.0, rng)
    Y = Y[:, returned]  # rows in the order of `returned`

    sub = 32  # the loop is slow: time it on a subset of the groups
    loop = timeit(lambda: loop_locate_groups(Y[:sub], returned, K, N, E), repeat=3) / sub
    batched = {
        m: timeit(lambda m=m: locator.locate(Y, returned, K, N, E, method=m, axis=1)) / GROUPS for m in locator.METHODS
    }
    same = (loop_locate_groups(Y, returned, K, N, E) == locator.locate(Y, returned, K, N, E, axis=1)).all(axis=1)
    robust = timeit(lambda: locator.robust_decode(Y, returned, K, N, E, axis=1)) / GROUPS

    print(f"error locator, K={K}, E={E}, R=N=2K+2E-1={N}, C={C} outputs, {GROUPS} groups, sigma=100 on E workers")
    print(f"  (a) loop reference, np.linalg.lstsq per group and coordinate: {loop * 1e6:9.1f} us / group")
    print(f"  (b) package, method='paper', {GROUPS} groups per call:          {batched['paper'] * 1e6:9.1f} us / group")
    print(f"  ratio (a)/(b): {loop / batched['paper']:.1f}x; same suspects in {same.mean():.1%} of the {GROUPS} groups")
    for m in locator.METHODS[1:]:
        print(f"      package, method={m!r:17}, {GROUPS} groups per call: {batched[m] * 1e6:9.1f} us / group")
    print(f"      robust_decode, method='paper' (locate + decode):    {robust * 1e6:9.1f} us / group")
    print(
        f"  (best of repeats; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch intra-op threads "
        f"{torch.get_num_threads()}; numpy {np.__version__}, torch {torch.__version__})"
    )

    print(f"\ncondition numbers (2-norm), K={K}, all R=2K+2E-1 returned; design: median over 200 y ~ N(0, I)")
    print(f"  {'E':>2} {'basis monomial':>15} {'basis Chebyshev':>16} {'design monomial':>16} {'design Chebyshev':>17}")
    for e in (1, 2, 3):
        c = condition_numbers(K, e)
        cells = [c["basis monomial"], c["basis chebyshev"], c["design monomial"], c["design chebyshev"]]
        print(f"  {e:>2} " + " ".join(f"{x:{w}.2e}" for x, w in zip(cells, (15, 16, 16, 17), strict=True)))

    groups = 200
    print(f"\ndetection rate (share of adversaries named), K={K}, R=N=2K+2E-1, {groups} groups, tanh-network outputs")
    print(f"  {'E':>2} {'attack':>12} " + " ".join(f"{m:>16}" for m in locator.METHODS))
    for e in (1, 2, 3):
        n = locator.min_returned(K, e)
        for kind in (1.0, 10.0, 100.0, "flip"):
            r = np.random.default_rng(1)
            Ya, adv = attack(tanh_outputs(K, n, groups, r), e, kind, r)
            rates = []
            for m in locator.METHODS:
                s = locator.locate(Ya, range(n), K, n, e, method=m, axis=1)
                rates.append((s[:, :, None] == adv[:, None, :]).any(axis=1).mean())
            label = "sign flip" if kind == "flip" else f"sigma={kind:g}"
            print(f"  {e:>2} {label:>12} " + " ".join(f"{x:16.3f}" for x in rates))


if __name__ == "__main__":
    main()

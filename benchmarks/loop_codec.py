"""A straightforward loop implementation of the paper's encoder and decoder formulas.

Reference for tests and benchmarks only: one Python loop per target point and per node, exactly as the formulas
read, with no precomputed matrices. Not part of the package.
"""

from __future__ import annotations

import math

import numpy as np


def _l(nodes: list[float], j: int, z: float) -> float:
    """l_j(z) = ((-1)^j / (z - x_j)) / sum_k (-1)^k / (z - x_k), as the paper writes it."""
    return ((-1) ** j / (z - nodes[j])) / sum((-1) ** k / (z - nodes[k]) for k in range(len(nodes)))


def _berrut(nodes: list[float], values: list[np.ndarray], z: float) -> np.ndarray:
    for x, v in zip(nodes, values, strict=True):
        if x == z:
            return v
    acc = np.zeros_like(values[0])
    for j in range(len(nodes)):
        acc = acc + values[j] * _l(nodes, j, z)
    return acc


def loop_encode(X: np.ndarray, N: int) -> np.ndarray:
    """u(beta_i) = sum_j X_j l_j(beta_i), l_j(z) = ((-1)^j/(z-alpha_j)) / sum_k (-1)^k/(z-alpha_k)."""
    K = len(X)
    alphas = [math.cos((2 * j + 1) * math.pi / (2 * K)) for j in range(K)]
    betas = [math.cos(i * math.pi / N) for i in range(N)]
    return np.stack([_berrut(alphas, list(X), z) for z in betas])


def loop_decode(Y: np.ndarray, returned: list[int], K: int, N: int) -> np.ndarray:
    """r(alpha_j) over the returned workers F, sign (-1)^l by position l in sorted(F)."""
    rows = dict(zip(returned, Y, strict=True))
    F = sorted(returned)
    betas = [math.cos(i * math.pi / N) for i in F]
    alphas = [math.cos((2 * j + 1) * math.pi / (2 * K)) for j in range(K)]
    return np.stack([_berrut(betas, [rows[i] for i in F], z) for z in alphas])


def scalar_encode(X: np.ndarray, N: int) -> np.ndarray:
    """The same formula with one Python loop per output element too (no array arithmetic at all)."""
    K = len(X)
    flat = X.reshape(K, -1).tolist()
    alphas = [math.cos((2 * j + 1) * math.pi / (2 * K)) for j in range(K)]
    out = []
    for i in range(N):
        z = math.cos(i * math.pi / N)
        weights = [_l(alphas, j, z) for j in range(K)]
        out.append([sum(weights[j] * flat[j][m] for j in range(K)) for m in range(len(flat[0]))])
    return np.array(out).reshape(N, *X.shape[1:])


def scalar_decode(Y: np.ndarray, returned: list[int], K: int, N: int) -> np.ndarray:
    """`loop_decode` with one Python loop per output element."""
    rows = dict(zip(returned, Y.reshape(len(Y), -1).tolist(), strict=True))
    F = sorted(returned)
    betas = [math.cos(i * math.pi / N) for i in F]
    out = []
    for j in range(K):
        z = math.cos((2 * j + 1) * math.pi / (2 * K))
        weights = [_l(betas, k, z) for k in range(len(F))]
        out.append([sum(weights[k] * rows[F[k]][m] for k in range(len(F))) for m in range(len(rows[F[0]]))])
    return np.array(out).reshape(K, *Y.shape[1:])

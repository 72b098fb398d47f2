"""Byzantine rounds on cached worker outputs: attack, locate, decode, score accuracy and detection.

For each round, E workers are adversarial (uniformly at random, or at fixed positions) and send what an attack
(`attacks`) makes of their honest outputs; S workers straggle. Every locator method then names E suspects among the
returned workers, which are dropped before Berrut decoding. Two references bracket the methods: ``none`` decodes
every returned output (no locator) and ``oracle`` drops exactly the returned adversaries.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from approxifer import attacks, codec, locator
from approxifer.experiments import WorkerOutputs, accuracy_ci, draw_returned

__all__ = ["REFERENCES", "byzantine_table"]

REFERENCES = ("none", "oracle")


def byzantine_table(
    wo: WorkerOutputs,
    E: int,
    *,
    attack: str = "gaussian",
    attack_kw: dict | None = None,
    methods: tuple[str, ...] = ("paper", "paper-chebyshev", "lts", "median"),
    S: int = 0,
    positions: list[int] | None = None,
    draws: int = 1,
    seed: int = 0,
    strict: bool = True,
) -> pd.DataFrame:
    """One row per method (and the references): accuracy with 95 % CI, precision and recall of the suspects,
    the share of rounds where every returned adversary was named, and the locator's time per round.

    `positions` fixes the adversarial workers (else E at random per round); `strict=False` lets the paper's fit
    run under-determined (fewer than 2K + 2E - 1 returned results)."""
    if wo.points != "paper":
        raise ValueError(f"the locators assume the paper's worker points; these outputs use {wo.points!r}")
    for m in methods:
        if m not in locator.METHODS + REFERENCES:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(locator.METHODS + REFERENCES)}")
    G, N, K = wo.G * draws, wo.N, wo.K
    rng = np.random.default_rng([seed, K, N, E, S, *map(ord, attack)])
    honest = np.tile(wo.coded, (draws, 1, 1)).astype(np.float64)
    adversary = (
        attacks.placed_adversaries(G, N, positions) if positions is not None
        else attacks.random_adversaries(G, N, E, rng)
    )  # fmt: skip
    Y = attacks.attack(attack, honest, adversary, rng, **(attack_kw or {}))
    returned = draw_returned(G, N, S, rng)
    labels = np.tile(wo.labels, (draws, 1))
    rows = []
    for method in (*methods, *REFERENCES):
        decoded = np.empty((G, K, Y.shape[2]))
        flagged = np.zeros((G, N), bool)
        seconds = 0.0
        sets, which = np.unique(returned, axis=0, return_inverse=True)
        for s, ret in enumerate(sets):
            idx = np.flatnonzero(which.ravel() == s)
            y = Y[idx][:, ret]
            t0 = time.perf_counter()
            if method == "none":
                decoded[idx] = codec.decode(y, ret, K, N, axis=1)
            elif method == "oracle":  # drop exactly the adversaries that returned (their number varies if S > 0)
                for i, bad in zip(idx, adversary[idx][:, ret], strict=True):
                    decoded[i] = codec.decode(Y[i][ret[~bad]], ret[~bad], K, N)
                    flagged[i, ret[bad]] = True
            else:
                decoded[idx], suspects = locator.robust_decode(y, ret, K, N, E, method=method, axis=1, strict=strict)
                flagged[idx[:, None], suspects] = True
            seconds += time.perf_counter() - t0
        present = adversary & _returned_mask(returned, N)
        tp = (flagged & present).sum()
        acc = accuracy_ci(decoded.argmax(-1) == labels)
        rows.append({
            "method": method,
            "accuracy": acc[0], "ci_low": acc[1], "ci_high": acc[2],
            "precision": tp / max(flagged.sum(), 1) if method != "none" else np.nan,
            "recall": tp / max(present.sum(), 1) if method != "none" else np.nan,
            "all_found": float(((flagged & present).sum(1) == present.sum(1)).mean()) if method != "none" else np.nan,
            "ms_per_round": 1e3 * seconds / G,
        })  # fmt: skip
    base = accuracy_ci(wo.base.argmax(-1) == wo.labels)
    out = pd.DataFrame(rows)
    out.insert(0, "E", E)
    out.insert(0, "N", N)
    out.insert(0, "K", K)
    out["attack"] = attack + "".join(f" {k}={v}" for k, v in (attack_kw or {}).items())
    out["base"] = base[0]
    return out


def _returned_mask(returned: np.ndarray, N: int) -> np.ndarray:
    mask = np.zeros((len(returned), N), bool)
    np.put_along_axis(mask, returned, True, axis=1)
    return mask

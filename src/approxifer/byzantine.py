"""Byzantine rounds on cached worker outputs: attack, locate, decode, score accuracy and detection.

For each round, E workers are adversarial (uniformly at random, or at fixed positions) and send what an attack
(`attacks`) makes of their honest outputs; S workers straggle. Every locator method then names E suspects among the
returned workers, which are dropped before Berrut decoding. Two references bracket the methods: ``none`` decodes
every returned output (no locator) and ``oracle`` drops exactly the returned adversaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from approxifer import attacks, codec, locator
from approxifer.experiments import WorkerOutputs, accuracy_ci, bootstrap_ci, draw_returned

__all__ = ["REFERENCES", "ByzantineRounds", "byzantine_rounds", "byzantine_table", "replication_vote"]

REFERENCES = ("none", "oracle")


@dataclass
class ByzantineRounds:
    """Per-round results of one Byzantine configuration: for each method, which decoded predictions are right
    (rounds, K) and which returned workers it flagged (rounds, N); the adversaries that returned (`present`)."""

    K: int
    N: int
    E: int
    S: int
    correct: dict[str, np.ndarray]
    flagged: dict[str, np.ndarray]
    present: np.ndarray
    seconds: dict[str, float]
    clusters: np.ndarray
    base_correct: np.ndarray

    def detection(self, method: str) -> dict[str, np.ndarray]:
        """Per-round precision, recall (NaN where undefined) and whether every returned adversary was named."""
        f, p = self.flagged[method], self.present
        tp = (f & p).sum(1).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "precision": np.where(f.sum(1) > 0, tp / f.sum(1), np.nan),
                "recall": np.where(p.sum(1) > 0, tp / p.sum(1), np.nan),
                "all_found": (tp == p.sum(1)).astype(float),
            }


def byzantine_rounds(
    wo: WorkerOutputs,
    E: int,
    *,
    attack: str = "gaussian",
    attack_kw: dict | None = None,
    methods: tuple[str, ...] = ("paper", "lts", "median"),
    S: int = 0,
    positions: list[int] | None = None,
    draws: int = 1,
    seed: int = 0,
    strict: bool = True,
    vote: bool = False,
) -> ByzantineRounds:
    """Attack, locate and decode every round of `wo` with each method (and the references ``none``, ``oracle``;
    with `vote`, also ``replication``: the same N workers replicating the queries, majority vote, `replication_vote`).

    E workers per round are adversarial (at random, or at `positions`), S of the N straggle (uniformly at random,
    independently of the adversaries); `strict=False` lets the paper's fit run under-determined."""
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
    correct, flagged, seconds = {}, {}, {}
    sets, which = np.unique(returned, axis=0, return_inverse=True)
    for method in (*methods, *REFERENCES):
        decoded = np.empty((G, K, Y.shape[2]))
        flags = np.zeros((G, N), bool)
        t0 = time.perf_counter()
        for s, ret in enumerate(sets):
            idx = np.flatnonzero(which.ravel() == s)
            y = Y[idx][:, ret]
            if method == "none":
                decoded[idx] = codec.decode(y, ret, K, N, axis=1)
            elif method == "oracle":  # drop exactly the adversaries that returned (their number varies if S > 0)
                for i, bad in zip(idx, adversary[idx][:, ret], strict=True):
                    decoded[i] = codec.decode(Y[i][ret[~bad]], ret[~bad], K, N)
                    flags[i, ret[bad]] = True
            else:
                decoded[idx], suspects = locator.robust_decode(y, ret, K, N, E, method=method, axis=1, strict=strict)
                flags[idx[:, None], suspects] = True
        seconds[method] = time.perf_counter() - t0
        correct[method], flagged[method] = decoded.argmax(-1) == labels, flags
    if vote:
        base = np.tile(wo.base, (draws, 1, 1)).astype(np.float64)
        correct["replication"] = replication_vote(base, labels, adversary, returned, attack, attack_kw, rng)
    present = adversary & _returned_mask(returned, N)
    clusters = np.tile(np.arange(wo.G), draws)
    return ByzantineRounds(K, N, E, S, correct, flagged, present, seconds, clusters, wo.base.argmax(-1) == wo.labels)


def replication_vote(
    base: np.ndarray,
    labels: np.ndarray,
    adversary: np.ndarray,
    returned: np.ndarray,
    attack: str,
    attack_kw: dict | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Replication at equal workers with a majority vote: worker w serves query w mod K (so each query has
    N // K or N // K + 1 copies); adversarial workers send what `attack` makes of the base output; the answer is
    the most frequent predicted class among the returned copies of a query (ties broken at random; a query with no
    returned copy counts as wrong). (G, K, C) base outputs -> (G, K) correct."""
    G, K, C = base.shape
    N = adversary.shape[1]
    query = np.arange(N) % K
    honest = base[:, query]  # (G, N, C): every worker's output on its own query
    sent = attacks.attack(attack, honest, adversary, rng, **(attack_kw or {}))
    votes = np.zeros((G, K, C))
    back = _returned_mask(returned, N)
    g, w = np.nonzero(back)
    np.add.at(votes, (g, query[w], sent[g, w].argmax(-1)), 1.0)
    votes += rng.random(votes.shape) * 0.5  # random tie-breaking, below one vote
    answered = np.zeros((G, K), bool)
    answered[g, query[w]] = True
    return answered & (votes.argmax(-1) == labels)


def byzantine_table(wo: WorkerOutputs, E: int, **kw) -> pd.DataFrame:
    """One row per method (and the references): accuracy with 95 % CI, precision and recall of the suspects, the
    share of rounds where every returned adversary was named (each with a 95 % CI), and the locator's time per
    round. Keyword arguments are `byzantine_rounds`'s."""
    r = byzantine_rounds(wo, E, **kw)
    rows = []
    for method, ok in r.correct.items():
        row = {"method": method} | _ci("accuracy", accuracy_ci(ok, clusters=r.clusters))
        row["ci_low"], row["ci_high"] = row.pop("accuracy_low"), row.pop("accuracy_high")
        if method in r.flagged and method != "none":
            for name, v in r.detection(method).items():
                row |= _ci(name, bootstrap_ci(v, clusters=r.clusters))
        row["ms_per_round"] = 1e3 * r.seconds.get(method, np.nan) / len(r.clusters)
        rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(0, "S", r.S)
    out.insert(0, "E", E)
    out.insert(0, "N", r.N)
    out.insert(0, "K", r.K)
    kw_ = kw.get("attack_kw") or {}
    out["attack"] = kw.get("attack", "gaussian") + "".join(f" {k}={v}" for k, v in kw_.items())
    out["base"] = accuracy_ci(r.base_correct)[0]
    return out


def _ci(name: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((name, f"{name}_low", f"{name}_high"), values, strict=True))


def _returned_mask(returned: np.ndarray, N: int) -> np.ndarray:
    mask = np.zeros((len(returned), N), bool)
    np.put_along_axis(mask, returned, True, axis=1)
    return mask

"""The experiment engine: serving rounds over whole test sets, with cached worker outputs.

A round serves K test queries: `codec.encode` makes N coded queries, every worker runs the model on one (the
model is a black box, see `serving`), a straggler pattern says which workers return, `codec.decode` recovers K
approximate outputs, and their argmax is compared with the labels. The test set is shuffled with the seed and
split into groups of K (every image used once; the last `n mod K` are left out). Worker outputs on the coded
queries do not depend on the straggler pattern, the locator or the privacy noise, so they are computed once per
(model, dataset, K, N, seed, n_test, code version) and cached on disk; every experiment reuses them. Entries are
written atomically and checked when read (`approxifer.cache`): concurrent runs of the same key are safe, and a
damaged entry is reported with its path and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from approxifer import cache, codec, data
from approxifer.errors import ParameterError
from approxifer.serving import ServedModel

__all__ = [
    "ParameterError",
    "StragglerRounds",
    "WorkerOutputs",
    "accuracy_ci",
    "any_subset",
    "base_outputs",
    "bootstrap_ci",
    "cache_dir",
    "check_config",
    "check_params",
    "decode_groups",
    "draw_returned",
    "fmt_ci",
    "lost_mask",
    "masked_mean",
    "paired_ci",
    "per_query_accuracy",
    "replication_correct",
    "stage_times",
    "straggler_rounds",
    "straggler_table",
    "stragglers_of",
    "test_groups",
    "tile_draws",
    "tiled",
    "transform",
    "uncoded_correct",
    "worker_outputs",
]

# bump when what is cached (inputs, encoding, inference) changes meaning; 2: keyed by precision too (1 was bf16)
CACHE_VERSION = 2
TRANSFORMS = ("logits", "probs", "logprobs")


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_config(K: object, N: object, S: object = 0, E: object = 0) -> tuple[int, int, int, int]:
    """Validate a round's sizes: K >= 1 queries, N >= K workers, 0 <= S stragglers, E adversaries, S + E < N."""
    K, N, S, E = _int("K", K, 1), _int("N", N, 1), _int("S", S, 0), _int("E", E, 0)
    if N < K:
        raise ParameterError(f"N={N} workers cannot serve K={K} queries: need N >= K")
    if S + E >= N:
        raise ParameterError(f"S={S} stragglers (+ E={E} adversaries) leave no honest worker of N={N}: need S + E < N")
    return K, N, S, E


def cache_dir() -> Path:
    """``$APPROXIFER_CACHE``, else ``cache/`` in the checkout (git-ignored)."""
    return Path(os.environ.get("APPROXIFER_CACHE", data.REPO_ROOT / "cache"))


def test_groups(dataset: str, K: int, *, seed: int = 0, n_test: int | None = None) -> np.ndarray:
    """Test-set indices (G, K): a seeded shuffle of the first `n_test` images (default: all), in groups of K."""
    n_all = data.info(dataset).counts["test"]
    n = n_all if n_test is None else _int("n_test", n_test, 1)
    if n > n_all:
        raise ParameterError(f"n_test={n} exceeds the {n_all} test images of {dataset}")
    if n < K:
        raise ParameterError(f"n_test={n} is smaller than one group of K={K} queries")
    perm = np.random.default_rng(seed).permutation(n_all)[:n]
    return perm[: n - n % K].reshape(-1, K)


# ---------------------------------------------------------------- worker outputs (cached)


@dataclass
class WorkerOutputs:
    """Everything one (model, dataset, K, N, seed, n_test) needs: groups, labels, base and coded outputs."""

    K: int
    N: int
    groups: np.ndarray  # (G, K) test indices
    labels: np.ndarray  # (G, K)
    base: np.ndarray  # (G, K, C) model outputs on the queries themselves
    coded: np.ndarray  # (G, N, C) worker outputs on the coded queries
    timings: dict = field(default_factory=dict)  # seconds per group: encode, inference (of the batched pass)
    points: str = "paper"  # the worker points the coded queries were made at (codec.worker_points)

    @property
    def G(self) -> int:
        return len(self.groups)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _check_done(entry: dict[str, np.ndarray]) -> None:
    if entry["done"].dtype != bool or not np.isfinite(entry["out"][entry["done"]]).all():
        raise ValueError("NaN or Inf among the outputs marked done")


def _timings(entry: dict[str, np.ndarray]) -> dict:
    timings = json.loads(str(entry["timings"]))
    if not isinstance(timings, dict):
        raise ValueError(f"timings is {timings!r}, not a JSON object")
    return timings


def base_outputs(model: ServedModel, indices: np.ndarray, *, split: str = "test", progress: bool = True) -> np.ndarray:
    """The model's outputs on images `indices` (any shape) of `split`, cached per model for the whole split."""
    folder = "base" if split == "test" else split
    path = cache_dir() / folder / f"{model.dataset}-{model.cache_tag}-v{CACHE_VERSION}.npz"
    n_all = data.info(model.dataset).counts[split]
    classes = len(data.info(model.dataset).classes)
    entry = cache.load_npz(path, {"out": (n_all, classes), "done": (n_all,)}, check=_check_done)
    out, done = (entry["out"], entry["done"]) if entry else (None, np.zeros(n_all, bool))
    flat = np.unique(indices)
    todo = flat[~done[flat]]
    if len(todo):
        x, _ = data.load(model.dataset, split)
        chunks = [todo[i : i + 1000] for i in range(0, len(todo), 1000)]
        for chunk in tqdm(chunks, desc=f"{model.name} {split} outputs", disable=not progress or len(chunks) < 2):
            y = model.predict(data.to_tensor(x[chunk], model.dataset))
            out = np.full((n_all, y.shape[1]), np.nan, np.float32) if out is None else out
            out[chunk] = y
        done[todo] = True
        cache.save_npz(path, out=out, done=done)
    return out[indices]


def worker_outputs(
    model: ServedModel,
    K: int,
    N: int,
    *,
    seed: int = 0,
    n_test: int | None = None,
    chunk: int = 64,
    progress: bool = True,
    points: str = "paper",
    encoder: np.ndarray | None = None,
) -> WorkerOutputs:
    """Encode every group, run the model on all N coded queries, return (and cache) all outputs of (K, N).

    `encoder` (N, K) replaces the Berrut encoder of `points` (another code, see `codes`; the outputs' `points` are
    then ``"custom"``): a one-hot row is a systematic worker, whose output is the base output of its query, so only
    the other rows run the model."""
    K, N, _, _ = check_config(K, N)
    if encoder is None and points not in codec.POINTS:
        raise ParameterError(f"unknown worker points {points!r}; known: {', '.join(codec.POINTS)}")
    if encoder is not None and (np.shape(encoder) != (N, K) or not np.isfinite(encoder).all()):
        raise ParameterError(f"encoder must be a finite (N, K) = ({N}, {K}) matrix, got shape {np.shape(encoder)}")
    groups = test_groups(model.dataset, K, seed=seed, n_test=n_test)
    E = codec.encoder_matrix(K, N, points) if encoder is None else np.asarray(encoder, np.float64)
    enc_hash = hashlib.sha256(E.tobytes()).hexdigest()[:12]
    serves = codec.systematic_rows(E) if encoder is not None else np.full(N, -1)  # the query a worker serves raw
    onehot = serves >= 0
    run, points = np.flatnonzero(~onehot), points if encoder is None else "custom"
    key = _key(model.cache_tag, model.dataset, K, N, seed, len(groups) * K, CACHE_VERSION, enc_hash)
    path = cache_dir() / "coded" / f"{model.name}-K{K}-N{N}-s{seed}-{key}.npz"
    x, y = data.load(model.dataset, "test")
    base = base_outputs(model, groups, progress=progress)
    shapes = {"coded": (len(groups), N, len(data.info(model.dataset).classes)), "timings": ()}
    entry = cache.load_npz(path, shapes, finite=("coded",), check=_timings)
    if entry:
        return WorkerOutputs(K, N, groups, y[groups], base, entry["coded"], _timings(entry), points)

    parts, t_enc, t_inf = [], 0.0, 0.0
    starts = range(0, len(groups), chunk)
    for s in tqdm(starts, desc=f"{model.name} K={K} N={N} workers", disable=not progress or len(starts) < 2):
        g = groups[s : s + chunk]
        t0 = time.perf_counter()
        queries = data.to_tensor(x[g.ravel()], model.dataset)
        queries = queries.view(len(g), K, *queries.shape[1:])
        if encoder is None:
            coded_queries = codec.encode(queries, N, axis=1, points=points).flatten(0, 1)
        else:  # only the coded rows, as codec.encode computes them: (M, K) @ (G, K, pixels)
            w = torch.tensor(E[run], dtype=queries.dtype)
            coded_queries = torch.matmul(w, queries.flatten(2)).view(len(g) * len(run), *queries.shape[2:])
        t1 = time.perf_counter()
        parts.append(
            model.predict(coded_queries).reshape(len(g), len(run), -1) if len(run) else base[s : s + len(g), :0]
        )
        t_enc, t_inf = t_enc + t1 - t0, t_inf + time.perf_counter() - t1
    coded = np.concatenate(parts)
    if encoder is not None:  # the systematic rows are the base outputs
        coded = np.concatenate([coded, base[:, serves[onehot]].astype(coded.dtype)], axis=1)
        coded = coded[:, np.argsort(np.concatenate([run, np.flatnonzero(onehot)]))]
    timings = {"encode": t_enc / len(groups), "inference": t_inf / len(groups), "device": model.device}
    cache.save_npz(path, coded=coded, timings=json.dumps(timings))
    return WorkerOutputs(K, N, groups, y[groups], base, coded, timings, points)


# ---------------------------------------------------------------- rounds


def transform(scores: np.ndarray, kind: str) -> np.ndarray:
    """What the workers return and the decoder interpolates: raw `logits`, softmax `probs` or `logprobs`."""
    if kind == "logits":
        return scores
    if kind not in TRANSFORMS:
        raise ParameterError(f"unknown transform {kind!r}; known: {', '.join(TRANSFORMS)}")
    logp = torch.log_softmax(torch.from_numpy(np.ascontiguousarray(scores, np.float64)), dim=-1).numpy()
    return np.exp(logp) if kind == "probs" else logp


def draw_returned(G: int, N: int, S: int, rng: np.random.Generator) -> np.ndarray:
    """For each of G rounds, a uniformly random set of N - S returned workers (sorted), shape (G, N - S)."""
    return np.sort(np.argsort(rng.random((G, N)), axis=1)[:, : N - S], axis=1)


def decode_groups(
    Y: np.ndarray, returned: np.ndarray, K: int, N: int, *, signs: str = "position", points: str = "paper"
) -> np.ndarray:
    """Decode each round g from the outputs Y[g, returned[g]]: (G, N, C), (G, R) -> (G, K, C).

    Rounds that share a returned set are decoded together, as one batched matrix product.
    """
    out = np.empty((len(Y), K, Y.shape[2]), np.float64)
    sets, which = np.unique(returned, axis=0, return_inverse=True)
    for s, ret in enumerate(sets):
        idx = np.flatnonzero(which.ravel() == s)
        out[idx] = codec.decode(Y[idx][:, ret].astype(np.float64), ret, K, N, axis=1, signs=signs, points=points)
    return out


def _cluster_means(values: np.ndarray, clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per resampling unit: the sum of the row means and the number of rows (a cluster of rows, or each row)."""
    if clusters is None:
        return values, np.ones(len(values))
    _, idx = np.unique(clusters, return_inverse=True)
    return np.bincount(idx, weights=values), np.bincount(idx).astype(np.float64)


def bootstrap_ci(
    values: np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> tuple[float, float, float]:
    r"""Mean of per-row `values` (rows of a (G, ...) array are averaged first) and a percentile bootstrap CI.

    The resampling unit is a row (a round), or with `clusters` (one id per row) a cluster of rows: rounds that
    reuse the same image group (``draws > 1``) are not independent, so they are resampled together, and each
    bootstrap mean is $\sum_c s_c / \sum_c n_c$ over the drawn clusters (sums $s_c$ of the row means, counts $n_c$).
    Rows whose value is NaN (a metric undefined in that round) are left out.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1).mean(axis=1) if v.ndim > 1 else v
    if clusters is not None and np.shape(clusters) != (len(v),):
        raise ParameterError(f"clusters must give one id per row ({len(v)}), got shape {np.shape(clusters)}")
    keep = ~np.isnan(v)
    if not keep.any():
        return (np.nan, np.nan, np.nan)
    sums, counts = _cluster_means(v[keep], None if clusters is None else np.asarray(clusters)[keep])
    boots = np.random.default_rng(seed).integers(0, len(sums), (n_boot, len(sums)))
    means = sums[boots].sum(axis=1) / counts[boots].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(sums.sum() / counts.sum()), float(lo), float(hi)


def accuracy_ci(
    correct: np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Accuracy and a percentile bootstrap CI over rounds (rows of `correct`, shape (G, K)): rounds share a draw.

    `clusters` (one id per round) resamples rounds of the same image group together (see `bootstrap_ci`)."""
    correct = np.asarray(correct, dtype=np.float64).reshape(len(correct), -1)
    return bootstrap_ci(correct, level=level, n_boot=n_boot, seed=seed, clusters=clusters)


def paired_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """The paired difference mean(a) - mean(b) over the same rounds, with a bootstrap CI of the difference.

    `a` and `b` hold per-round results (rows = the same rounds, e.g. two schemes' correct predictions); each row
    is averaged, the row differences are resampled together (by cluster with `clusters`), so the CI accounts for
    the two being measured on the same queries."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ParameterError(f"paired results need the same rounds: {len(a)} rows against {len(b)}")
    mean = lambda x: x.reshape(len(x), -1).mean(axis=1)  # noqa: E731
    return bootstrap_ci(mean(a) - mean(b), level=level, n_boot=n_boot, seed=seed, clusters=clusters)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the mean of `values` where `mask` holds: (G, K), (G, K) -> (G,), NaN for rows with none."""
    n = mask.sum(axis=1)
    total = np.where(mask, values, 0).sum(axis=1)
    return np.divide(total, n, out=np.full(len(n), np.nan), where=n > 0)


def stragglers_of(returned: np.ndarray, N: int) -> np.ndarray:
    """The workers that did not return, per round: (G, R) returned sets -> (G, N - R), sorted."""
    back = np.zeros((len(returned), N), bool)
    np.put_along_axis(back, np.asarray(returned), True, axis=1)
    return np.nonzero(~back)[1].reshape(len(returned), N - returned.shape[1])


def lost_mask(encoder: np.ndarray, returned: np.ndarray) -> np.ndarray:
    r"""The queries each round loses to its stragglers: (N, K) encoder, (G, R) returned sets -> (G, K) boolean.

    The *lost query* of a straggling worker $w$ is the query it carries most, $\arg\max_j |E_{wj}|$ (the largest
    encoder weight in its row). For a systematic worker (a one-hot row) that is its own query, which no other
    worker carries; at N = K + 1 the paper's Berrut points put most of each row's weight on one query, so the same
    definition names the query whose decoded output has lost its nearest node. It is fixed by the code and the
    straggler alone, before any output is looked at."""
    encoder = np.asarray(encoder)
    strag = stragglers_of(returned, encoder.shape[0])
    mask = np.zeros((len(returned), encoder.shape[1]), bool)
    np.put_along_axis(mask, np.abs(encoder).argmax(axis=1)[strag], True, axis=1)
    return mask


def uncoded_correct(wo: WorkerOutputs, S: int, rng: np.random.Generator) -> np.ndarray:
    """K queries on K workers, S of them straggle: a straggling query gets no answer (counted wrong)."""
    answered = np.zeros((wo.G, wo.K), bool)
    np.put_along_axis(answered, draw_returned(wo.G, wo.K, min(S, wo.K), rng), True, axis=1)
    return answered & (wo.base.argmax(-1) == wo.labels)


def replication_correct(wo: WorkerOutputs, returned: np.ndarray) -> np.ndarray:
    """N = K + S workers assigned round-robin (worker w serves query w mod K): the first S queries are served twice
    when S <= K. A query is answered when any of its workers returns (the same draw as ApproxIFER's)."""
    back = np.zeros((wo.G, wo.N), bool)
    np.put_along_axis(back, returned, True, axis=1)
    answered = np.zeros((wo.G, wo.K), bool)
    for w in range(wo.N):
        answered[:, w % wo.K] |= back[:, w]
    return answered & (wo.base.argmax(-1) == wo.labels)


@dataclass
class StragglerRounds:
    """Per-round results of one straggler configuration (rows: G · draws rounds, the first G the first draw).

    `correct` maps a scheme (``approxifer``, ``replication``, ``uncoded``, ``base``) to its (rounds, K) boolean
    correct predictions, all on the same image groups; `returned` is ApproxIFER's (and replication's) returned set
    per round, `lost` the (rounds, K) mask of the queries ApproxIFER loses to its stragglers (`lost_mask`), and
    `clusters` the image group of each round (the resampling unit when draws > 1)."""

    K: int
    N: int
    S: int
    returned: np.ndarray
    correct: dict[str, np.ndarray]
    lost: np.ndarray
    clusters: np.ndarray


def straggler_rounds(
    wo: WorkerOutputs,
    *,
    draws: int = 1,
    seed: int = 0,
    kind: str = "logits",
    baselines: bool = True,
    signs: str = "position",
) -> StragglerRounds:
    """ApproxIFER's rounds with S = N - K random stragglers (and, with `baselines`, uncoded and replication on the
    same image groups; replication on the same returned sets)."""
    S = wo.N - wo.K
    rng = np.random.default_rng([seed, wo.K, wo.N])
    truth = np.tile(wo.labels, (draws, 1))
    returned = draw_returned(wo.G * draws, wo.N, S, rng)
    Y = np.tile(transform(wo.coded, kind), (draws, 1, 1))
    decoded = decode_groups(Y, returned, wo.K, wo.N, signs=signs, points=wo.points)
    correct = {"approxifer": decoded.argmax(-1) == truth, "base": np.tile(wo.base.argmax(-1) == wo.labels, (draws, 1))}
    if baselines:
        correct["replication"] = replication_correct(tiled(wo, draws), returned)
        correct["uncoded"] = uncoded_correct(tiled(wo, draws), S, rng)
    lost = lost_mask(codec.encoder_matrix(wo.K, wo.N, wo.points), returned)
    return StragglerRounds(wo.K, wo.N, S, returned, correct, lost, np.tile(np.arange(wo.G), draws))


def _ci_columns(name: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((name, f"{name}_low", f"{name}_high"), values, strict=True))


def straggler_table(
    outputs: Iterable[WorkerOutputs],
    *,
    draws: int = 1,
    seed: int = 0,
    kind: str = "logits",
    baselines: bool = True,
    signs: str = "position",
) -> pd.DataFrame:
    """ApproxIFER (and uncoded / replication) accuracy with CIs, one row per WorkerOutputs with S = N - K.

    Besides each scheme's accuracy: ApproxIFER's accuracy on the queries it loses to its stragglers (``lost``) and
    on the others (``kept``), and the paired differences of the baselines from ApproxIFER over the same rounds
    (``replication_diff``, ``uncoded_diff``); every CI resamples image groups (`bootstrap_ci`)."""
    rows = []
    for wo in outputs:
        r = straggler_rounds(wo, draws=draws, seed=seed, kind=kind, baselines=baselines, signs=signs)
        c, cl = r.correct, r.clusters
        row = {"K": wo.K, "S": r.S, "N": wo.N, "rounds": len(cl), "queries": c["approxifer"].size}
        row |= _ci_columns("accuracy", accuracy_ci(c["approxifer"], clusters=cl))
        row |= dict(zip(("ci_low", "ci_high"), (row.pop("accuracy_low"), row.pop("accuracy_high")), strict=True))
        row |= _ci_columns("base", accuracy_ci(c["base"][: wo.G]))
        row |= _ci_columns("lost", bootstrap_ci(masked_mean(c["approxifer"], r.lost), clusters=cl))
        row |= _ci_columns("kept", bootstrap_ci(masked_mean(c["approxifer"], ~r.lost), clusters=cl))
        row["lost_per_round"] = float(r.lost.sum(axis=1).mean())
        if baselines:
            for name in ("replication", "uncoded"):
                row |= _ci_columns(name, accuracy_ci(c[name], clusters=cl))
                row |= _ci_columns(f"{name}_diff", paired_ci(c[name], c["approxifer"], clusters=cl))
        rows.append(row)
    return pd.DataFrame(rows)


def tile_draws(a: np.ndarray, draws: int) -> np.ndarray:
    """`a` repeated `draws` times along its first axis (the rounds of several straggler draws of the same groups)."""
    return np.tile(a, (draws,) + (1,) * (a.ndim - 1))


def tiled(wo: WorkerOutputs, draws: int) -> WorkerOutputs:
    """`wo` with every group repeated `draws` times (`tile_draws`), one round per (draw, group)."""
    t = lambda a: tile_draws(a, draws)  # noqa: E731
    return WorkerOutputs(wo.K, wo.N, t(wo.groups), t(wo.labels), t(wo.base), t(wo.coded), wo.timings, wo.points)


def any_subset(wo: WorkerOutputs, *, draws: int = 1, seed: int = 0) -> pd.DataFrame:
    """Accuracy as s = 0 .. N-1 of the N workers straggle (decoding from any N - s >= 1 returned)."""
    rows = []
    for s in range(wo.N):
        rng = np.random.default_rng([seed, wo.K, wo.N, s])
        returned = draw_returned(wo.G * draws, wo.N, s, rng)
        decoded = decode_groups(np.tile(wo.coded, (draws, 1, 1)), returned, wo.K, wo.N, points=wo.points)
        acc = accuracy_ci(decoded.argmax(-1) == np.tile(wo.labels, (draws, 1)))
        rows.append(
            {"K": wo.K, "N": wo.N, "stragglers": s, "returned": wo.N - s}
            | dict(zip(("accuracy", "ci_low", "ci_high"), acc, strict=True))
        )
    return pd.DataFrame(rows)


def stage_times(model: ServedModel, K: int, N: int, S: int, *, rounds: int = 20, seed: int = 0) -> dict:
    """Median seconds per round of each stage, one round at a time: encode, inference of N queries, decode."""
    K, N, S, _ = check_config(K, N, S)
    groups = test_groups(model.dataset, K, seed=seed, n_test=K * rounds)
    x, _ = data.load(model.dataset, "test")
    rng = np.random.default_rng(seed)
    t = {"encode": [], "inference": [], "decode": []}
    for g in groups:
        queries = data.to_tensor(x[g], model.dataset)
        t0 = time.perf_counter()
        coded = codec.encode(queries, N)
        t1 = time.perf_counter()
        Y = model.predict(coded)
        t2 = time.perf_counter()
        ret = draw_returned(1, N, S, rng)[0]
        codec.decode(Y[ret], ret, K, N)
        t3 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            t[k].append(v)
    out = {k: float(np.median(v[1:] if len(v) > 1 else v)) for k, v in t.items()}  # first round warms up
    return out | {"total": sum(out.values()), "device": model.device, "threads": torch.get_num_threads()}


def check_params(
    *,
    datasets: Iterable[str] = (),
    arch: str | None = None,
    grid: Iterable[tuple[int, int]] = (),
    n_test: int | None = None,
    draws: int = 1,
    device: str = "auto",
    precision: str = "fp32",
) -> None:
    """Validate a notebook's parameters up front; raise one `ParameterError` that says what is wrong."""
    from approxifer import models, serving
    from approxifer.inference import pick_device

    if isinstance(datasets, str):
        raise ParameterError(f"datasets must be a list of names, got the string {datasets!r}")
    datasets = list(datasets)
    if not datasets:
        raise ParameterError("datasets is empty: name at least one of " + ", ".join(data.DATASETS))
    for name in datasets:
        if name not in data.DATASETS:
            raise ParameterError(f"unknown dataset {name!r}; known: {', '.join(data.DATASETS)}")
    if arch is not None and arch not in models.ARCHS:
        raise ParameterError(f"unknown architecture {arch!r}; known: {', '.join(models.ARCHS)}")
    for item in grid:
        if len(item) != 2:
            raise ParameterError(f"grid entries are (K, S) pairs, got {item!r}")
        K, S = item
        check_config(K, _int("K", K, 1) + _int("S", S, 0), S)
    if n_test is not None:
        _int("n_test", n_test, 1)
    _int("draws", draws, 1)
    try:
        pick_device(device)
        serving.check_precision(precision)
    except ValueError as e:
        raise ParameterError(str(e)) from None


def fmt_ci(acc: float, lo: float, hi: float) -> str:
    """'0.872 [0.860, 0.884]'"""
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def per_query_accuracy(wo: WorkerOutputs, *, draws: int = 1, seed: int = 0) -> pd.DataFrame:
    """ApproxIFER's accuracy by query position j (point alpha_j) with S = N - K random stragglers, beside the base.

    Shows where the decoder loses accuracy: the worker points cos(i pi / N), i < N, stop short of -1, so the last
    query point lies outside the returned nodes and is extrapolated.
    """
    rng = np.random.default_rng([seed, wo.K, wo.N])
    returned = draw_returned(wo.G * draws, wo.N, wo.N - wo.K, rng)
    decoded = decode_groups(np.tile(wo.coded, (draws, 1, 1)), returned, wo.K, wo.N, points=wo.points)
    correct = decoded.argmax(-1) == np.tile(wo.labels, (draws, 1))
    base = wo.base.argmax(-1) == wo.labels
    rows = []
    for j, alpha in enumerate(codec.query_points(wo.K)):
        acc, lo, hi = accuracy_ci(correct[:, j : j + 1])
        rows.append({"j": j, "alpha_j": alpha, "accuracy": acc, "ci_low": lo, "ci_high": hi, "base": base[:, j].mean()})
    return pd.DataFrame(rows)

r"""The study behind "Beyond ApproxIFER: training-free codes": every code and baseline on the same rounds.

A round serves K test queries on N = K + S workers, S of which straggle, drawn as `experiments.straggler_table`
draws them (``draw_returned(G, N, S, default_rng([seed, K, N]))``): every code, replication and ParM lose the same
workers in every round, and ApproxIFER's numbers are those of the stragglers chapter. Metrics, each with a 95 %
bootstrap CI over rounds: accuracy over all K queries; accuracy over the *lost* queries alone
(`experiments.lost_mask`, the query each straggler carries most); paired differences over the same rounds.

**Theory of the systematic code.** A query whose own worker returns is exact; each query's worker straggles with
probability S/N, and then it is decoded with some accuracy $a_{\text{rec}}$. So

$$ \mathbb{E}[\text{acc}] = \Big(1 - \frac{S}{N}\Big)\, a_{\text{base}} + \frac{S}{N}\, a_{\text{rec}}. $$

Replication at the same N = K + S workers (S <= K) serves the first S queries twice, so a query is lost with
probability $\frac{S(S-1)}{N(N-1)}$ (both copies straggle) or $\frac{S}{N}$, and counts as wrong; the difference is

$$ \text{acc}_{\text{systematic}} - \text{acc}_{\text{replication}}
   = \frac{S}{N}\Big(a_{\text{rec}} - a_{\text{base}}\,\frac{S}{N-1}\Big): $$

the systematic code beats replication exactly when its reconstructed queries are right more often than
$a_{\text{base}} S/(N-1)$ (1/K of the base accuracy at S = 1). ParM has the same structure at S = 1, so the two
differ only in $a_{\text{rec}}$: the trained parity model's reconstruction against Berrut interpolation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from approxifer import baselines, codec, codes, data, experiments, locator, models, report
from approxifer.codes import Code
from approxifer.experiments import (
    ParameterError,
    WorkerOutputs,
    accuracy_ci,
    bootstrap_ci,
    draw_returned,
    fmt_ci,
    lost_mask,
    paired_ci,
    stragglers_of,
    tile_draws,
)
from approxifer.report import glue_key

__all__ = [
    "NAMES",
    "GridStudy",
    "Rounds",
    "any_subset",
    "baseline_rounds",
    "byzantine_check",
    "byzantine_glue",
    "byzantine_table",
    "check_params",
    "code_outputs",
    "codes_table",
    "compare",
    "cost_table",
    "error_sources",
    "grid_figure",
    "grid_glue",
    "grid_study",
    "grid_tables",
    "parity_available",
    "parity_scan",
    "parm_rounds",
    "reconstructed",
    "scan_figure",
    "scan_glue",
    "serve",
    "subset_figure",
    "subset_glue",
    "theory_table",
]

#: Every scheme as a reader sees it: the codes, then the baselines at equal workers.
NAMES = codes.SCHEMES | {"replication": "replication", "uncoded": "uncoded", "parm": "ParM"}
#: Short names for table columns.
SHORT = {"approxifer": "ApproxIFER", "systematic": "systematic", "syslebesgue": "syst., Lebesgue",
         "fh1": "FH, d = 1", "fh2": "FH, d = 2", "endpoints": "endpoints", "lebesgue": "Lebesgue pts",
         "replication": "replication", "uncoded": "uncoded", "parm": "ParM"}  # fmt: skip


#: The theory table's columns as a reader reads them (the measured values' CIs are in the accuracy and gain tables).
THEORY_COLUMNS = {"a_base": "base", "a_rec": "rec.", "break-even": "break-even",
                  "break-even, guessing": "break-even (guess)", "predicted": "pred.", "measured": "meas.",
                  "gain predicted": "gain, pred.", "gain measured": "gain, meas."}  # fmt: skip


def check_params(*, schemes: Iterable[str], grid: Iterable, **engine) -> list[str]:
    """Validate the notebook's parameters up front (`experiments.check_params` for the engine's); the schemes."""
    schemes = list(schemes)
    unknown = [s for s in schemes if s not in codes.SCHEMES]
    if unknown or "approxifer" not in schemes or "systematic" not in schemes:
        raise ParameterError(
            f"schemes must include 'approxifer' and 'systematic' and be among {', '.join(codes.SCHEMES)}; got {schemes}"
        )
    grid = [tuple(g) for g in grid]
    experiments.check_params(grid=grid, **engine)
    if any(S < 1 for _, S in grid):
        raise ParameterError(f"every configuration needs S >= 1 straggler (a parity worker), got {grid}")
    return schemes


# ---------------------------------------------------------------- worker outputs and rounds


def code_outputs(model, code: Code, *, seed: int = 0, n_test: int | None = None, progress: bool = False):
    """`experiments.worker_outputs` for `code`'s encoder (cached; a systematic worker's output is the base output).
    A Berrut code at the codec's points gets the codec's own outputs (``points`` "paper" or "endpoints")."""
    kw = {"seed": seed, "n_test": n_test, "progress": progress}
    for points in codec.POINTS:
        if np.array_equal(code.encoder, codec.encoder_matrix(code.K, code.N, points)):
            return experiments.worker_outputs(model, code.K, code.N, points=points, **kw)
    return experiments.worker_outputs(model, code.K, code.N, encoder=code.encoder, **kw)


@dataclass
class Rounds:
    """One scheme on G rounds of K queries with S stragglers: which outputs are right, which queries were lost."""

    scheme: str
    K: int
    S: int
    correct: np.ndarray  # (G, K) bool
    lost: np.ndarray  # (G, K) bool: the query each straggler carries most
    returned: np.ndarray  # (G, R) the workers that returned
    groups: np.ndarray  # (G,) the image group each round served (rounds of one group are resampled together)
    decoded: np.ndarray | None = None  # (G, K, C) the decoded outputs (codes only)

    def lost_correct(self) -> np.ndarray:
        """Per round, the accuracy over its lost queries (NaN for a round that lost none), shape (G,)."""
        n = self.lost.sum(axis=1)
        return np.divide((self.correct & self.lost).sum(axis=1), n, out=np.full(len(n), np.nan), where=n > 0)


def _draw(K: int, N: int, G: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng([seed, K, N])
    return draw_returned(G, N, N - K, rng), rng


def _decode(code: Code, Y: np.ndarray, returned: np.ndarray) -> np.ndarray:
    """Decode round g from Y[g, returned[g]]; rounds that share a returned set in one batched product."""
    out = np.empty((len(Y), code.K, Y.shape[2]))
    sets, which = np.unique(returned, axis=0, return_inverse=True)
    for s, ret in enumerate(sets):
        idx = np.flatnonzero(which.ravel() == s)
        out[idx] = code.decode(Y[idx][:, ret].astype(np.float64), ret, axis=1)
    return out


def serve(code: Code, wo: WorkerOutputs, *, draws: int = 1, seed: int = 0) -> Rounds:
    """Serve every round of `wo` (the outputs of `code`'s encoder) with S = N - K stragglers, drawn as
    `experiments.straggler_table` draws them, and decode with `code`."""
    if (wo.K, wo.N) != (code.K, code.N):
        raise ParameterError(f"outputs of K={wo.K}, N={wo.N} do not fit the code's K={code.K}, N={code.N}")
    returned, _ = _draw(wo.K, wo.N, wo.G * draws, seed)
    decoded = _decode(code, tile_draws(wo.coded, draws), returned)
    correct = decoded.argmax(-1) == tile_draws(wo.labels, draws)
    groups = tile_draws(np.arange(wo.G), draws)
    return Rounds(code.name, wo.K, wo.N - wo.K, correct, lost_mask(code.encoder, returned), returned, groups, decoded)


def baseline_rounds(wo: WorkerOutputs, *, draws: int = 1, seed: int = 0) -> dict[str, Rounds]:
    """Replication (N = K + S workers round-robin, the codes' straggler draw) and uncoded (K workers, S straggle),
    exactly as `experiments.straggler_table` scores them: a query without an answer counts as wrong."""
    K, N, S = wo.K, wo.N, wo.N - wo.K
    tiled = experiments.tiled(wo, draws)
    returned, rng = _draw(K, N, tiled.G, seed)
    replicas = np.eye(K)[np.arange(N) % K]  # worker w serves query w mod K
    rep = experiments.replication_correct(tiled, returned)
    answered = draw_returned(tiled.G, K, min(S, K), copy.deepcopy(rng))  # the draw uncoded_correct makes next
    unc = experiments.uncoded_correct(tiled, S, rng)
    groups = tile_draws(np.arange(wo.G), draws)
    return {
        "replication": Rounds("replication", K, S, rep, lost_mask(replicas, returned), returned, groups),
        "uncoded": Rounds("uncoded", K, S, unc, lost_mask(np.eye(K), answered), answered, groups),
    }


def parity_available(dataset: str, arch: str, K: int) -> bool:
    """Whether a ParM parity model for (dataset, arch, K) is shipped and was trained for the shipped base model."""
    try:
        card = baselines.load_parity_card(dataset, arch, K)
        return card["base_sha256"] == models.load_card(dataset, arch)["weights_sha256"]
    except (models.ModelError, ParameterError):
        return False


def parm_rounds(wo: WorkerOutputs, parity: np.ndarray, *, draws: int = 1, seed: int = 0) -> Rounds:
    """ParM (r = 1) on the rounds of `wo` (ApproxIFER's outputs, N = K + 1) with `baselines.parm_round`, whose
    straggler is the codes' straggler in every round (worker j < K serves query j, worker K the parity)."""
    r = baselines.parm_round(wo, parity, draws=draws, seed=seed)
    everyone = np.broadcast_to(np.arange(wo.N), (len(r.straggler), wo.N))
    returned = everyone[everyone != r.straggler[:, None]].reshape(-1, wo.K)
    encoder = np.vstack([np.eye(wo.K), np.ones(wo.K)])  # the parity worker runs on the sum of the queries
    groups = tile_draws(np.arange(wo.G), draws)
    return Rounds("parm", wo.K, 1, r.parm.argmax(-1) == r.labels, lost_mask(encoder, returned), returned, groups)


# ---------------------------------------------------------------- comparisons


def _ci(prefix: str, values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip((prefix, f"{prefix}_lo", f"{prefix}_hi"), values, strict=True))


def compare(rounds: dict[str, Rounds]) -> pd.DataFrame:
    """One row per scheme of the same rounds: ``acc`` (all K queries) and ``lost`` (the lost queries) with 95 %
    CIs, ``diff`` / ``lost_diff`` = the scheme minus ApproxIFER and ``gain`` = the systematic code minus the scheme
    (paired over rounds; columns ``_lo``, ``_hi`` hold the CI). Rounds of one image group are resampled together."""
    ref, sys_ = rounds["approxifer"], rounds["systematic"]
    rows = {}
    for name, r in rounds.items():
        if not np.array_equal(r.groups, ref.groups):
            raise ParameterError(f"{name} was not served on the same rounds as ApproxIFER")
        cl = {"clusters": r.groups}
        rows[name] = (
            _ci("acc", accuracy_ci(r.correct, **cl))
            | _ci("lost", bootstrap_ci(r.lost_correct(), **cl))
            | _ci("diff", paired_ci(r.correct, ref.correct, **cl))
            | _ci("lost_diff", bootstrap_ci(r.lost_correct() - ref.lost_correct(), **cl))
            | _ci("gain", paired_ci(sys_.correct, r.correct, **cl))
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("scheme")


def reconstructed(systematic: Rounds, parm: Rounds) -> dict[str, float]:
    """At S = 1, the query whose systematic worker straggled (ParM's degraded mode), for the systematic code and
    ParM on the same rounds: ``rec`` and ``parm_rec`` with CIs, and the paired difference ``rec_gain``."""
    K = systematic.K
    missing = (K + 1) * K // 2 - systematic.returned.sum(axis=1)  # the one worker missing from 0..K
    if parm.returned.shape != systematic.returned.shape or not np.array_equal(
        missing, (K + 1) * K // 2 - parm.returned.sum(axis=1)
    ):
        raise ParameterError("the systematic code and ParM were not served on the same straggler draws")
    rows = np.flatnonzero(missing < K)
    a = systematic.correct[rows, missing[rows]].astype(float)
    b = parm.correct[rows, missing[rows]].astype(float)
    cl = {"clusters": systematic.groups[rows]}
    return (
        _ci("rec", bootstrap_ci(a, **cl)) | _ci("parm_rec", bootstrap_ci(b, **cl))
        | _ci("rec_gain", bootstrap_ci(a - b, **cl))
    )  # fmt: skip


def grid_glue(results: pd.DataFrame) -> dict[str, float]:
    """Glue values ``<dataset>_K<K>_S<S>_<scheme>`` (accuracy) and ``..._<scheme>_<column>`` (``lo``, ``hi``,
    ``lost``, ``lost_lo``, ``diff``, ``gain_hi``, ...) from `compare` rows indexed (dataset, K, S, scheme); the
    notebook adds the prefix ``codes``."""
    out = {}
    for (d, K, S, scheme), r in results.iterrows():
        stem = f"{glue_key(d)}_K{K}_S{S}_{scheme}"
        out |= {
            stem if c == "acc" else f"{stem}_{c.removeprefix('acc_')}": float(v) for c, v in r.items() if np.isfinite(v)
        }
    return out


def _cell(r: pd.Series, col: str) -> str:
    return fmt_ci(r[col], r[f"{col}_lo"], r[f"{col}_hi"]) if np.isfinite(r[col]) else "–"


def grid_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The reader's tables from the long `compare` table (index dataset, K, S, scheme):

    - ``accuracy``: all K queries, ApproxIFER, the systematic code and the baselines (point estimates; CIs in
      ``full``); ``alternatives``: the same for ApproxIFER and the other codes;
    - ``gain``: the systematic code minus ApproxIFER, replication and ParM, paired 95 % CIs;
    - ``lost``: lost-query accuracy with CIs of ApproxIFER, the systematic code and ParM;
    - ``full``: every scheme's accuracy with its CI.
    """
    present = [s for s in NAMES if s in results.index.get_level_values("scheme")]
    index = ["dataset", "K", "S"]
    tables = {"accuracy": {}, "gain": {}, "lost": {}, "full": {}}
    for (d, K, S), g in results.groupby(level=index, sort=False):
        g = g.droplevel(index)
        key = (report.NAMES[d], K, S)
        tables["accuracy"][key] = {SHORT[s]: g.loc[s, "acc"] if s in g.index else np.nan for s in present}
        tables["gain"][key] = {f"− {SHORT[s]}": _cell(g.loc[s], "gain") if s in g.index else "–"
                               for s in ("approxifer", "replication", "parm")}  # fmt: skip
        tables["lost"][key] = {SHORT[s]: _cell(g.loc[s], "lost") if s in g.index else "–"
                               for s in ("approxifer", "systematic", "parm")}  # fmt: skip
        tables["full"][key] = {SHORT[s]: _cell(g.loc[s], "acc") if s in g.index else "–" for s in present}
    out = {k: pd.DataFrame.from_dict(v, orient="index").rename_axis(index) for k, v in tables.items()}
    out["accuracy"] = out["accuracy"].map(lambda v: "–" if not np.isfinite(v) else f"{v:.3f}")
    baseline = [SHORT[s] for s in ("approxifer", "systematic", "replication", "uncoded", "parm") if s in present]
    other = [SHORT["approxifer"]] + [c for c in out["accuracy"].columns if c not in baseline]
    out["alternatives"], out["accuracy"] = out["accuracy"][other], out["accuracy"][baseline]
    out["gain"].columns = [f"systematic {c}" for c in out["gain"].columns]
    return out


@dataclass
class GridStudy:
    """Every scheme on the paper's grid: `results` (`compare` rows, index dataset, K, S, scheme), `theory`
    (`theory_table`), `errors` (`error_sources` at the grid's first configuration, per dataset) and `duel` (the
    reconstructed query, systematic code against ParM, where a parity model exists)."""

    results: pd.DataFrame
    theory: pd.DataFrame
    errors: pd.DataFrame
    duel: pd.DataFrame

    def glue(self) -> dict[str, float]:
        """`grid_glue`, the duel (``<dataset>_K<K>_S1_systematic_rec``, ``..._parm_rec``, ``..._rec_gain`` with
        ``_lo``/``_hi``), the theory's ``..._systematic_arec`` / ``_abase`` / ``_breakeven`` / ``_breakeven_guess``,
        and counts of the configurations where the systematic code's paired gain is above zero (``wins_<other>``),
        below zero (``losses_<other>``) or neither, out of ``cells_<other>``; ``theory_below_guess`` of
        ``theory_cells`` configurations have $a_{\\text{rec}}$ under the guessing break-even (range ``arec_min`` ..
        ``arec_max``); the error sources as ``errors_<dataset>_<scheme>_<all|lost>_<acc|affine|code|model>``; the
        same counts at S = 1 alone (``s1_wins_<other>``, ...) and ``verdict_short``, the systematic code against
        ApproxIFER, replication and ParM at S = 1 in words ("ahead of", "behind", "level with": every CI above zero,
        below zero, none of them either way; "ahead of X in w of n" where some are above and none below, etc.); each
        other code against ApproxIFER (``alt_<scheme>_behind`` / ``_ahead`` of ``_cells`` configurations, its paired
        difference from ``_min`` to ``_max``, and at S = 1 from ``_s1_min`` to ``_s1_max``)."""
        out = grid_glue(self.results)
        for (d, K), r in self.duel.iterrows():
            out |= {f"{glue_key(d)}_K{K}_S1_systematic_{c}": float(v) for c, v in r.items()}
        for (d, K, S), r in self.theory.iterrows():
            stem = f"{glue_key(d)}_K{K}_S{S}_systematic"
            out |= {f"{stem}_arec": r.a_rec, f"{stem}_abase": r.a_base, f"{stem}_breakeven": r["break-even"],
                    f"{stem}_breakeven_guess": r["break-even, guessing"]}  # fmt: skip
        below = self.theory["a_rec"] < self.theory["break-even, guessing"]
        out |= {"theory_cells": len(below), "theory_below_guess": int(below.sum()),
                "arec_min": self.theory.a_rec.min(), "arec_max": self.theory.a_rec.max()}  # fmt: skip
        cols = {"accuracy": "acc", "if affine": "affine", "code error": "code", "model error": "model"}
        for (d, scheme, q), r in self.errors.iterrows():
            out |= {f"errors_{glue_key(d)}_{scheme}_{q}_{c}": float(r[col]) for col, c in cols.items()}
        gain = self.results[["gain", "gain_lo", "gain_hi"]].dropna()
        phrases = []
        for other in ("approxifer", "replication", "parm", "uncoded"):
            g = gain.xs(other, level="scheme") if other in gain.index.get_level_values("scheme") else gain.iloc[:0]
            for pre, h in (("", g), ("s1_", g[g.index.get_level_values("S") == 1])):
                out |= {f"{pre}cells_{other}": len(h), f"{pre}wins_{other}": int((h.gain_lo > 0).sum()),
                        f"{pre}losses_{other}": int((h.gain_hi < 0).sum())}  # fmt: skip
            if other != "uncoded" and (n := out[f"s1_cells_{other}"]):
                wins, losses = out[f"s1_wins_{other}"], out[f"s1_losses_{other}"]
                name = SHORT[other]
                phrases.append(
                    f"ahead of {name}" if wins == n else f"behind {name}" if losses == n
                    else f"level with {name}" if wins == losses == 0
                    else f"ahead of {name} in {wins} of {n} configurations" if not losses
                    else f"behind {name} in {losses} of {n} configurations" if not wins else f"mixed against {name}"
                )  # fmt: skip
        out["verdict_short"] = "at S = 1: " + ", ".join(phrases) if phrases else "–"
        diff = self.results[["diff", "diff_lo", "diff_hi"]].dropna()
        for other in ("fh1", "fh2", "endpoints", "lebesgue", "syslebesgue"):
            if other in diff.index.get_level_values("scheme"):
                d = diff.xs(other, level="scheme")
                s1 = d[d.index.get_level_values("S") == 1]
                out |= {f"alt_{other}_cells": len(d), f"alt_{other}_behind": int((d.diff_hi < 0).sum()),
                        f"alt_{other}_ahead": int((d.diff_lo > 0).sum()), f"alt_{other}_min": d["diff"].min(),
                        f"alt_{other}_max": d["diff"].max(), f"alt_{other}_s1_min": s1["diff"].min(),
                        f"alt_{other}_s1_max": s1["diff"].max()}  # fmt: skip
        return out

    def tables(self) -> dict[str, pd.DataFrame]:
        """`grid_tables`, and ``theory``, ``errors`` and ``duel`` as a reader reads them (names, CIs, 3 digits)."""
        names = lambda df: df.rename(index=report.NAMES, level="dataset")  # noqa: E731
        duel = {
            k: {"systematic": _cell(r, "rec"), "ParM": _cell(r, "parm_rec"), "systematic − ParM": _cell(r, "rec_gain")}
            for k, r in names(self.duel).iterrows()
        }  # fmt: skip
        errors = names(self.errors).rename(index=SHORT, level="scheme")
        return grid_tables(self.results) | {
            "theory": names(self.theory).rename(columns=THEORY_COLUMNS).round(3),
            "errors": errors.rename(columns={"if affine": "accuracy if f were affine"}).round(3),
            "duel": pd.DataFrame.from_dict(duel, orient="index").rename_axis(["dataset", "K"]),
        }


def codes_table(K: int, S: int, schemes: Iterable[str]) -> pd.DataFrame:
    """What each code is, for K queries and S stragglers: its degree, how many workers get a query unchanged, the
    mean over the coded workers of the largest encoder weight (1: a raw query; less: a blend of queries), and the
    decoder's mean Lebesgue constant over the returned sets (`codes.mean_lebesgue`)."""
    rows = {}
    for s in schemes:
        c = codes.make(s, K, K + S)
        coded = c.systematic < 0
        rows[SHORT[s]] = {
            "d": c.d,
            "systematic workers": int((~coded).sum()),
            "largest encoder weight": np.abs(c.encoder[coded]).max(axis=1).mean(),
            "mean Lebesgue constant": codes.mean_lebesgue(c, S),
        }
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def grid_study(
    datasets: Iterable[str], arch: str, grid: Iterable, schemes: Iterable[str], *, n_test: int | None = None,
    draws: int = 1, seed: int = 0, device: str = "cpu", precision: str = "fp32", progress: bool = False,
) -> GridStudy:  # fmt: skip
    """Serve every scheme, replication, uncoded and (at S = 1, where a parity model exists) ParM on the same
    rounds of every (dataset, K, S) of `grid`; worker outputs are cached."""
    from approxifer import serving

    results, theory, errors, duel = {}, {}, {}, {}
    grid = [tuple(g) for g in grid]
    for d in datasets:
        model = serving.served(d, arch, device, precision)
        for K, S in grid:
            made = {s: codes.make(s, K, K + S) for s in schemes}
            outs = {s: code_outputs(model, c, seed=seed, n_test=n_test, progress=progress) for s, c in made.items()}
            rounds = {s: serve(made[s], outs[s], draws=draws, seed=seed) for s in schemes}
            rounds |= baseline_rounds(outs["approxifer"], draws=draws, seed=seed)
            if S == 1 and parity_available(d, arch, K):
                parity = baselines.served_parity(d, arch, K, device, precision)
                parity = baselines.parity_outputs(parity, K, seed=seed, n_test=n_test, progress=progress)
                rounds["parm"] = parm_rounds(outs["approxifer"], parity, draws=draws, seed=seed)
                duel[d, K] = reconstructed(rounds["systematic"], rounds["parm"])
            for s, row in compare(rounds).iterrows():
                results[d, K, S, s] = row
            base = tile_draws(outs["approxifer"].base.argmax(-1) == outs["approxifer"].labels, draws)
            theory[d, K, S] = (made["systematic"], rounds["systematic"], base, rounds["replication"])
            if (K, S) == grid[0]:
                errors[d] = error_sources({s: (made[s], outs[s], rounds[s]) for s in schemes})
    index = ["dataset", "K", "S", "scheme"]
    return GridStudy(
        pd.DataFrame.from_dict(results, orient="index").rename_axis(index),
        theory_table(theory, names=False),
        pd.concat(errors, names=["dataset"]),
        pd.DataFrame.from_dict(duel, orient="index").rename_axis(["dataset", "K"]),
    )


def _systematic_lost(code: Code, returned: np.ndarray) -> np.ndarray:
    """(G, K): the queries whose systematic worker straggled (decoded rather than returned exactly)."""
    mask = np.zeros((len(returned), code.K), bool)
    q = code.systematic[stragglers_of(returned, code.N)]
    rows = np.broadcast_to(np.arange(len(returned))[:, None], q.shape)
    mask[rows[q >= 0], q[q >= 0]] = True
    return mask


def theory_table(
    runs: dict[tuple[str, int, int], tuple[Code, Rounds, np.ndarray, Rounds]], names: bool = True
) -> pd.DataFrame:
    """The systematic code's accuracy predicted from $a_{\\text{base}}$ and $a_{\\text{rec}}$ (module docstring)
    against the measurement, and its gain over replication predicted and measured. ``break-even`` is the
    $a_{\\text{rec}}$ above which it beats replication; ``break-even, guessing`` the same against a replication that
    answers an unanswered query with a uniform guess over the C classes, $a_{\\text{base}} \\frac{S}{N-1} +
    \\frac{K-1}{C(N-1)}$ (replication loses a query with probability $\\frac{S}{N}\\frac{K-1}{N-1}$).

    `runs` maps (dataset, K, S) to (code, its rounds, the base model's correct (G, K) on the same queries,
    replication's rounds); `names`: the datasets as a reader reads them (else their keys)."""
    rows = {}
    for (d, K, S), (code, r, base_ok, rep) in runs.items():
        N = K + S
        rec = _systematic_lost(code, r.returned)
        a_base, a_rec = base_ok.mean(), r.correct[rec].mean()
        acc = r.correct.mean()
        gain = (r.correct.astype(float) - rep.correct).mean()
        C = r.decoded.shape[2]  # classes: a uniform guess is right 1/C of the time
        rows[report.NAMES[d] if names else d, K, S] = {
            "a_base": a_base, "a_rec": a_rec, "break-even": a_base * S / (N - 1),
            "break-even, guessing": a_base * S / (N - 1) + (K - 1) / (C * (N - 1)),
            "predicted": (1 - S / N) * a_base + S / N * a_rec, "measured": acc,
            "gain predicted": S / N * (a_rec - a_base * S / (N - 1)), "gain measured": gain,
        }  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["dataset", "K", "S"])


def error_sources(items: dict[str, tuple[Code, WorkerOutputs, Rounds]]) -> pd.DataFrame:
    r"""Where the decoding error comes from, per scheme (same rounds). With $F = f(X)$ the base outputs and
    $Y = f(EX)$ the workers', the decoded outputs split exactly into

    $$ \hat Y - F = \underbrace{(D E_R - I)\,F}_{\text{code: the round trip}} +
       \underbrace{D\,(Y_R - E_R F)}_{\text{model: } f \text{ is not affine along the blends}}, $$

    the first being the whole error for an affine model. Columns: accuracy as measured and as it would be for a
    model affine along the blends ($D E_R F$), and the RMS of each term relative to the RMS of $F$, over all
    queries and over the lost ones."""
    rows = {}
    for name, (code, wo, r) in items.items():
        G = len(r.returned)
        F = tile_draws(wo.base, G // wo.G).astype(np.float64)
        affine = np.empty_like(F)
        sets, which = np.unique(r.returned, axis=0, return_inverse=True)
        for s, ret in enumerate(sets):
            idx = np.flatnonzero(which.ravel() == s)
            affine[idx] = np.einsum("jk,gkc->gjc", code.decoder(ret) @ code.encoder[ret], F[idx])
        labels = tile_draws(wo.labels, G // wo.G)
        scale = np.sqrt(np.mean(F**2))
        rms = lambda e, m, scale=scale: np.sqrt(np.mean(e[m] ** 2)) / scale  # noqa: E731
        for subset, m in (("all", np.ones_like(r.lost)), ("lost", r.lost)):
            rows[name, subset] = {
                "accuracy": r.correct[m].mean(),
                "if affine": (affine.argmax(-1) == labels)[m].mean(),
                "code error": rms(affine - F, m),
                "model error": rms(r.decoded - affine, m),
            }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["scheme", "queries"])


# ---------------------------------------------------------------- any subset, parity placement


def any_subset(code: Code, wo: WorkerOutputs, *, draws: int = 1, seed: int = 0) -> pd.DataFrame:
    """Accuracy as s = 0 .. N-1 of the N workers straggle (the draws of `experiments.any_subset`)."""
    rows = []
    for s in range(wo.N):
        returned = draw_returned(wo.G * draws, wo.N, s, np.random.default_rng([seed, wo.K, wo.N, s]))
        correct = _decode(code, tile_draws(wo.coded, draws), returned).argmax(-1) == tile_draws(wo.labels, draws)
        acc = accuracy_ci(correct, clusters=tile_draws(np.arange(wo.G), draws))
        rows.append({"scheme": code.name, "returned": wo.N - s} | _ci("acc", acc))
    return pd.DataFrame(rows)


def parity_scan(
    model, K: int, positions: Iterable[float], *, seed: int = 0, n_test: int | None = None, draws: int = 1
) -> pd.DataFrame:
    """The systematic code with one parity worker (N = K + 1) at each of `positions`: accuracy of the query whose
    systematic worker straggled (``rec``) and over all K queries (``acc``), 95 % CIs."""
    rows = []
    for p in positions:
        code = codes.systematic(K, K + 1, [p])
        r = serve(code, code_outputs(model, code, seed=seed, n_test=n_test), draws=draws, seed=seed)
        rec = _systematic_lost(code, r.returned)
        per_round = np.where(rec.any(axis=1), (r.correct & rec).sum(axis=1), np.nan)
        cl = {"clusters": r.groups}
        rows.append(
            {"position": p} | _ci("rec", bootstrap_ci(per_round, **cl)) | _ci("acc", accuracy_ci(r.correct, **cl))
        )
    return pd.DataFrame(rows)


def scan_glue(scans: dict[str, pd.DataFrame]) -> dict[str, float]:
    """``scan_<dataset>_best_pos`` / ``_best_rec`` (the best parity position and its reconstructed accuracy),
    ``_worst_rec``, and ``_mid_rec`` (at the position nearest 0, the middle of the query points)."""
    out = {}
    for d, t in scans.items():
        best, mid = t.loc[t.rec.idxmax()], t.loc[(t.position.abs()).idxmin()]
        out |= {f"scan_{glue_key(d)}_best_pos": best.position, f"scan_{glue_key(d)}_best_rec": best.rec,
                f"scan_{glue_key(d)}_worst_rec": t.rec.min(), f"scan_{glue_key(d)}_mid_rec": mid.rec}  # fmt: skip
    return out


def subset_glue(curves: dict[str, pd.DataFrame]) -> dict[str, float]:
    """``subset_<dataset>_<scheme>_R<returned>`` (accuracy, ``_lo``, ``_hi``) for every point of the curves."""
    return {
        f"subset_{glue_key(d)}_{r.scheme}_R{r.returned}{sfx}": float(getattr(r, col))
        for d, t in curves.items()
        for r in t.itertuples()
        for col, sfx in (("acc", ""), ("acc_lo", "_lo"), ("acc_hi", "_hi"))
    }


# ---------------------------------------------------------------- Byzantine workers


#: The Byzantine check's locators (keys) and the column a reader sees: the paper's locator at the paper's worker
#: points and at the code's own nodes, the authors' median baseline, no locator (decode all), the oracle.
BYZ_COLUMNS = {"paper": "paper's points", "nodes": "code's nodes", "median": "median", "none": "none",
               "oracle": "oracle"}  # fmt: skip


def byzantine_check(
    model, K: int, E: int, *, sigmas: Iterable[float] = (1.0,), schemes: Iterable[str] = ("approxifer", "systematic"),
    seed: int = 0, n_test: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """E Gaussian adversaries (each σ of `sigmas`) among N = 2K + 2E - 1 workers, all returned: does the error
    locator still work?

    `BYZ_COLUMNS`: the paper's locator with the paper's worker points (as `locator` ships it), the paper's locator at
    the code's own nodes, and the authors' median baseline (which ignores the nodes); ``none`` decodes every output,
    ``oracle`` drops exactly the adversaries. After locating, each code decodes with its own decoder. Rows (σ,
    scheme, locator): accuracy (``acc``) and the share of rounds whose adversaries were all named (``found``), 95 %
    CIs. The adversaries and their noise are the same for every scheme."""
    N = locator.min_returned(K, E)
    rows = {}
    for sigma, scheme in ((s, c) for s in sigmas for c in schemes):
        code = codes.make(scheme, K, N)
        wo = code_outputs(model, code, seed=seed, n_test=n_test)
        rng = np.random.default_rng([seed, K, N, E])
        bad = np.zeros((wo.G, N), bool)
        np.put_along_axis(bad, np.argsort(rng.random((wo.G, N)), axis=1)[:, :E], True, axis=1)
        Y = wo.coded.astype(np.float64) + bad[..., None] * rng.normal(0.0, sigma, wo.coded.shape)
        suspects = {
            "paper": locator.locate(Y, range(N), K, N, E, method="paper", axis=1),
            "nodes": _locate_at(Y, code.worker_nodes, K, E),
            "median": locator.locate(Y, range(N), K, N, E, method="median", axis=1),
            "none": np.empty((wo.G, 0), np.int64),
            "oracle": np.nonzero(bad)[1].reshape(wo.G, E),
        }
        for name, sus in suspects.items():
            keep = np.ones((wo.G, N), bool)
            np.put_along_axis(keep, sus, False, axis=1)
            decoded = np.empty((wo.G, K, Y.shape[2]))
            sets, which = np.unique(keep, axis=0, return_inverse=True)
            for s, k in enumerate(sets):
                idx = np.flatnonzero(which.ravel() == s)
                ret = np.flatnonzero(k)
                decoded[idx] = code.decode(Y[idx][:, ret], ret, axis=1)
            found = np.take_along_axis(bad, sus, axis=1).all(axis=1).astype(float)
            rows[sigma, scheme, name] = _ci("acc", accuracy_ci(decoded.argmax(-1) == wo.labels)) | (
                _ci("found", bootstrap_ci(found)) if name in ("paper", "nodes", "median") else {}
            )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["sigma", "scheme", "locator"])


def byzantine_glue(checks: dict[str, pd.DataFrame]) -> dict[str, float]:
    """``<dataset>_sigma<σ>_<scheme>_<locator>`` (accuracy) and ``..._lo``, ``_hi``, ``_found``, ... per dataset."""
    return {
        f"{glue_key(d)}_sigma{sigma:g}_{s}_{loc}" + ("" if c == "acc" else "_" + c.removeprefix("acc_")): float(v)
        for d, t in checks.items()
        for (sigma, s, loc), r in t.iterrows()
        for c, v in r.items()
        if np.isfinite(v)
    }


def byzantine_table(checks: dict[str, pd.DataFrame], value: str = "acc") -> pd.DataFrame:
    """The checks of every dataset as a reader reads them: one row per (dataset, σ, code), one column per locator;
    `value` ``"acc"`` (accuracy) or ``"found"`` (share of rounds whose adversaries were all named)."""
    if value not in ("acc", "found"):
        raise ParameterError(f"value must be 'acc' or 'found', got {value!r}")
    rows = {}
    for d, t in checks.items():
        for (sigma, s, loc), r in t.iterrows():
            rows.setdefault((report.NAMES[d], f"{sigma:g}", SHORT[s]), {})[BYZ_COLUMNS[loc]] = r[value]
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(["dataset", "σ", "code"])
    return table.map(lambda v: "–" if not np.isfinite(v) else f"{v:.3f}")


def _locate_at(y3: np.ndarray, nodes: np.ndarray, K: int, E: int) -> np.ndarray:
    """The paper's locator (monomial basis) fitted at `nodes` instead of the paper's worker points: (G, N, C) ->
    (G, E) worker indices. The locator module fixes the points; this passes the code's own."""
    order = np.argsort(-nodes, kind="stable")  # the locator expects nodes in line order
    rows = locator._locate_paper(y3[:, order], nodes[order], K, E, "monomial")
    return np.sort(order[rows], axis=1)


# ---------------------------------------------------------------- cost


def cost_table(
    dataset: str, K: int, S: int, schemes: Iterable[str], *, rounds: int = 50, seed: int = 0
) -> pd.DataFrame:
    """Milliseconds per round, median over `rounds` groups of K test images: encoding, and decoding with the
    weights of the returned set cached (``decode``) or computed for a new set (``decode, new set``); each as a
    ratio to ApproxIFER's; and the one-off seconds the Lebesgue-optimal points took to find (`codes.SEARCH_SECONDS`,
    0 when they were found in another process)."""
    x, _ = data.load(dataset, "test")
    groups = experiments.test_groups(dataset, K, seed=seed, n_test=K * rounds)
    N = K + S
    returned = draw_returned(rounds, N, S, np.random.default_rng([seed, K, N]))
    rows = {}
    for scheme in schemes:
        code = codes.make(scheme, K, N)
        search = codes.SEARCH_SECONDS.get((K, N, S, scheme == "syslebesgue"), 0.0) if "lebesgue" in scheme else 0.0
        t = {"encode": [], "decode": [], "decode, new set": []}
        for g, ret in zip(groups, returned, strict=True):
            X = data.to_tensor(x[g], dataset)
            Y = torch.randn(len(ret), 10, dtype=torch.float64)
            t0 = time.perf_counter()
            code.encode(X)
            t1 = time.perf_counter()
            code.decode(Y, ret)
            t2 = time.perf_counter()
            fresh = Code(code.name, code.query_nodes, code.worker_nodes, code.d)  # no cached weights
            fresh.decode(Y, ret)
            t3 = time.perf_counter()
            for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                t[k].append(v)
        rows[SHORT[scheme]] = {k: 1e3 * float(np.median(v)) for k, v in t.items()} | {"point search (s)": search}
    out = pd.DataFrame.from_dict(rows, orient="index")
    ref = out.loc[SHORT["approxifer"]]
    for k in ("encode", "decode", "decode, new set"):
        out[f"{k} ×"] = out[k] / ref[k]
    return out.rename(columns={k: f"{k} (ms)" for k in ("encode", "decode", "decode, new set")}).round(3)


# ---------------------------------------------------------------- figures


MARKERS = dict(zip(NAMES, "osD^v<>Px*", strict=False))


def _axes(n: int, height: float = 2.6):
    """n panels, at most 2 across, drawn at the width shown (7 in); a spare panel holds the legend."""
    cols = 1 if n == 1 else 2
    rows = -(-(n + (n > 1 and n % 2)) // cols) if n > 1 else 1
    fig, axes = plt.subplots(rows, cols, figsize=(7.0, height * rows), squeeze=False, constrained_layout=True)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes


def _legend(fig, axes, n: int, handles, labels) -> None:
    if len(axes) > n:  # a spare panel
        axes[n].legend(handles, labels, loc="center", frameon=False, fontsize=9)
    else:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 5), frameon=False, fontsize=9)


def grid_figure(results: pd.DataFrame, schemes: Iterable[str]):
    """Accuracy over all K queries with 95 % CI bars, per dataset, over the grid's (K, S)."""
    plt.rcParams.update({"font.size": 9})
    datasets = list(dict.fromkeys(results.index.get_level_values("dataset")))
    schemes = [s for s in schemes if s in results.index.get_level_values("scheme")]
    fig, axes = _axes(len(datasets))
    for ax, d in zip(axes, datasets, strict=False):
        sub = results.xs(d, level="dataset")
        configs = list(dict.fromkeys((K, S) for K, S, _ in sub.index))
        for i, s in enumerate(schemes):
            pts = [(c, sub.loc[(*c, s)]) for c in configs if (*c, s) in sub.index]
            x = np.array([configs.index(c) for c, _ in pts]) + (i - (len(schemes) - 1) / 2) * 0.09
            y = np.array([r.acc for _, r in pts])
            err = [y - [r.acc_lo for _, r in pts], [r.acc_hi for _, r in pts] - y]
            ax.errorbar(x, y, yerr=err, fmt=MARKERS[s], ms=4, capsize=2, lw=1, color=f"C{i}", label=SHORT[s])
        ax.set_xticks(range(len(configs)), [f"K={K}\nS={S}" for K, S in configs])
        ax.set(ylabel="accuracy (all K queries)", title=report.NAMES[d])
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes, len(datasets), *axes[0].get_legend_handles_labels())
    return fig


def scan_figure(scans: dict[str, pd.DataFrame], K: int, marks: dict[str, float]):
    """Reconstructed-query accuracy against the parity worker's position (one parity, N = K + 1), CI bands; dotted
    lines at the query points, markers at the named placements."""
    plt.rcParams.update({"font.size": 9})
    fig, (ax,) = _axes(1, height=3.0)
    for i, (d, t) in enumerate(scans.items()):
        report.ci_plot(ax, t.rename(columns={"rec_lo": "ci_low", "rec_hi": "ci_high", "rec": "accuracy"}),
                       "position", report.NAMES[d], color=f"C{i}")  # fmt: skip
    for a in codes.query_points(K):
        ax.axvline(a, color="grey", ls=":", lw=0.8)
    for j, (name, p) in enumerate(marks.items()):
        ax.axvline(p, color="k", ls=("--", "-.")[j % 2], lw=1, label=name)
    ax.set(xlabel=f"parity position (query points dotted), K = {K}", ylabel="accuracy, reconstructed query")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    return fig


def subset_figure(curves: dict[str, pd.DataFrame], K: int, N: int):
    """Accuracy against the number of returned workers (any subset), per dataset, 95 % CI bands."""
    plt.rcParams.update({"font.size": 9})
    fig, axes = _axes(len(curves))
    for ax, (d, t) in zip(axes, curves.items(), strict=False):
        for i, (s, c) in enumerate(t.groupby("scheme", sort=False)):
            report.ci_plot(ax, c.rename(columns={"acc": "accuracy", "acc_lo": "ci_low", "acc_hi": "ci_high"}),
                           "returned", SHORT[s], color=f"C{i}")  # fmt: skip
        ax.axvline(K, color="grey", ls=":", lw=1)
        ax.set(xlabel=f"returned workers (of N = {N}, K = {K})", ylabel="accuracy", title=report.NAMES[d])
        ax.grid(alpha=0.3)
    _legend(fig, axes, len(curves), *axes[0].get_legend_handles_labels())
    return fig

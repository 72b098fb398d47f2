r"""Claim 3 — Byzantine robustness: the study behind the Byzantine chapter.

$E$ of the $N$ workers are adversarial; the decoder names $E$ suspects with an error locator, drops them and
Berrut-decodes the rest. For every dataset: the paper's grid ($K = 12$, no stragglers, $N = 2K + 2E - 1$, Gaussian
noise of $\sigma$ = 1, 10, 100) for each locator beside [P] and [R], with detection rates and their CIs; replication
with a majority vote at equal workers; how many results the decoder needs, with $N$ fixed and the number of returned
results $R$ varied, on the real models and on an affine model whose outputs are exactly rational; stragglers and
adversaries at once; an attack suite; and the locators' cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from approxifer import anchors, codec, locator, report, serving
from approxifer import byzantine as bz
from approxifer import experiments as ex
from approxifer.report import NAMES, Chapter, ci_text, glue_key

__all__ = ["ATTACK_NAMES", "METHOD_NAMES", "attack_name", "run"]

METHOD_NAMES = {
    "paper": "paper's locator", "paper-chebyshev": "paper's, Chebyshev basis", "lts": "trimmed squares (LTS)",
    "median": "median", "none": "no locator", "oracle": "oracle", "replication": "replication + vote",
}  # fmt: skip
ATTACK_NAMES = {
    "gaussian": "Gaussian", "sign_flip": "sign flip", "constant": "constant 10", "zero": "zeros",
    "label_swap": "label swap", "collude": "colluding", "small": "small noise",
}  # fmt: skip


def attack_name(attack: str, kw: dict | None = None, positions: Sequence[int] | None = None) -> str:
    """A reader's name for an attack: 'Gaussian, σ = 10', 'sign flip at workers 0 and 27'."""
    name = ATTACK_NAMES.get(attack, attack)
    if attack == "gaussian":
        name += f", σ = {float((kw or {}).get('sigma', 1.0)):g}"
    if positions is not None:
        name += " at workers " + " and ".join(map(str, positions))
    return name


def run(
    datasets: Sequence[str],
    *,
    arch: str = "resnet18",
    K: int = 12,
    Es: Sequence[int] = (1, 2, 3),
    sigmas: Sequence[float] = (1.0, 10.0, 100.0),
    methods: Sequence[str] = ("paper", "lts", "median"),
    count_E: int = 2,
    count_sigma: float = 10.0,
    mixed: Sequence[Sequence[int]] = ((1, 1), (1, 2), (2, 1), (2, 2)),
    mixed_sigma: float = 10.0,
    suite_E: int = 2,
    n_test: int | None = None,
    draws: int = 1,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
) -> Chapter:
    """Everything the Byzantine chapter shows (tables, figures, glue); `mixed` lists (S, E) pairs."""
    for m in methods:
        if m not in locator.METHODS:
            raise ex.ParameterError(f"unknown locator method {m!r}; known: {', '.join(locator.METHODS)}")
    for s in (*sigmas, count_sigma, mixed_sigma):
        if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
            raise ex.ParameterError(f"noise levels must be positive numbers, got {s!r}")
    mixed = [tuple(x) for x in mixed]
    Ns = {2 * K + 2 * E - 1 for E in (*Es, suite_E)} | {2 * K + 2 * count_E}
    Ns |= {2 * K + 2 * E - 1 + S for S, E in mixed}
    ex.check_params(datasets=datasets, arch=arch, grid=[(K, N - K) for N in sorted(Ns)], n_test=n_test, draws=draws,
                    device=device, precision=precision)  # fmt: skip
    models = {d: serving.served(d, arch, device, precision) for d in datasets}
    wo = {(d, N): ex.worker_outputs(models[d], K, N, seed=seed, n_test=n_test, progress=progress)
          for d in datasets for N in sorted(Ns)}  # fmt: skip
    common = {"draws": draws, "seed": seed}
    ch = Chapter()
    _grid(ch, wo, datasets, K, Es, sigmas, tuple(methods), common)
    _counts(ch, wo, datasets, K, count_E, count_sigma, common)
    _mixed(ch, wo, datasets, K, mixed, mixed_sigma, tuple(methods), common)
    _suite(ch, wo, datasets, K, suite_E, tuple(methods), common)
    _speed(ch, models, datasets, K, suite_E, seed)
    return ch


# ---------------------------------------------------------------- the paper's grid


def _grid(ch: Chapter, wo, datasets, K, Es, sigmas, methods, common) -> None:
    rows, detect, agree = [], [], {}
    for d in datasets:
        for E in Es:
            for s in sigmas:
                N = 2 * K + 2 * E - 1
                r = bz.byzantine_rounds(wo[d, N], E, attack_kw={"sigma": s}, methods=(*methods, "paper-chebyshev"),
                                        vote=True, **common)  # fmt: skip
                agree[d, E, s] = float((r.flagged["paper"] == r.flagged["paper-chebyshev"]).all(axis=1).mean())
                row = {"dataset": NAMES[d], "E": E, "σ": f"{s:g}"}
                for m in (*methods, "none", "oracle", "replication"):
                    acc = ex.accuracy_ci(r.correct[m], clusters=r.clusters)
                    row[METHOD_NAMES[m]] = acc[0]
                    P = anchors.BYZANTINE.get(E, {}).get(("P", d)) if s == 1 else None
                    key = f"byz_{glue_key(d)}_E{E}_s{s:g}_{m}"
                    ch.glue |= {f"{key}_acc": acc[0], f"{key}_lo": acc[1], f"{key}_hi": acc[2],
                                f"{key}_verdict": report.verdict(*acc, P), f"{key}_short": report.short_verdict(
                                    *acc, P)}  # fmt: skip
                    if m == "paper":
                        row["paper's [95 % CI]"] = ci_text(*acc)
                        row["[P]"], row["[R]"] = P, anchors.BYZANTINE.get(E, {}).get(("R", d)) if s == 1 else None
                for m in methods:
                    rec = ex.bootstrap_ci(r.detection(m)["all_found"], clusters=r.clusters)
                    ch.glue |= {f"byz_{glue_key(d)}_E{E}_s{s:g}_{m}_found{k}": v
                                for k, v in zip(("", "_lo", "_hi"), rec, strict=True)}  # fmt: skip
                    detect.append({"dataset": NAMES[d], "E": E, "σ": f"{s:g}", "method": METHOD_NAMES[m],
                                   "found": ci_text(*rec, digits=2)})  # fmt: skip
                rows.append(row)
        ch.glue[f"byz_{glue_key(d)}_cheb_agree_min"] = min(v for (dd, *_), v in agree.items() if dd == d)
    order = ["paper's [95 % CI]", "[P]", "[R]", *(METHOD_NAMES[m] for m in methods if m != "paper"),
             METHOD_NAMES["replication"], METHOD_NAMES["none"], METHOD_NAMES["oracle"]]  # fmt: skip
    t = pd.DataFrame(rows).set_index(["dataset", "E", "σ"])
    ch.tables["grid"] = report.readable(t[order[:3]])
    ch.tables["methods"] = report.readable(t[[METHOD_NAMES["paper"], *order[3:]]])
    ch.tables["detection"] = (
        pd.DataFrame(detect).pivot(index=["dataset", "E", "σ"], columns="method", values="found")
        .reindex(columns=[METHOD_NAMES[m] for m in methods]).loc[t.index]
    )  # fmt: skip
    ch.data["grid"] = t
    # which locator is best: in how many cells of the grid each matches or beats the others (within 0.005)
    best = t[[METHOD_NAMES[m] for m in methods]]
    wins = best.ge(best.max(axis=1) - 0.005, axis=0).sum()
    for m in methods:
        ch.glue[f"byz_best_{m}"] = int(wins[METHOD_NAMES[m]])
    ch.glue["byz_cells"] = len(best)
    med, oracle = t[METHOD_NAMES["median"]], t[METHOD_NAMES["oracle"]]
    high = [i for i in t.index if float(i[2]) >= 10]
    ch.glue["byz_median_oracle_gap_high"] = float((oracle.loc[high] - med.loc[high]).max())


# ---------------------------------------------------------------- how many results


def _affine(w: ex.WorkerOutputs) -> ex.WorkerOutputs:
    """The same rounds for an affine model with the real model's outputs on the queries: each worker's output is
    the encoder's combination of them, so the honest outputs are exactly a rational function of the worker point."""
    coded = np.einsum("nk,gkc->gnc", codec.encoder_matrix(w.K, w.N), w.base.astype(np.float64))
    return ex.WorkerOutputs(w.K, w.N, w.groups, w.labels, w.base, coded, w.timings, w.points)


def _counts(ch: Chapter, wo, datasets, K, E, sigma, common) -> None:
    N = 2 * K + 2 * E
    need = locator.min_returned(K, E)
    rows, misses, misses_at_zero = [], 0, 0
    at_zero = np.abs(codec.worker_points(N)) < 1e-12  # β = 0 is a worker point when N is even (i = N/2)
    for d in datasets:
        for model, w in (("model", wo[d, N]), ("affine", _affine(wo[d, N]))):
            if model == "affine" and d != datasets[0]:
                continue  # the affine model's detection is exact or not, whatever the dataset
            for S in range(0, N - (K + 2 * E) + 1):
                r = bz.byzantine_rounds(w, E, attack_kw={"sigma": sigma}, methods=("paper", "lts", "median"), S=S,
                                        strict=False, **common)  # fmt: skip
                if model == "affine" and N - S >= need:  # which rounds the paper's locator misses, and why
                    missed = r.detection("paper")["all_found"] < 1
                    misses += int(missed.sum())
                    misses_at_zero += int((missed & r.present[:, at_zero].any(axis=1)).sum())
                for m in ("paper", "lts", "median", "oracle"):
                    acc = ex.accuracy_ci(r.correct[m], clusters=r.clusters)
                    found = ex.bootstrap_ci(r.detection(m)["all_found"], clusters=r.clusters)
                    rows.append({"dataset": d, "outputs": model, "R": N - S, "method": m, "accuracy": acc[0],
                                 "ci_low": acc[1], "ci_high": acc[2], "found": found[0], "found_low": found[1],
                                 "found_high": found[2]})  # fmt: skip
    t = pd.DataFrame(rows)
    ch.data["counts"] = t
    for d in datasets:
        sel = t[(t.dataset == d) & (t.outputs == "model") & (t.method == "paper")].set_index("R")
        ch.glue |= {f"byz_{glue_key(d)}_count_R{R}": sel.accuracy[R] for R in (2 * K + E, need, 2 * (K + E))}
        ch.glue[f"byz_{glue_key(d)}_count_step"] = sel.accuracy[need] - sel.accuracy[need - 1]
    aff = t[(t.outputs == "affine") & (t.method == "paper")].set_index("R")
    ch.glue |= {"byz_affine_found_below": aff.found[aff.index < need].max(), "byz_affine_found_at": aff.found[need],
                "byz_affine_found_min_above": aff.found[aff.index >= need].min(), "byz_count_N": N,
                "byz_count_need": need, "byz_count_E": E, "byz_count_sigma": sigma, "byz_affine_misses": misses,
                "byz_affine_misses_at_zero": misses_at_zero}  # fmt: skip
    ch.figures["counts"] = _counts_figure(t, datasets, K, E, N, need, sigma)


def _counts_figure(t: pd.DataFrame, datasets, K, E, N, need, sigma):
    fig, (a, b) = report.figure(1, 2, height=3.0)
    for d in datasets:
        sel = t[(t.dataset == d) & (t.outputs == "model") & (t.method == "paper")]
        report.ci_plot(a, sel, "R", NAMES[d])
        report.ci_plot(b, sel, "R", NAMES[d], y="found")
    aff = t[(t.outputs == "affine") & (t.method == "paper")]
    report.ci_plot(b, aff, "R", "affine model", y="found", color="k", ls="--")
    for ax in (a, b):
        ax.axvline(need, color="grey", lw=1, ls=":")
        ax.set(xlabel=f"returned results R (N = {N}, K = {K}, E = {E})")
    a.set(ylabel="accuracy, paper's locator", title=f"Gaussian, σ = {sigma:g}")
    b.set(ylabel="all adversaries named", title=f"dotted: 2K + 2E − 1 = {need}")
    fig.legend(*b.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    return fig


# ---------------------------------------------------------------- stragglers and adversaries, attack suite


def _mixed(ch: Chapter, wo, datasets, K, mixed, sigma, methods, common) -> None:
    rows = []
    for d in datasets:
        for S, E in mixed:
            N = 2 * K + 2 * E - 1 + S
            r = bz.byzantine_rounds(wo[d, N], E, attack_kw={"sigma": sigma}, methods=methods, S=S, vote=True,
                                    **common)  # fmt: skip
            row = {"dataset": NAMES[d], "S": S, "E": E, "N": N}
            for m in (*methods, "replication", "none", "oracle"):
                acc = ex.accuracy_ci(r.correct[m], clusters=r.clusters)
                row[METHOD_NAMES[m]] = ci_text(*acc) if m == "paper" else acc[0]
                ch.glue[f"byz_{glue_key(d)}_S{S}_E{E}_{m}"] = acc[0]
            rows.append(row)
    ch.tables["mixed"] = report.readable(pd.DataFrame(rows).set_index(["dataset", "S", "E", "N"]))
    ch.glue["byz_mixed_sigma"] = sigma


SUITE = [
    ("gaussian", {"sigma": 1.0}, None), ("gaussian", {"sigma": 100.0}, None), ("sign_flip", {}, None),
    ("constant", {"value": 10.0}, None), ("zero", {}, None), ("label_swap", {}, None), ("collude", {}, None),
    ("small", {}, None), ("sign_flip", {}, "ends"), ("sign_flip", {}, "middle"),
]  # fmt: skip


def _suite(ch: Chapter, wo, datasets, K, E, methods, common) -> None:
    N = 2 * K + 2 * E - 1
    rows = []
    for d in datasets:
        for attack, kw, where in SUITE:
            pos = None if where is None else [0, N - 1] if where == "ends" else [N // 2 - 1, N // 2]
            r = bz.byzantine_rounds(wo[d, N], E, attack=attack, attack_kw=kw, positions=pos, methods=methods,
                                    vote=True, **common)  # fmt: skip
            row = {"dataset": NAMES[d], "attack": attack_name(attack, kw, pos)}
            row |= {METHOD_NAMES[m]: ex.accuracy_ci(r.correct[m])[0] for m in (*methods, "replication", "none",
                                                                              "oracle")}  # fmt: skip
            rows.append(row)
            if attack == "gaussian" and kw["sigma"] == 1.0:
                ch.data.setdefault("seconds", {})[d] = {m: 1e3 * r.seconds[m] / len(r.clusters) for m in methods}
    t = pd.DataFrame(rows).set_index(["dataset", "attack"])
    ch.data["suite"] = t
    ch.tables["suite"] = report.readable(t)
    locs = [METHOD_NAMES[m] for m in methods]
    for d in datasets:
        best = t.loc[NAMES[d], locs].max(axis=1)
        ch.glue |= {f"byz_{glue_key(d)}_worst_attack": best.idxmin(), f"byz_{glue_key(d)}_worst_acc": best.min()}
    ch.glue |= {"byz_suite_E": E, "byz_suite_N": N}
    ch.figures["suite"] = _suite_figure(t, datasets, locs, K, E, N)


def _suite_figure(t: pd.DataFrame, datasets, locs, K, E, N):
    cols = [*locs, METHOD_NAMES["replication"], METHOD_NAMES["none"]]
    fig, axes = report.figure(len(datasets), 1, height=2.9, sharex=True)
    axes = np.atleast_1d(axes)
    for ax, d in zip(axes, datasets, strict=True):
        sub = t.loc[NAMES[d], cols]
        y = np.arange(len(sub))
        width = 0.8 / len(cols)
        for i, c in enumerate(cols):
            ax.barh(y + (i - (len(cols) - 1) / 2) * width, sub[c], width, label=c)
        ax.set_yticks(y, sub.index)
        ax.invert_yaxis()
        ax.set(xlim=(0, 1), title=f"{NAMES[d]}: K = {K}, E = {E}, N = {N}")
    axes[-1].set(xlabel="accuracy")
    report.legend_outside(fig, axes, where="outside lower center", ncols=len(cols))
    return fig


def _speed(ch: Chapter, models, datasets, K, E, seed) -> None:
    N = 2 * K + 2 * E - 1
    rows = {}
    for d in datasets:
        t = ex.stage_times(models[d], K, N, 0, rounds=5, seed=seed)
        loc = ch.data["seconds"][d]
        rows[NAMES[d]] = {f"{METHOD_NAMES[m]} (ms)": v for m, v in loc.items()} | {
            "inference of the N queries (ms)": 1e3 * t["inference"],
            "paper's share of a round (%)": 100 * loc["paper"] / (loc["paper"] + 1e3 * t["total"]),
        }
    ch.tables["speed"] = report.readable(pd.DataFrame(rows).T, digits=2)

r"""Claim 1 — model-agnostic: the study behind the model-agnostic chapter.

The same engine serves neural networks and non-neural classifiers as black boxes (`zoo.get`). For every model:
base accuracy, ApproxIFER with one straggler and with $E$ Byzantine workers, and the ratio ApproxIFER / base; then
why some models interpolate better (`agnostic.interpolation`: the decoding error split into the model's part and
the codec's part), with rank correlations between the model's part and the ratio, within each $K$, with bootstrap
CIs over rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from approxifer import agnostic, anchors, classical, locator, report, zoo
from approxifer import byzantine as bz
from approxifer import experiments as ex
from approxifer.report import MODEL_NAMES, NAMES, SHORT_MODEL_NAMES, Chapter, ci_text, glue_key

__all__ = ["run", "spearman_ci"]


def run(
    datasets: Sequence[str],
    *,
    models: Sequence[str] | Mapping[str, Sequence[str]] = ("mlp", "lenet5", "resnet18", "logreg", "gbdt"),
    grid: Sequence[Sequence[int]] = ((8, 1), (12, 1)),
    byz_K: int = 12,
    byz_E: int = 2,
    sigma: float = 1.0,
    methods: Sequence[str] = ("paper", "median"),
    n_test: int | None = None,
    draws: int = 1,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    n_boot: int = 1000,
) -> Chapter:
    """Everything the model-agnostic chapter shows (tables, figures, glue)."""
    if isinstance(byz_E, bool) or not isinstance(byz_E, int) or byz_E < 1:
        raise ex.ParameterError(f"byz_E must be an integer >= 1, got {byz_E!r}")
    for m in methods:
        if m not in locator.METHODS:
            raise ex.ParameterError(f"unknown locator method {m!r}; known: {', '.join(locator.METHODS)}")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise ex.ParameterError(f"sigma must be a positive number, got {sigma!r}")
    grid = [tuple(g) for g in grid]
    byz_N = 2 * byz_K + 2 * byz_E - 1
    ex.check_params(datasets=datasets, grid=[*grid, (byz_K, byz_N - byz_K)], n_test=n_test, draws=draws,
                    device=device, precision=precision)  # fmt: skip
    pairs = zoo.pairs(datasets, models)
    served = {(d, m): zoo.get(d, m, device, precision) for d, m in pairs}
    configs = [(K, K + S) for K, S in grid] + [(byz_K, byz_N)]
    wo = {(d, m, K, N): ex.worker_outputs(served[d, m], K, N, seed=seed, n_test=n_test, progress=progress)
          for d, m in pairs for K, N in configs}  # fmt: skip
    strag = {(d, m): ex.straggler_table([wo[d, m, K, K + S] for K, S in grid], draws=draws, seed=seed,
                                        baselines=False) for d, m in pairs}  # fmt: skip
    byz = {(d, m): bz.byzantine_table(wo[d, m, byz_K, byz_N], byz_E, attack_kw={"sigma": sigma},
                                      methods=tuple(methods), draws=draws, seed=seed) for d, m in pairs}  # fmt: skip
    info = {m: {"kind": zoo.kind(m), "scores": classical.SCORES.get(m, "logits")} for _, m in pairs}
    summary = agnostic.summary_table(strag, byz, info)
    smooth_wo = {(d, m, K, K + S): wo[d, m, K, K + S] for d, m in pairs for K, S in grid}
    smooth = agnostic.smoothness_table(smooth_wo, {m: i["scores"] for m, i in info.items()})
    ch = Chapter(data={"summary": summary, "smooth": smooth, "wo": wo})
    K0, S0 = grid[0]
    _tables(ch, summary, smooth, pairs, grid, byz_E, methods, info)
    _glue(ch, strag, byz, smooth, summary, pairs, grid, methods)
    _correlations(ch, smooth_wo, pairs, grid, draws, seed, n_boot)
    ch.figures["ratios"] = _ratio_figure(summary, pairs, datasets, grid, byz_E, methods)
    ch.figures["scatter"] = _scatter_figure(ch, datasets, pairs, grid)
    bins = {NAMES[d]: agnostic.rho_bins({k: v for k, v in smooth_wo.items() if k[0] == d}) for d in datasets}
    ch.tables["rho_bins"] = report.readable(pd.concat({d: b["all models"] for d, b in bins.items()}))
    ch.tables["rho_agree"] = report.readable(pd.concat(
        {d: b["agree, per model"].T.rename(index=MODEL_NAMES) for d, b in bins.items()}
    ).rename_axis(["dataset", "model"]).rename(columns=lambda c: f"ρ in {c}"))  # fmt: skip
    ch.tables["timing"] = report.readable(pd.DataFrame({
        f"K={K}, N={N}": {f"{NAMES[d]}, {MODEL_NAMES[m]}": 1e3 * wo[d, m, K, N].timings["inference"]
                          for d, m in pairs} for K, N in configs
    }).rename_axis("inference, ms per round"), digits=2)  # fmt: skip
    if "cifar10" in datasets:  # ours against the range of [P]'s five CIFAR-10 networks, both to three decimals
        p = pd.DataFrame(anchors.MODELS).T
        p_ratio = (p["stragglers"] / p["base"]).round(3)
        ours = pd.Series({m: summary.loc[("cifar10", m), f"K={K0} S={S0} / base"] for d, m in pairs if d == "cifar10"})
        inside = int(ours.between(p_ratio.min(), p_ratio.max()).sum())
        share = f"all {len(ours)}" if inside == len(ours) else f"{inside} of {len(ours)}"
        ch.glue[f"agn_cifar10_K{K0}S{S0}_verdict"] = (
            f"{share} networks within [P]'s range ({p_ratio.min():.3f}–{p_ratio.max():.3f})"
        )
    return ch


# ---------------------------------------------------------------- tables and glue


def _tables(ch, summary, smooth, pairs, grid, byz_E, methods, info) -> None:
    K0, S0 = grid[0]
    rows = {}
    for d, m in pairs:
        s = summary.loc[(d, m)]
        row = {"kind": f"{info[m]['kind']} ({info[m]['scores']})", "base": s["base [95% CI]"].split(" ")[0]}
        row[f"K = {K0}, S = {S0} [95 % CI]"] = s[f"K={K0} S={S0} [95% CI]"]
        for K, S in grid:
            row[f"K = {K}, S = {S}"] = s[f"K={K} S={S} / base"]
        for meth in methods:
            row[f"E = {byz_E}, {meth}"] = s[f"E={byz_E} {meth} / base"]
        rows[(NAMES[d], MODEL_NAMES[m])] = row
    t = pd.DataFrame(rows).T.rename_axis(["dataset", "model"])
    ratio_cols = [c for c in t.columns if c not in ("kind", "base", f"K = {K0}, S = {S0} [95 % CI]")]
    ch.tables["summary"] = report.readable(t[["base", *ratio_cols]].rename(columns=lambda c: f"{c} / base"
                                                                           if c in ratio_cols else c))  # fmt: skip
    ch.tables["accuracy"] = t[["kind", "base", f"K = {K0}, S = {S0} [95 % CI]"]]
    p = pd.DataFrame(anchors.MODELS).T.rename_axis("[P], CIFAR-10")
    p["stragglers / base"], p["Byzantine / base"] = p["stragglers"] / p["base"], p["Byzantine E=2"] / p["base"]
    ch.tables["published"] = report.readable(p.rename(columns={"stragglers": "S = 1", "Byzantine E=2": "E = 2"}))
    names = {"nonlinearity": "non-linearity", "model part": "model's part", "codec part": "codec's part",
             "error": "decoding error", "curve variation": "curve variation"}  # fmt: skip
    sm = smooth.reset_index()
    sm["dataset"], sm["model"] = sm.dataset.map(NAMES), sm.model.map(MODEL_NAMES)
    sm = sm.set_index(["dataset", "model", "K"])
    ch.tables["smooth_all"] = report.readable(sm[list(names)].rename(columns=names))
    ch.tables["smooth"] = ch.tables["smooth_all"].xs(grid[0][0], level="K")
    rho = {"median rho": "median ρ", "rho < 1": "share ρ < 1", "agree": "agrees with model",
           "decoded acc / base": "accuracy / base", "nonlinearity (probs)": "non-linearity (probabilities)",
           "agree (probs)": "agrees (probabilities)"}  # fmt: skip
    ch.tables["rho"] = report.readable(sm[list(rho)].rename(columns=rho))


def _glue(ch, strag, byz, smooth, summary, pairs, grid, methods) -> None:
    for (d, m), st in strag.items():
        key = f"agn_{glue_key(d)}_{m}"
        ch.glue[f"{key}_base"] = st.base.iloc[0]
        for r in st.itertuples():
            ch.glue |= {f"{key}_K{r.K}S{r.S}": r.accuracy, f"{key}_K{r.K}S{r.S}_ratio": r.accuracy / r.base}
        for r in byz[d, m][lambda t: t.method.isin(methods)].itertuples():
            ch.glue |= {f"{key}_byz_{r.method}": r.accuracy, f"{key}_byz_{r.method}_ratio": r.accuracy / r.base}
        for K, S in grid:
            row = smooth.loc[(d, m, K, K + S)]
            ch.glue |= {f"{key}_K{K}_{c.replace(' ', '_')}": row[c] for c in ("nonlinearity", "model part",
                                                                               "codec part")}  # fmt: skip
    for d in dict.fromkeys(d for d, _ in pairs):
        ratios = pd.Series({m: np.mean([summary.loc[(d, m), f"K={K} S={S} / base"] for K, S in grid])
                            for dd, m in pairs if dd == d})  # fmt: skip
        codec = smooth.loc[d]["codec part"]
        ch.glue |= {
            f"agn_{glue_key(d)}_best": MODEL_NAMES[ratios.idxmax()],
            f"agn_{glue_key(d)}_worst": MODEL_NAMES[ratios.idxmin()],
            f"agn_{glue_key(d)}_codec_min": codec.min(),
            f"agn_{glue_key(d)}_codec_max": codec.max(),
        }
        trees = [m for m in ("gbdt", "random_forest") if (d, m) in strag]
        if trees:
            worst_tree = min(ratios[m] for m in trees)
            below = [MODEL_NAMES[m] for m in ratios.index if ratios[m] < worst_tree and m not in trees]
            ch.glue[f"agn_{glue_key(d)}_below_trees"] = ", ".join(below) or "none"


def spearman_ci(
    correct: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    part: dict[str, np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Spearman's rank correlation, across models, between the model's part of the decoding error (median over the
    queries of the rounds) and the accuracy ratio ApproxIFER / base, with a bootstrap CI that resamples the rounds
    (the same rounds for every model: they serve the same image groups). Arrays are per model, rows = rounds."""
    names = list(correct)
    G = len(correct[names[0]])

    def rho(idx: np.ndarray) -> float:
        ratio = [correct[m][idx].mean() / max(base[m][idx].mean(), 1e-12) for m in names]
        med = [np.median(part[m][idx]) for m in names]
        return float(stats.spearmanr(med, ratio).statistic)

    point = rho(np.arange(G))
    boots = np.random.default_rng(seed).integers(0, G, (n_boot, G))
    values = np.array([rho(b) for b in boots])
    values = values[~np.isnan(values)]
    lo, hi = np.quantile(values, [0.025, 0.975]) if len(values) else (np.nan, np.nan)
    return point, float(lo), float(hi)


def _correlations(ch, smooth_wo, pairs, grid, draws, seed, n_boot) -> None:
    rows = []
    for d in dict.fromkeys(d for d, _ in pairs):
        names = [m for dd, m in pairs if dd == d]
        for K, S in grid:
            correct, base, part = {}, {}, {}
            for m in names:
                w = smooth_wo[d, m, K, K + S]
                r = ex.straggler_rounds(w, draws=draws, seed=seed, baselines=False)
                correct[m], base[m] = r.correct["approxifer"][: w.G], r.correct["base"][: w.G]
                part[m] = agnostic.interpolation(w)["model part"].reshape(w.G, K)
            if len(names) < 3:
                continue  # a rank correlation needs three models
            rho = spearman_ci(correct, base, part, n_boot=n_boot, seed=seed)
            key = f"agn_{glue_key(d)}_K{K}_spearman"
            ch.glue |= {key: rho[0], f"{key}_lo": rho[1], f"{key}_hi": rho[2]}
            rows.append({"dataset": NAMES[d], "K": K, "models": len(names),
                         "Spearman [95 % CI]": ci_text(*rho, signed=True)})  # fmt: skip
    ch.tables["spearman"] = pd.DataFrame(rows).set_index(["dataset", "K"]) if rows else pd.DataFrame()


# ---------------------------------------------------------------- figures


def _ratio_figure(summary, pairs, datasets, grid, byz_E, methods):
    cols = [f"K={K} S={S}" for K, S in grid] + [f"E={byz_E} {m}" for m in methods]
    labels = [f"K = {K}, S = {S}" for K, S in grid] + [f"E = {byz_E}, {m}" for m in methods]
    n = len(datasets) + 1
    fig, axes = report.figure((n + 1) // 2, 2 if n > 1 else 1, height=2.7)
    axes = np.ravel(axes)
    for ax, d in zip(axes, datasets, strict=False):
        names = [m for dd, m in pairs if dd == d]
        x = np.arange(len(names))
        for i, c in enumerate(cols):
            ax.bar(x + (i - (len(cols) - 1) / 2) * 0.8 / len(cols), [summary.loc[(d, m), f"{c} / base"]
                   for m in names], 0.8 / len(cols), label=labels[i], color=f"C{i}")  # fmt: skip
        ax.set_xticks(x, [SHORT_MODEL_NAMES[m] for m in names], rotation=35, ha="right")
        ax.set(ylim=(0, 1.05), ylabel="ApproxIFER / base", title=f"{NAMES[d]} (ours)")
    ax = axes[len(datasets)]
    p = pd.DataFrame(anchors.MODELS).T
    x = np.arange(len(p))
    ax.bar(x - 0.2, p["stragglers"] / p["base"], 0.4, color="C0")
    ax.bar(x + 0.2, p["Byzantine E=2"] / p["base"], 0.4, color="C2")
    ax.set_xticks(x, p.index, rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), title="CIFAR-10 [P]: S = 1 (blue), E = 2 (green)")
    for a in axes[n:]:
        a.set_axis_off()
    report.legend_outside(fig, axes, where="outside lower center")
    return fig


def _scatter_figure(ch, datasets, pairs, grid):
    summary, smooth = ch.data["summary"], ch.data["smooth"]
    n = len(datasets)
    fig, axes = report.figure((n + 1) // 2, 2 if n > 1 else 1, height=2.9)
    axes = np.ravel(axes)
    for ax, d in zip(axes, datasets, strict=False):
        s = smooth.loc[d].reset_index()
        s["ratio"] = [summary.loc[(d, m), f"K={K} S={N - K} / base"] for m, K, N in zip(s.model, s.K, s.N,
                                                                                          strict=True)]  # fmt: skip
        for (K, S), marker in zip(grid, "os^v", strict=False):
            sel = s[s.K == K]
            ax.scatter(sel["model part"], sel["ratio"], marker=marker, label=f"K = {K}, S = {S}")
        top = s[s.K == grid[0][0]]
        for m, x, y in zip(top.model, top["model part"], top.ratio, strict=True):
            ax.annotate(SHORT_MODEL_NAMES[m], (x, y), fontsize=8, xytext=(3, 2), textcoords="offset points")
        ax.set(xlabel="model's part of the error (median)", ylabel="ApproxIFER / base", title=NAMES[d])
    for a in axes[n:]:
        a.set_axis_off()
    report.legend_outside(fig, axes, where="outside lower center")
    return fig

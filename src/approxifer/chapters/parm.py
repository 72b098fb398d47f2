r"""Baseline — ParM side by side with ApproxIFER: the study behind the ParM chapter.

Both schemes serve the same queries with the same straggler draws and one extra worker per $K$ queries
(`baselines.parm_round`). Compared: the query each round loses to its straggler (ParM's reconstructed query,
ApproxIFER's lost query), all $K$ queries of those rounds, all queries of every round, and [P]'s headline convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.lines import Line2D

from approxifer import anchors, report, serving
from approxifer import baselines as bl
from approxifer import experiments as ex
from approxifer.report import NAMES, Chapter, glue_key

__all__ = ["run"]

GLUED = ("parm_lost", "approxifer_lost", "approxifer_lost_all", "parm_all", "approxifer_all", "gap_lost",
         "gap_degraded_rounds", "gap_all")  # fmt: skip


def run(
    datasets: Sequence[str],
    *,
    arch: str = "resnet18",
    Ks: Sequence[int] | Mapping[str, Sequence[int]] = (8, 12),
    n_test: int | None = None,
    draws: int = 1,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
) -> Chapter:
    """Everything the ParM chapter shows; `Ks` is one list or a mapping dataset -> list (parity models exist per
    (dataset, K))."""
    Ks_of = bl.check_params(datasets=datasets, arch=arch, Ks=Ks, n_test=n_test, draws=draws, device=device,
                            precision=precision)  # fmt: skip
    configs = [(d, K) for d, ks in Ks_of.items() for K in ks]
    ch = Chapter()
    cards = {(d, K): bl.load_parity_card(d, arch, K) for d, K in configs}
    training = {dK: bl.parity_training(c) for dK, c in cards.items()}
    ch.tables["cards"] = report.readable(pd.DataFrame({
        (NAMES[d], K): {"base accuracy": c["base_test_accuracy"], "test MSE": c["test_mse"],
                        "epochs": training[d, K]["epochs"], "retargeted": training[d, K]["retargeted"],
                        "train time (min)": round(training[d, K]["train_min"]), "weights": c["weights_dtype"]}
        for (d, K), c in cards.items()
    }).T.rename_axis(["dataset", "K"]))  # fmt: skip
    base = {d: serving.served(d, arch, device, precision) for d in datasets}
    rounds = {}
    for d, K in configs:
        wo = ex.worker_outputs(base[d], K, K + 1, seed=seed, n_test=n_test, progress=progress)
        parity = bl.parity_outputs(bl.served_parity(d, arch, K, device, precision), K, seed=seed, n_test=n_test,
                                   progress=progress)  # fmt: skip
        rounds[d, K] = bl.parm_round(wo, parity, draws=draws, seed=seed)
    results = {d: bl.parm_table([rounds[d, K] for K in ks]) for d, ks in Ks_of.items()}
    ch.data |= {"rounds": rounds, "results": results}
    compared = bl.comparison(results)
    ch.tables["lost"], ch.tables["all"] = compared["lost"], compared["all"]
    ch.tables["gaps"] = bl.gaps(results)
    ch.tables["by_straggler"] = report.readable(
        pd.concat({NAMES[d]: bl.by_straggler([rounds[d, K] for K in ks]) for d, ks in Ks_of.items()})
    )
    ch.figures["comparison"] = _figure(results, sorted({K for _, K in configs}))
    for d, df in results.items():
        for r in df.itertuples():
            key = f"parm_{glue_key(d)}_K{r.K}"
            for col in GLUED:
                ch.glue |= {f"{key}_{col}": getattr(r, col), f"{key}_{col}_lo": getattr(r, f"{col}_low"),
                            f"{key}_{col}_hi": getattr(r, f"{col}_high")}  # fmt: skip
            ch.glue |= {f"{key}_base": r.base_all, f"{key}_gap_P_convention": r.approxifer_all - r.parm_lost,
                        f"{key}_rounds": r.rounds, f"{key}_n_degraded": r.n_degraded, **{
                            f"{key}_{k}": v for k, v in training[d, r.K].items()}}  # fmt: skip
    gap = {(d, r.K): r for d, df in results.items() for r in df.itertuples()}
    (d_best, K_best), best = max(gap.items(), key=lambda t: t[1].approxifer_all - t[1].parm_lost)
    ch.glue |= {"parm_best_gap": best.approxifer_all - best.parm_lost, "parm_best_dataset": NAMES[d_best],
                "parm_best_K": K_best,
                "parm_P_best_gap": max(a - p for row in anchors.PARM.values() for a, p in row.values())}  # fmt: skip
    below = [NAMES[d] for (d, _), r in gap.items() if r.gap_lost_high < 0]
    above = [NAMES[d] for (d, _), r in gap.items() if r.gap_lost_low > 0]
    ch.glue["parm_lost_below"] = ", ".join(dict.fromkeys(below)) or "no dataset"
    ch.glue["parm_lost_above"] = ", ".join(dict.fromkeys(above)) or "no dataset"
    return ch


def _figure(results: dict[str, pd.DataFrame], Ks: list[int]):
    fig, axes = report.figure(1, 2, height=3.0, sharey=True)
    panels = {"lost": ("the query the straggler lost", [("parm_lost", "ParM, reconstructed", "s", "--"),
                                                        ("approxifer_lost", "ApproxIFER, lost query", "o", "-")]),
              "all": ("all queries of every round", [("parm_all", "ParM", "s", "--"),
                                                     ("approxifer_all", "ApproxIFER", "o", "-")])}  # fmt: skip
    for ax, (title, lines) in zip(axes, panels.values(), strict=True):
        for i, df in enumerate(results.values()):
            for col, _, marker, ls in lines:
                err = [df[col] - df[f"{col}_low"], df[f"{col}_high"] - df[col]]
                ax.errorbar(df.K, df[col], yerr=err, marker=marker, ls=ls, color=f"C{i}", ms=5, capsize=3)
            ax.axhline(df.base_all.mean(), ls=":", lw=1, color=f"C{i}")
        ax.set(xlabel="K (queries per round), N = K + 1", title=title, xticks=Ks, ylim=(0, 1.02))
    axes[0].set(ylabel="accuracy")
    keys = [Line2D([], [], color="k", marker="s", ls="--", label="ParM"),
            Line2D([], [], color="k", marker="o", ls="-", label="ApproxIFER"),
            Line2D([], [], color="k", ls=":", label="base model")]  # fmt: skip
    keys += [Line2D([], [], color=f"C{i}", lw=4, label=NAMES[d]) for i, d in enumerate(results)]
    fig.legend(handles=keys, loc="outside lower center", ncols=len(keys))
    return fig

r"""Claim 2 — straggler resilience: the study behind the stragglers chapter.

For every dataset: ApproxIFER on the paper's $(K, S)$ grid with $N = K + S$ workers beside [P] and [R], the same
grid for models trained with other seeds (how much a verdict depends on which trained model we drew), uncoded and
replication at equal workers as paired differences over the same rounds, the accuracy on the queries each round
loses to its stragglers, per query position, with worker points that include both ends, against $K$ and $N$,
from any subset of returned workers, what is interpolated (logits, probabilities), the decoder's signs, and the time
of each stage of a round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from approxifer import anchors, codec, report, serving
from approxifer import experiments as ex
from approxifer.report import NAMES, Chapter, ci_text, glue_key

__all__ = ["run", "summary"]

SCHEMES = {"approxifer": "ApproxIFER", "replication": "replication", "uncoded": "uncoded"}


def _published(K: int, S: int, source: str, dataset: str) -> float | None:
    return anchors.STRAGGLERS.get((K, S), {}).get((source, dataset))


def check_seeds(seeds: object, datasets: Sequence[str]) -> dict[str, list[int]]:
    """`seeds` is a mapping dataset -> list of seeds k >= 1 (models `<dataset>-<arch>-seed<k>`), over `datasets`."""
    if seeds is None:
        return {}
    if not isinstance(seeds, Mapping):
        raise ex.ParameterError(f"seeds must map datasets to lists of seeds, e.g. {{'mnist': [1, 2]}}, got {seeds!r}")
    out = {}
    for d, ks in seeds.items():
        if d not in datasets:
            raise ex.ParameterError(f"seeds names {d!r}, which is not one of the datasets {list(datasets)}")
        if isinstance(ks, str | int) or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise ex.ParameterError(f"seeds[{d!r}] must be a list of integers >= 1 (seed 0 is the shipped model)")
        out[d] = list(ks)
    return out


def run(
    datasets: Sequence[str],
    *,
    arch: str = "resnet18",
    grid: Sequence[Sequence[int]] = ((8, 1), (10, 1), (12, 1), (8, 2), (8, 3)),
    k_sweep: Sequence[int] = (2, 4, 8, 12, 16, 20),
    n_sweep_K: int = 8,
    n_sweep: Sequence[int] = (9, 10, 12, 16),
    subset_K: int = 8,
    subset_N: int = 12,
    seeds: Mapping[str, Sequence[int]] | None = None,
    n_test: int | None = None,
    draws: int = 1,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    timing_rounds: int = 5,
    progress: bool = False,
) -> Chapter:
    """Everything the stragglers chapter shows (tables, figures, glue), on whole test sets when `n_test` is None."""
    grid = [tuple(g) for g in grid]
    sweeps = (
        [(k, 1) for k in k_sweep] + [(n_sweep_K, n - n_sweep_K) for n in n_sweep] + [(subset_K, subset_N - subset_K)]
    )
    ex.check_params(
        datasets=datasets, arch=arch, grid=grid + sweeps, n_test=n_test, draws=draws, device=device, precision=precision
    )
    seeds = check_seeds(seeds, datasets)
    models = {d: serving.served(d, arch, device, precision) for d in datasets}
    seed_models = {(d, k): serving.served(d, arch, device, precision, seed=k) for d, ks in seeds.items() for k in ks}
    configs = sorted({(K, K + S) for K, S in grid + sweeps})

    def outputs(model, K, N, points="paper"):
        return ex.worker_outputs(model, K, N, seed=seed, n_test=n_test, progress=progress, points=points)

    wo = {(d, K, N): outputs(models[d], K, N) for d in datasets for K, N in configs}
    ends = {(d, K, K + S): outputs(models[d], K, K + S, "endpoints") for d in datasets for K, S in grid}
    table = lambda ws, **kw: ex.straggler_table(ws, draws=draws, seed=seed, **kw)  # noqa: E731
    results = {d: table([wo[d, K, K + S] for K, S in grid]) for d in datasets}
    seed_results = {
        (d, k): table([outputs(m, K, K + S) for K, S in grid], baselines=False) for (d, k), m in seed_models.items()
    }

    ch = Chapter(data={"results": results, "seed_results": seed_results})
    _grid(ch, results, seed_results, seeds)
    _baselines(ch, results)
    _lost(ch, results)
    _per_query(ch, wo, ends, datasets, grid, draws, seed)
    ch.data["k"] = {d: table([wo[d, K, K + 1] for K in k_sweep], baselines=False) for d in datasets}
    ch.data["n"] = {d: table([wo[d, n_sweep_K, N] for N in n_sweep], baselines=False) for d in datasets}
    ch.figures["sweeps"] = _sweeps_figure(ch.data["k"], ch.data["n"], n_sweep_K)
    subset = {d: ex.any_subset(wo[d, subset_K, subset_N], draws=draws, seed=seed) for d in datasets}
    ch.figures["subset"] = _subset_figure(subset, subset_K, subset_N)
    ch.tables["subset"] = pd.DataFrame({
        NAMES[d]: [ci_text(r.accuracy, r.ci_low, r.ci_high) for r in s.itertuples()] for d, s in subset.items()
    }, index=pd.Index(subset[datasets[0]].returned, name=f"returned of N = {subset_N}"))  # fmt: skip
    _ablations(ch, wo, datasets, grid, table)
    _runtime(ch, models, datasets, seed, timing_rounds)
    ch.figures["summary"] = _summary_figure(results)  # also the book's summary figure (`summary`)
    return ch


def summary(
    datasets: Sequence[str],
    *,
    arch: str = "resnet18",
    grid: Sequence[Sequence[int]] = ((8, 1), (10, 1), (12, 1), (8, 2), (8, 3)),
    n_test: int | None = None,
    draws: int = 1,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    progress: bool = False,
):
    """The book's summary figure: ApproxIFER, replication, uncoded and [P] over the paper's grid (the same rounds,
    and the same figure, as `run`'s)."""
    grid = [tuple(g) for g in grid]
    ex.check_params(datasets=datasets, arch=arch, grid=grid, n_test=n_test, draws=draws, device=device,
                    precision=precision)  # fmt: skip
    results = {}
    for d in datasets:
        model = serving.served(d, arch, device, precision)
        wos = [ex.worker_outputs(model, K, K + S, seed=seed, n_test=n_test, progress=progress) for K, S in grid]
        results[d] = ex.straggler_table(wos, draws=draws, seed=seed)
    return _summary_figure(results)


# ---------------------------------------------------------------- the paper's grid, with seeds


def _grid(ch: Chapter, results: dict, seed_results: dict, seeds: dict[str, list[int]]) -> None:
    rows, detail = [], []
    for d, df in results.items():
        for i, r in enumerate(df.itertuples()):
            runs = [(0, r.accuracy, r.ci_low, r.ci_high)]
            runs += [(k, *seed_results[d, k].iloc[i][["accuracy", "ci_low", "ci_high"]]) for k in seeds.get(d, [])]
            accs = [a for _, a, _, _ in runs]
            lo, hi = min(lo for *_, lo, _ in runs), max(hi for *_, hi in runs)
            P, R = _published(r.K, r.S, "P", d), _published(r.K, r.S, "R", d)
            verdict, short = report.models_verdict([run[1:] for run in runs], P)
            key = f"strag_{glue_key(d)}_K{r.K}_S{r.S}"
            ch.glue |= {
                f"{key}_acc": r.accuracy, f"{key}_lo": r.ci_low, f"{key}_hi": r.ci_high, f"{key}_base": r.base,
                f"{key}_ilo": lo, f"{key}_ihi": hi, f"{key}_seed_min": min(accs), f"{key}_seed_max": max(accs),
                f"{key}_seeds": len(runs), f"{key}_verdict": verdict, f"{key}_short": short,
            }  # fmt: skip
            rows.append({
                "dataset": NAMES[d], "K": r.K, "S": r.S,
                "ours [95 % CI]": ci_text(r.accuracy, r.ci_low, r.ci_high),
                "seeds 0–2": f"{min(accs):.3f}–{max(accs):.3f}" if len(runs) > 1 else "–",
                "[P]": report.fmt_cell(P), "[R]": report.fmt_cell(R),
                "verdict": short,
            })  # fmt: skip
            detail += [
                {"dataset": NAMES[d], "K": r.K, "S": r.S, "seed": k, "accuracy [95 % CI]": ci_text(a, l_, h)}
                for k, a, l_, h in runs
            ]
    ch.tables["grid"] = pd.DataFrame(rows).set_index(["dataset", "K", "S"])
    if any(len(v) for v in seeds.values()):
        ch.tables["seeds"] = (
            pd.DataFrame(detail).pivot(index=["dataset", "K", "S"], columns="seed", values="accuracy [95 % CI]")
            .dropna().rename(columns=lambda k: f"seed {k}")
        )  # fmt: skip
        ch.glue |= {f"strag_{glue_key(d)}_seeds_trained": ", ".join(map(str, [0, *ks])) for d, ks in seeds.items()}


# ---------------------------------------------------------------- baselines, lost queries


def _baselines(ch: Chapter, results: dict) -> None:
    rows = []
    for d, df in results.items():
        for r in df.itertuples():
            key = f"strag_{glue_key(d)}_K{r.K}_S{r.S}"
            diffs = {}
            for name in ("replication", "uncoded"):
                diff = (getattr(r, f"{name}_diff"), getattr(r, f"{name}_diff_low"), getattr(r, f"{name}_diff_high"))
                diffs[name] = diff
                ch.glue |= {f"{key}_{name}": getattr(r, name), f"{key}_{name}_diff": diff[0],
                            f"{key}_{name}_diff_lo": diff[1], f"{key}_{name}_diff_hi": diff[2]}  # fmt: skip
            ch.glue[f"{key}_baselines_verdict"] = report.paired_verdict(diffs)
            rows.append({
                "dataset": NAMES[d], "K": r.K, "S": r.S, "ApproxIFER": r.accuracy,
                "replication": r.replication, "replication − ApproxIFER": ci_text(*diffs["replication"], signed=True),
                "uncoded": r.uncoded, "uncoded − ApproxIFER": ci_text(*diffs["uncoded"], signed=True),
            })  # fmt: skip
    ch.tables["baselines"] = report.readable(pd.DataFrame(rows).set_index(["dataset", "K", "S"]))


def _lost(ch: Chapter, results: dict) -> None:
    rows = []
    for d, df in results.items():
        for r in df.itertuples():
            key = f"strag_{glue_key(d)}_K{r.K}_S{r.S}"
            ch.glue |= {f"{key}_lost": r.lost, f"{key}_lost_lo": r.lost_low, f"{key}_lost_hi": r.lost_high,
                        f"{key}_kept": r.kept, f"{key}_lost_per_round": r.lost_per_round}  # fmt: skip
            rows.append({
                "dataset": NAMES[d], "K": r.K, "S": r.S, "lost per round": f"{r.lost_per_round:.2f}",
                "lost queries [95 % CI]": ci_text(r.lost, r.lost_low, r.lost_high),
                "other queries [95 % CI]": ci_text(r.kept, r.kept_low, r.kept_high),
                "all queries": f"{r.accuracy:.3f}", "base": f"{r.base:.3f}",
            })  # fmt: skip
    ch.tables["lost"] = pd.DataFrame(rows).set_index(["dataset", "K", "S"])


# ---------------------------------------------------------------- per query, endpoints


def _per_query(ch: Chapter, wo: dict, ends: dict, datasets, grid, draws: int, seed: int) -> None:
    K0, S0 = grid[0]
    per = {d: ex.per_query_accuracy(wo[d, K0, K0 + S0], draws=draws, seed=seed) for d in datasets}
    ch.data["per_query"] = per
    for d, t in per.items():
        worst = int(t.accuracy.idxmin())
        ch.glue |= {f"strag_{glue_key(d)}_K{K0}_S{S0}_query_worst": t.accuracy.min(),
                    f"strag_{glue_key(d)}_K{K0}_S{S0}_query_worst_j": worst,
                    f"strag_{glue_key(d)}_K{K0}_S{S0}_query_best": t.accuracy.max()}  # fmt: skip
    table = pd.DataFrame({NAMES[d]: t.accuracy for d, t in per.items()})
    table.insert(0, "α_j", per[datasets[0]].alpha_j)
    lowest = {j: [NAMES[d] for d, t in per.items() if t.accuracy.idxmin() == j] for j in table.index}
    table["lowest for"] = [", ".join(v) or None for v in lowest.values()]
    table.index.name = "query j"
    ch.tables["per_query"] = report.readable(table)
    fig, ax = report.figure(height=2.6)
    for d, t in per.items():
        report.ci_plot(ax, t, "j", NAMES[d])
    ax.set(xlabel=f"query position j (K = {K0}, S = {S0}; α_j decreases with j)", ylabel="accuracy")
    report.legend_outside(fig, ax, where="outside right upper", ncols=1)
    ch.figures["per_query"] = fig

    rows = {}
    for d in datasets:
        for K, S in grid:
            paper = ex.straggler_table([wo[d, K, K + S]], draws=draws, seed=seed, baselines=False).iloc[0]
            end = ex.straggler_table([ends[d, K, K + S]], draws=draws, seed=seed, baselines=False).iloc[0]
            rows[(NAMES[d], K, S)] = {"paper's points": paper.accuracy, "both ends": end.accuracy,
                                      "change": end.accuracy - paper.accuracy}  # fmt: skip
        gains = [rows[(NAMES[d], K, S)]["change"] for K, S in grid]
        worst = ex.per_query_accuracy(ends[d, K0, K0 + S0], draws=draws, seed=seed).accuracy.min()
        ch.glue |= {f"strag_{glue_key(d)}_ends_gain_min": min(gains), f"strag_{glue_key(d)}_ends_gain_max": max(gains),
                    f"strag_{glue_key(d)}_ends_worst_query": worst}  # fmt: skip
    t = pd.DataFrame(rows).T.rename_axis(["dataset", "K", "S"])
    weight = {p: [np.abs(codec.encoder_matrix(K, K + S, p)).max(axis=1).mean() for K, S in grid] for p in codec.POINTS}
    ch.glue |= {"strag_weight_paper": weight["paper"][0], "strag_weight_ends": weight["endpoints"][0]}
    ch.tables["endpoints"] = report.readable(t)
    ch.tables["weights"] = report.readable(
        pd.DataFrame({"paper's points": weight["paper"], "both ends": weight["endpoints"]},
                     index=pd.MultiIndex.from_tuples(grid, names=["K", "S"])).rename_axis(columns="largest weight")
    )  # fmt: skip


# ---------------------------------------------------------------- ablations, runtime


def _ablations(ch: Chapter, wo: dict, datasets, grid, table) -> None:
    acc = lambda d, **kw: table([wo[d, K, K + S] for K, S in grid], baselines=False, **kw).set_index(["K", "S"])  # noqa: E731
    kinds = {"logits": "logits", "probs": "probabilities", "logprobs": "log-probabilities"}
    ch.tables["transform"] = report.readable(pd.concat(
        {NAMES[d]: pd.DataFrame({name: acc(d, kind=k)["accuracy"] for k, name in kinds.items()}) for d in datasets}
    ).rename_axis(["dataset", "K", "S"]))  # fmt: skip
    signs = {d: pd.DataFrame({s: acc(d, signs=s)["accuracy"] for s in ("position", "index")}) for d in datasets}
    for d, t in signs.items():
        ch.glue[f"strag_{glue_key(d)}_signs_max_gap"] = (t.position - t["index"]).abs().max()
    ch.tables["signs"] = report.readable(
        pd.concat({NAMES[d]: t for d, t in signs.items()}).rename_axis(["dataset", "K", "S"])
        .rename(columns={"position": "sorted position", "index": "global index"})
    )  # fmt: skip


def _runtime(ch: Chapter, models: dict, datasets, seed: int, rounds: int) -> None:
    rows = []
    for d in datasets:
        for K in (8, 12):
            t = ex.stage_times(models[d], K, K + 1, 1, rounds=rounds, seed=seed)
            r = anchors.RUNTIMES_R.get((d, K))
            rows.append({
                "dataset": NAMES[d], "K": K,
                **{f"{s} (ms)": 1e3 * t[s] for s in ("encode", "inference", "decode", "total")},
                "[R] per round (ms)": None if r is None else 1e3 * r[0],
            })  # fmt: skip
            ch.glue[f"strag_{glue_key(d)}_K{K}_round_ms"] = 1e3 * t["total"]
            ch.volatile.add(f"strag_{glue_key(d)}_K{K}_round_ms")
    threads = f"{t['threads']} thread{'s' if t['threads'] != 1 else ''}"
    ch.glue["strag_runtime_device"] = f"{t['device']}, {threads}" if t["device"] == "cpu" else t["device"]
    ch.volatile.add("strag_runtime_device")
    ch.tables["runtime"] = report.readable(pd.DataFrame(rows).set_index(["dataset", "K"]), digits=2)


# ---------------------------------------------------------------- figures


def _summary_figure(results: dict):
    """ApproxIFER (95 % CI bars), uncoded, replication and [P] over the paper's grid, one row per dataset."""
    fig, axes = report.figure(len(results), 1, height=1.9, sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (d, df) in zip(axes, results.items(), strict=True):
        x = np.arange(len(df))
        err = [df.accuracy - df.ci_low, df.ci_high - df.accuracy]
        ax.errorbar(x, df.accuracy, yerr=err, marker="o", ms=5, capsize=3, lw=1.5, label="ApproxIFER (95 % CI)")
        ax.plot(x, df.replication, marker="s", ms=4, ls="--", label="replication")
        ax.plot(x, df.uncoded, marker="^", ms=4, ls=":", label="uncoded")
        P = [_published(r.K, r.S, "P", d) for r in df.itertuples()]
        ax.plot(x, [np.nan if p is None else p for p in P], "kx", ms=7, mew=1.5, ls="none", label="[P]")
        ax.set(ylabel="accuracy", title=NAMES[d])
        ax.set_xticks(x, [f"K={r.K}, S={r.S}" for r in df.itertuples()])
    report.legend_outside(fig, axes, where="outside upper center")
    return fig


def _sweeps_figure(k: dict, n: dict, K: int):
    fig, (a, b) = report.figure(1, 2, height=2.8)
    for d in k:
        report.ci_plot(a, k[d], "K", NAMES[d])
        report.ci_plot(b, n[d], "N", NAMES[d])
    a.set(xlabel="K (queries per round), S = 1", ylabel="accuracy")
    b.set(xlabel=f"N (workers), K = {K}, S = N − K")
    report.legend_outside(fig, a)
    return fig


def _subset_figure(subset: dict, K: int, N: int):
    fig, ax = report.figure(height=2.6)
    for d, s in subset.items():
        report.ci_plot(ax, s, "returned", NAMES[d])
    ax.axvline(K, color="grey", ls=":", lw=1)
    ax.set(xlabel=f"returned workers (of N = {N}; K = {K}, dotted)", ylabel="accuracy")
    report.legend_outside(fig, ax, where="outside right upper", ncols=1)
    return fig

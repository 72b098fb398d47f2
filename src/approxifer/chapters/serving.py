r"""Serving for real: the study behind the serving chapter (tail latency on Ray, under stragglers and a fault).

One Ray session (`cluster.ray_backend.Cluster`) serves Poisson arrivals with each scheme at equal resources per
tolerated straggler — uncoded ($N = K$), replication and ParM ($N = K + 1$), ApproxIFER ($N = K + S$) — at several
rates, then ApproxIFER with decoding deadlines, then ApproxIFER with a worker killed mid-run. The discrete-event
simulator (`cluster.simulate`), driven by the same frontend and by the service times each run measured, replays
every run (the page counts those it matches within 20 % on p50 and p99) before it extrapolates p99.9 to 100+
workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from approxifer import experiments as ex
from approxifer import models, report
from approxifer.cluster import schemes
from approxifer.cluster.delays import Stragglers
from approxifer.cluster.frontend import ANSWERED, Run
from approxifer.cluster.simulate import ServiceModel, measure_compute, measure_stages, simulate
from approxifer.errors import ParameterError
from approxifer.report import MODEL_NAMES, NAMES, Chapter

__all__ = ["chapter", "label", "plan", "run"]

TOLERANCE = 0.20  # the simulator must match the measured p50 and p99 within 20 %


def label(s: schemes.Scheme) -> str:
    """A scheme as a reader names it."""
    if s.name == "approxifer":
        return f"ApproxIFER, S = {s.S}" + (f", E = {s.E}" if s.E else "")
    return {"uncoded": "uncoded", "replication": f"replication, S = {s.S}", "parm": "ParM"}.get(s.name, s.name)


def key(s: schemes.Scheme) -> str:
    """A scheme's short name in glue keys: uncoded, replication1, parm, approxifer2."""
    return s.name + (str(s.S) if s.name in ("approxifer", "replication") else "")


def plan(K: int, S: Sequence[int]) -> list[schemes.Scheme]:
    """The schemes compared: uncoded (N = K), replication and ParM (N = K + 1), ApproxIFER for each S."""
    return [schemes.make("uncoded", K), schemes.make("replication", K, 1), schemes.make("parm", K, 1),
            *(schemes.make("approxifer", K, s) for s in S)]  # fmt: skip


def run(
    dataset: str = "mnist",
    arch: str = "mlp",
    *,
    K: int = 4,
    S: Sequence[int] = (1, 2),
    rates: Sequence[float] = (20.0, 40.0),
    queries: int = 200,
    straggler: str | None = None,
    deadlines: Sequence[float] = (10.0, 15.0, 20.0, 30.0),
    fault_queries: int = 200,
    kill_worker: int = 1,
    sim_Ks: Sequence[int] = (4, 16, 64),
    sim_S: Sequence[int] = (1, 2, 4, 8),
    sim_queries: int = 5000,
    seed: int = 0,
    precision: str = "fp32",
    address: str | None = None,
) -> Chapter:
    """Everything the serving chapter shows. Ray runs: each scheme of `plan(K, S)` at each rate (`queries` each),
    ApproxIFER (S = S[0]) at the last rate with each deadline (ms), and with worker `kill_worker` killed mid-run."""
    from approxifer.cluster.ray_backend import Cluster, TrainedModels

    ex.check_params(datasets=[dataset], arch=arch, precision=precision)
    stragglers = Stragglers.parse(straggler)
    if not rates or any(not r > 0 for r in rates):
        raise ParameterError(f"rates must be a non-empty list of numbers > 0 (queries per second), got {rates!r}")
    if not S or any(s < 1 for s in S):
        raise ParameterError(f"S must be a non-empty list of integers >= 1, got {S!r}")
    if not 0 <= kill_worker < K + S[0]:
        raise ParameterError(f"kill_worker {kill_worker} is not a worker of ApproxIFER, S = {S[0]}: 0..{K + S[0] - 1}")
    compared = plan(K, S)
    source = TrainedModels(dataset, arch, precision)
    for s in compared:
        source.check(s)
    main = schemes.make("approxifer", K, S[0])
    common = {"stragglers": stragglers, "seed": seed}
    with Cluster(source, max(s.N for s in compared), address=address) as cluster:
        runs = {(label(s), r): cluster.run(s, queries=queries, rate=r, **common) for r in rates for s in compared}
        timed = {d: cluster.run(main, queries=queries, rate=rates[-1], deadline_ms=d, **common) for d in deadlines}
        fault = cluster.run(main, queries=fault_queries, rate=rates[-1], kill_worker=kill_worker, **common)
    alone = measure_compute(source.load("base", K, "cpu"), seed=seed)
    return chapter(runs, timed, fault, dataset=dataset, arch=arch, K=K, S=S, rates=rates, stragglers=stragglers,
                   sim_Ks=sim_Ks, sim_S=sim_S, sim_queries=sim_queries, seed=seed, compute=alone)  # fmt: skip


def chapter(
    runs: dict[tuple[str, float], Run],
    timed: dict[float, Run],
    fault: Run,
    *,
    dataset: str,
    arch: str,
    K: int,
    S: Sequence[int],
    rates: Sequence[float],
    stragglers: Stragglers,
    sim_Ks: Sequence[int],
    sim_S: Sequence[int],
    sim_queries: int,
    seed: int = 0,
    compute: np.ndarray | None = None,
) -> Chapter:
    """The chapter's tables, figures and glued values from its runs: `runs[label, rate]` for `plan(K, S)`,
    `timed[deadline]` and `fault` for ApproxIFER with S = S[0] at the last rate. The extrapolation draws a task's
    compute time from `compute` (seconds, the model alone on one thread: a core per worker), else from the runs."""
    main = schemes.make("approxifer", K, S[0])
    compared = plan(K, S)
    ch = Chapter(data={"runs": runs, "deadline_runs": timed, "fault": fault})
    ch.tables["tails"] = tail_table(runs)
    ch.figures["tails"] = tail_figure(runs, rates)
    ch.tables["deadline"], ch.figures["deadline"] = deadline_results(runs[label(main), rates[-1]], timed)
    ch.tables["fault"] = fault_table(fault, runs.get((label(main), rates[-1])))
    ch.tables["accounting"] = accounting_table({**{f"{n}, {r:g} q/s": run for (n, r), run in runs.items()},
                                                f"{label(main)}, {rates[-1]:g} q/s, worker killed": fault})  # fmt: skip
    ch.figures["fault"] = fault_figure(fault)
    ch.tables["validation"] = validation_table(runs, stragglers, seed)
    service = pooled_service(runs.values())
    ch.data["compute_alone"] = compute
    scaled = service if compute is None else service.with_compute(compute)
    ext = extrapolate(scaled, stragglers, dataset, K=K, rate=rates[-1], Ks=sim_Ks, S=sim_S, queries=sim_queries,
                      seed=seed)  # fmt: skip
    ch.data["extrapolation"] = ext
    ch.tables["extrapolation"] = report.readable(
        ext.drop(columns="key").set_index(["frontend", "scheme", "K", "N"]), digits=1
    )
    ch.figures["extrapolation"] = extrapolation_figure(ext)
    ch.glue |= _glue(ch, runs, compared, main, rates, stragglers, dataset, arch, K, service, fault)
    return ch


# ---------------------------------------------------------------- tables and figures


def percentile_ci(latency_ms: np.ndarray, q: float, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of the q-th percentile (resampling queries)."""
    if len(latency_ms) == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(latency_ms), (n_boot, len(latency_ms)))
    lo, hi = np.quantile(np.percentile(latency_ms[idx], q, axis=1), [0.025, 0.975])
    return float(lo), float(hi)


def accuracy(run: Run) -> tuple[float, float, float]:
    """Accuracy over the queries sent (a failure counts as wrong), with a bootstrap CI over rounds."""
    tr = run.trace
    correct = (tr.prediction == run.labels) & (tr.status == ANSWERED)
    round_of = np.empty(len(correct), int)
    for r in tr.rounds:
        round_of[r["queries"]] = r["round"]
    return ex.accuracy_ci(correct[:, None], clusters=round_of)


def latency_ms(run: Run) -> np.ndarray:
    return 1e3 * run.trace.latency


def tail_table(runs: dict[tuple[str, float], Run]) -> pd.DataFrame:
    rows = []
    for (name, rate), r in runs.items():
        s, lat = r.summary(), latency_ms(r)
        lo, hi = percentile_ci(lat, 99.9)
        rows.append({"rate (q/s)": f"{rate:g}", "scheme": name, "N": s["N"], "p50 (ms)": f"{s['p50_ms']:.1f}",
                     "p99 (ms)": f"{s['p99_ms']:.1f}",
                     "p99.9 (ms) [95% CI]": f"{s['p999_ms']:.0f} [{lo:.0f}, {hi:.0f}]",
                     "accuracy [95% CI]": report.ci_text(*accuracy(r))})  # fmt: skip
    return pd.DataFrame(rows).set_index(["rate (q/s)", "scheme"])


def _ccdf(ax, lat: np.ndarray, **kw) -> None:
    """Fraction of queries slower than x, on log axes (the tail is the lower right)."""
    x = np.sort(lat)
    ax.step(x, 1 - np.arange(1, len(x) + 1) / (len(x) + 1), where="post", **kw)


STYLE = {"uncoded": ("k", ":"), "replication": ("C2", "--"), "ParM": ("C1", "-.")}
APPROXIFER_COLORS = ("C0", "C4", "C9", "C6", "C8")


def _style(name: str, i: int = 0) -> dict:
    """Line style of a scheme; the i-th ApproxIFER variant gets the i-th of its colours."""
    if name.startswith("ApproxIFER"):
        return {"color": APPROXIFER_COLORS[i % len(APPROXIFER_COLORS)], "ls": "-"}
    color, ls = next(v for k, v in STYLE.items() if name.startswith(k))
    return {"color": color, "ls": ls}


def _plain(ax) -> None:
    """Plain numbers (not powers of ten) on log axes."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(mticker.NullFormatter())


def tail_figure(runs: dict[tuple[str, float], Run], rates: Sequence[float]):
    shown = sorted({rates[0], rates[-1]})
    fig, axes = report.figure(1, len(shown), height=3.0, sharey=True)
    for ax, rate in zip(np.ravel(axes), shown, strict=True):
        names = [n for n, r in runs if r == rate]
        for i, name in enumerate(names):
            k = sum(1 for m in names[:i] if m.startswith("ApproxIFER"))
            _ccdf(ax, latency_ms(runs[name, rate]), label=name, **_style(name, k))
        ax.set(xscale="log", yscale="log", xlabel="latency, arrival to answer (ms)", title=f"{rate:g} queries/s")
        _plain(ax)
    np.ravel(axes)[0].set(ylabel="fraction of queries slower")
    report.legend_outside(fig, axes, ncols=3)
    return fig


def deadline_results(base: Run, timed: dict[float, Run]):
    """Accuracy and latency of ApproxIFER as the decoding deadline shrinks (no deadline: `base`)."""
    rows = []
    for d, r in [(None, base), *sorted(timed.items(), reverse=True)]:
        s = r.summary()
        sizes = [len(x["returned"]) for x in r.trace.rounds if x.get("how") == "deadline"]
        acc = accuracy(r)
        rows.append({"deadline (ms)": "none" if d is None else f"{d:g}", "d": math.inf if d is None else d,
                     "at the deadline": f"{len(sizes)}/{len(r.trace.rounds)}",
                     "mean returned there": f"{np.mean(sizes):.1f}" if sizes else "–",
                     "failed": s["failed"], "p99 (ms)": s["p99_ms"], "p99.9 (ms)": s["p999_ms"],
                     "acc": acc[0], "lo": acc[1], "hi": acc[2], "accuracy [95% CI]": report.ci_text(*acc)})  # fmt: skip
    df = pd.DataFrame(rows)
    fig, axes = report.figure(1, 2, height=2.6)
    x = np.arange(len(df))
    axes[0].errorbar(x, df.acc, yerr=[df.acc - df.lo, df.hi - df.acc], marker="o", capsize=3, color="C0")
    axes[0].set(ylabel="accuracy (all queries sent)", xlabel="decoding deadline (ms)")
    axes[1].plot(x, df["p99 (ms)"], marker="o", label="p99", color="C0")
    axes[1].plot(x, df["p99.9 (ms)"], marker="s", ls="--", label="p99.9", color="C3")
    axes[1].set(ylabel="latency (ms)", xlabel="decoding deadline (ms)", ylim=(0, None))
    for ax in axes:
        ax.set_xticks(x, df["deadline (ms)"])
    report.legend_outside(fig, axes[1], ncols=2)
    table = df.drop(columns=["d", "acc", "lo", "hi"]).set_index("deadline (ms)")
    return report.readable(table, digits=1), fig


def fault_table(fault: Run, calm: Run | None) -> pd.DataFrame:
    rows = {}
    for name, r in (("worker killed mid-run", fault), ("no fault (same rate)", calm)):
        if r is None:
            continue
        s = r.summary()
        rows[name] = {"sent": s["sent"], "answered": s["answered"], "failed": s["failed"], "lost": s["lost"],
                      "restarts": s["restarts"], "p99 (ms)": f"{s['p99_ms']:.1f}",
                      "accuracy [95% CI]": report.ci_text(*accuracy(r))}  # fmt: skip
    return pd.DataFrame(rows).T


def accounting_table(runs: dict[str, Run]) -> pd.DataFrame:
    """Every query of every run (without a deadline): sent, answered, failed, lost."""
    keys = ("sent", "answered", "failed", "lost")
    return pd.DataFrame({name: {k: r.summary()[k] for k in keys} for name, r in runs.items()}).T.rename_axis("run")


def fault_figure(fault: Run):
    tr, kill = fault.trace, fault.config["kill_round"]
    fig, ax = report.figure(1, 1, height=2.6)
    ok = tr.status == ANSWERED
    in_kill = np.zeros(len(ok), bool)
    in_kill[tr.rounds[kill]["queries"]] = True
    ax.scatter(tr.arrival[ok & ~in_kill], 1e3 * (tr.answer - tr.arrival)[ok & ~in_kill], s=8, color="C0",
               label="answered")  # fmt: skip
    ax.scatter(tr.arrival[ok & in_kill], 1e3 * (tr.answer - tr.arrival)[ok & in_kill], s=30, marker="x", color="C3",
               label="in the round whose worker was killed")  # fmt: skip
    ax.axvline(tr.rounds[kill]["dispatch"], color="C3", lw=1, ls=":", label="kill")
    ax.set(xlabel="arrival time (s)", ylabel="latency (ms)", yscale="log")
    _plain(ax)
    report.legend_outside(fig, ax, ncols=3)
    return fig


# ---------------------------------------------------------------- the simulator: validation and extrapolation


def validation_table(runs: dict[tuple[str, float], Run], stragglers: Stragglers, seed: int) -> pd.DataFrame:
    """Each Ray run replayed by the simulator (same arrivals, batching and straggler draws; its own measured
    service times): p50 and p99, and whether both are within `TOLERANCE`."""
    rows = []
    for (name, rate), r in runs.items():
        sim = simulate(r.trace.scheme, ServiceModel.from_trace(r.trace), queries=r.summary()["sent"], rate=rate,
                       stragglers=stragglers, seed=seed)  # fmt: skip
        a, b = r.summary(), sim.summary()
        err = {q: b[f"{q}_ms"] / a[f"{q}_ms"] - 1 for q in ("p50", "p99")}
        rows.append({"rate (q/s)": f"{rate:g}", "scheme": name, "p50 Ray (ms)": a["p50_ms"],
                     "p50 sim (ms)": b["p50_ms"], "p99 Ray (ms)": a["p99_ms"], "p99 sim (ms)": b["p99_ms"],
                     "error p50, p99": f"{100 * err['p50']:+.0f} %, {100 * err['p99']:+.0f} %",
                     "within 20 %": all(abs(e) <= TOLERANCE for e in err.values())})  # fmt: skip
    return report.readable(pd.DataFrame(rows).set_index(["rate (q/s)", "scheme"]), digits=1)


def pooled_service(runs) -> ServiceModel:
    """The service-time distributions of all runs together."""
    parts = [ServiceModel.from_trace(r.trace) for r in runs]
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
    stages = {k: np.concatenate([p.stages[k] for p in parts if k in p.stages]) for k in ("submit", "prepare")
              if any(k in p.stages for p in parts)}  # fmt: skip
    return ServiceModel(cat("compute"), cat("inbound"), cat("gap"), cat("outbound"), stages)


def extrapolate(
    service: ServiceModel,
    stragglers: Stragglers,
    dataset: str,
    *,
    K: int,
    rate: float,
    Ks: Sequence[int],
    S: Sequence[int],
    queries: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulated p50/p99/p99.9 for each scheme at each group size in `Ks`, with the arrival rate scaled so that
    every worker sees as many tasks per second as in the measured runs (rate x K' / K), twice: with the measured
    frontend (one process; its encode and decode timed with the real code for each (K', N) by `measure_stages`, its
    other costs as measured on Ray), and with a frontend whose own work takes no time (the workers alone)."""
    free = ServiceModel(service.compute, service.inbound, service.gap, service.outbound, {})
    rows = []
    for k in Ks:
        compared = [schemes.make("uncoded", k), schemes.make("replication", k, 1)]
        compared += [schemes.make("parm", k, 1)] if k >= 2 else []
        compared += [schemes.make("approxifer", k, s) for s in S]
        for s in compared:
            measured = service.with_stages(measure_stages(s, dataset, reps=20, seed=seed))
            for frontend, svc in (("measured", measured), ("free", free)):
                r = simulate(s, svc, queries=queries, rate=rate * k / K, stragglers=stragglers, seed=seed).summary()
                rows.append({"frontend": frontend, "scheme": label(s), "key": key(s), "K": k, "N": s.N,
                             "rate (q/s)": rate * k / K, "p50 (ms)": r["p50_ms"], "p99 (ms)": r["p99_ms"],
                             "p99.9 (ms)": r["p999_ms"], "frontend busy (%)": 100 * r["frontend_busy"]})  # fmt: skip
    return pd.DataFrame(rows)


def extrapolation_figure(ext: pd.DataFrame):
    fig, axes = report.figure(1, 2, height=3.0, sharey=True)
    titles = {"measured": "p99.9, the measured frontend", "free": "p99.9, frontend work not counted"}
    for ax, (frontend, title) in zip(axes, titles.items(), strict=True):
        i = 0
        for name, df in ext[ext.frontend == frontend].groupby("scheme", sort=False):
            kw = _style(name, i)
            i += name.startswith("ApproxIFER")
            ax.plot(df.N, df["p99.9 (ms)"], marker="o", ms=4, label=name, **kw)
        ax.set(xscale="log", yscale="log", xlabel="workers N", title=title)
        ax.set_xticks(sorted(set(ext.K)), [str(k) for k in sorted(set(ext.K))])
        _plain(ax)
    axes[0].set(ylabel="latency (ms)")
    report.legend_outside(fig, axes, ncols=3)
    return fig


# ---------------------------------------------------------------- glued values


def _glue(ch, runs, compared, main, rates, stragglers, dataset, arch, K, service, fault) -> dict:
    rate = rates[-1]
    g = {"srv_rate": f"{rate:g}", "srv_K": K, "srv_model": f"{NAMES[dataset]} {MODEL_NAMES[arch]}",
         "srv_straggler": stragglers.describe(), "srv_queries": runs[label(main), rate].summary()["sent"]}  # fmt: skip
    lat = {label(s): latency_ms(runs[label(s), rate]) for s in compared}
    for s in compared:
        k = key(s)
        r = runs[label(s), rate].summary()
        acc = accuracy(runs[label(s), rate])
        lo, hi = percentile_ci(lat[label(s)], 99.9)
        g |= {f"srv_{k}_p50": r["p50_ms"], f"srv_{k}_p99": r["p99_ms"], f"srv_{k}_p999": r["p999_ms"],
              f"srv_{k}_p999_lo": lo, f"srv_{k}_p999_hi": hi, f"srv_{k}_acc": acc[0],
              f"srv_{k}_acc_lo": acc[1], f"srv_{k}_acc_hi": acc[2], f"srv_{k}_N": s.N}  # fmt: skip
    k = key(main)
    for other in ("uncoded", "parm"):
        a, b = (g[f"srv_{k}_p999_lo"], g[f"srv_{k}_p999_hi"]), (g[f"srv_{other}_p999_lo"], g[f"srv_{other}_p999_hi"])
        g[f"srv_vs_{other}"] = ("shorter than" if a[1] < b[0] else "longer than" if a[0] > b[1]
                                else "not distinguishable from")  # fmt: skip
    f = fault.summary()
    g |= {"srv_fault_sent": f["sent"], "srv_fault_answered": f["answered"], "srv_fault_failed": f["failed"],
          "srv_fault_lost": f["lost"], "srv_fault_restarts": f["restarts"], "srv_fault_p99": f["p99_ms"],
          "srv_fault_worker": fault.config["kill_worker"]}  # fmt: skip
    valid = ch.tables["validation"]["within 20 %"]
    g |= {"srv_valid": int((valid == "✓").sum()), "srv_valid_of": len(valid)}
    loads = [r.config["load_1min"] for r in runs.values()]
    cores = runs[label(main), rate].config["cores"]
    compute = float(np.mean(service.compute))
    biggest = max(compared, key=lambda s: s.N)
    g |= {"srv_cpu": runs[label(main), rate].config.get("cpu", "–"), "srv_cores": cores,
          "srv_load_lo": min(loads), "srv_load_hi": max(loads),
          "srv_compute_ms": 1e3 * compute, "srv_workers": biggest.N,
          "srv_cpu_share_pct": 100 * rate / K * biggest.N * compute / cores}  # fmt: skip
    alone = ch.data["compute_alone"]
    g["srv_compute_alone_ms"] = 1e3 * float(np.median(alone if alone is not None else service.compute))
    g["srv_cores_verdict"] = (
        "more than the cores can give: the workers queued for the cores, and CPU contention, not only the injected "
        "stragglers, set the latency"
        if g["srv_cpu_share_pct"] > 100
        else "within what the cores can give, so the workers computed in parallel as on separate machines"
    )
    ext = ch.data["extrapolation"]
    top = ext[ext.K == ext.K.max()]
    g |= {"srv_sim_K": int(top.K.iloc[0]), "srv_sim_N": int(top.N.max())}
    for row in top.to_dict("records"):
        name = f"srv_sim_{row['frontend']}_{row['key']}"
        g |= {f"{name}_p999": row["p99.9 (ms)"], f"{name}_busy": row["frontend busy (%)"]}
    for frontend in ("measured", "free"):
        u, a = g[f"srv_sim_{frontend}_uncoded_p999"], g[f"srv_sim_{frontend}_{key(main)}_p999"]
        g[f"srv_sim_{frontend}_vs_uncoded"] = "below" if a < u else "above"
    g |= {"srv_max_wait_ms": 2e3 * K / rate, "srv_base_acc": float(models.load_card(dataset, arch)["test_accuracy"])}
    return g

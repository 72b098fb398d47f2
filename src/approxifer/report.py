"""Tables and figures for the notebooks: our numbers (with CIs) beside the published ones, and CI-band plots."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from approxifer import anchors
from approxifer.experiments import base_outputs, fmt_ci

__all__ = ["ci_plot", "glue_all", "runtime_comparison", "straggler_comparison"]

NAMES = {"mnist": "MNIST", "fashion-mnist": "F-MNIST", "cifar10": "CIFAR-10"}


def _anchor(table: dict, key, source: str, dataset: str) -> str:
    v = table.get(key, {}).get((source, dataset))
    return "–" if v is None else f"{v:.3f}"


def straggler_comparison(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (dataset, K, S): ours ± 95 % CI beside [P] and [R]; the base model on the same queries."""
    rows = []
    for dataset, df in results.items():
        for r in df.itertuples():
            rows.append(
                {
                    "dataset": NAMES[dataset],
                    "K": r.K,
                    "S": r.S,
                    "ours [95% CI]": fmt_ci(r.accuracy, r.ci_low, r.ci_high),
                    "[P]": _anchor(anchors.STRAGGLERS, (r.K, r.S), "P", dataset),
                    "[R]": _anchor(anchors.STRAGGLERS, (r.K, r.S), "R", dataset),
                    "base (ours)": f"{r.base:.3f}",
                    "base [P]": f"{anchors.BASE[('P', dataset)]:.3f}",
                }
            )
    return pd.DataFrame(rows).set_index(["dataset", "K", "S"])


def runtime_comparison(times: dict[tuple[str, int], dict]) -> pd.DataFrame:
    """Per-stage seconds per round beside [R]'s Colab totals per round."""
    rows = []
    for (dataset, K), t in times.items():
        r = anchors.RUNTIMES_R.get((dataset, K))
        rows.append(
            {
                "dataset": NAMES[dataset],
                "K": K,
                "device": f"{t['device']} ({t['threads']} threads)" if t["device"] == "cpu" else t["device"],
                "encode (ms)": 1e3 * t["encode"],
                "inference (ms)": 1e3 * t["inference"],
                "decode (ms)": 1e3 * t["decode"],
                "total (ms)": 1e3 * t["total"],
                "[R] total, Colab (ms)": np.nan if r is None else 1e3 * r[0],
            }
        )
    return pd.DataFrame(rows).set_index(["dataset", "K"]).round(2)


def ci_plot(ax, df: pd.DataFrame, x: str, label: str, y: str = "accuracy", **kw) -> None:
    """A line with its 95 % CI band (columns y, ci_low/ci_high or {y}_low/{y}_high)."""
    lo = df["ci_low"] if y == "accuracy" else df[f"{y}_low"]
    hi = df["ci_high"] if y == "accuracy" else df[f"{y}_high"]
    (line,) = ax.plot(df[x], df[y], marker="o", ms=4, label=label, **kw)
    ax.fill_between(df[x], lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def glue_all(prefix: str, values: dict[str, float], digits: int = 3) -> None:
    """`myst_nb.glue` every value (rounded) under `prefix_key`, without displaying it."""
    from myst_nb import glue

    for k, v in values.items():
        glue(f"{prefix}_{k}", round(float(v), digits) if isinstance(v, float | np.floating) else v, display=False)


def new_figure(ncols: int, width: float = 4.2, height: float = 3.2):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, constrained_layout=True)
    return fig, axes[0]


MIN_ACCURACY = {  # what the project requires of its base models (issue: datasets and base models)
    ("mnist", "resnet18"): 0.994, ("fashion-mnist", "resnet18"): 0.935, ("cifar10", "resnet18"): 0.93,
    ("cifar10", "resnet34"): 0.93, ("mnist", "lenet5"): 0.99, ("mnist", "mlp"): 0.98,
    ("cifar10", "vgg16"): 0.92, ("cifar10", "mobilenetv2"): 0.92,  # issue: model-agnostic
}  # fmt: skip


def base_model_table(
    datasets, archs, *, device: str = "cpu", precision: str = "fp32", n_test: int | None = None
) -> pd.DataFrame:
    """Every (dataset, arch): accuracy measured now (as served, first n_test images), its card, [P], target."""
    from approxifer import data, models, serving

    rows = []
    for d in datasets:
        for a in archs:
            row = {"dataset": d, "arch": a, "[P] base": anchors.BASE.get(("P", d)) if a == "resnet18" else None,
                   "required": MIN_ACCURACY.get((d, a))}  # fmt: skip
            try:
                card = models.load_card(d, a)
            except models.ModelError:
                if (d, a) in MIN_ACCURACY:
                    rows.append(row | {"status": f"not trained yet: approxifer train {d} {a}"})
                continue
            _, y = data.load(d, "test")
            idx = np.arange(len(y))[:n_test]
            model = serving.served(d, a, device, precision)
            pred = base_outputs(model, idx, progress=False).argmax(-1)  # cached per model
            rows.append(
                row
                | {
                    "status": "trained",
                    "measured": float((pred == y[:n_test]).mean()),
                    "n_test": len(pred),
                    "card": card["test_accuracy"],
                    "epochs": card["epochs"],
                    "weights": card["weights_dtype"],
                    "train time (min)": round(card["wall_time_s"] / 60, 1),
                }
            )
    return pd.DataFrame(rows).set_index(["dataset", "arch"])


def byzantine_comparison(results: dict[str, pd.DataFrame], method: str = "paper") -> pd.DataFrame:
    """Gaussian-attack grid: `method`'s accuracy ± CI beside [P] and [R] (sigma = 1), plus our other rows."""
    rows = []
    for dataset, df in results.items():
        for (E, attack), g in df.groupby(["E", "attack"], sort=False):
            by = g.set_index("method")
            r = by.loc[method]
            sigma1 = attack == "gaussian sigma=1.0"
            rows.append({
                "dataset": NAMES[dataset], "E": E, "attack": attack,
                f"{method} [95% CI]": fmt_ci(r.accuracy, r.ci_low, r.ci_high),
                "[P]": _anchor(anchors.BYZANTINE, E, "P", dataset) if sigma1 else "–",
                "[R]": _anchor(anchors.BYZANTINE, E, "R", dataset) if sigma1 else "–",
                **{m: by.loc[m, "accuracy"] for m in by.index if m != method},
                "base": r.base,
            })  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "E", "attack"])


def verdict(acc: float, lo: float, hi: float, ref: float | None) -> str:
    """How our accuracy (with its 95 % CI) compares with a published value."""
    if ref is None:
        return "no published value"
    if lo <= ref <= hi:
        return "reproduced (published value inside our 95 % CI)"
    return f"{'higher' if acc > ref else 'lower'} than published by {abs(acc - ref):.3f}"


def baseline_verdict(acc: float, lo: float, hi: float, baselines: dict[str, float]) -> str:
    """How each baseline's accuracy compares with ApproxIFER's 95 % CI: above it, inside it, or below it."""

    def relation(v: float) -> str:
        return "beats ApproxIFER" if v > hi else "loses to ApproxIFER" if v < lo else "matches ApproxIFER"

    return "; ".join(f"{name} {relation(v)}" for name, v in baselines.items())

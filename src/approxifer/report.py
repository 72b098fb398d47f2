"""Tables and figures for the book: our numbers (with CIs) beside the published ones, drawn and shaped for a reader.

A chapter's notebook calls one function that returns a `Chapter`: its tables (already in a reader's terms: human
names, compact CIs, `–` for what does not exist, ✓/✗), its figures (drawn at the size the page shows them: at most
two panels across a 7-inch column, fonts of 9 pt and more, legends outside the data) and the values it glues into
the prose. Figures are `matplotlib.figure.Figure` objects, not pyplot ones, so that nothing is displayed until a cell
asks for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from approxifer import anchors
from approxifer.experiments import base_outputs, fmt_ci

__all__ = [
    "Chapter", "ci_plot", "figure", "fmt_cell", "glue_all", "readable", "runtime_comparison", "straggler_comparison",
]  # fmt: skip

NAMES = {"mnist": "MNIST", "fashion-mnist": "F-MNIST", "cifar10": "CIFAR-10"}


def glue_key(dataset: str) -> str:
    """The dataset as glue names spell it: mnist, fashionmnist, cifar10."""
    return dataset.replace("-", "")


MODEL_NAMES = {
    "mlp": "MLP", "lenet5": "LeNet-5", "resnet18": "ResNet-18", "resnet34": "ResNet-34", "vgg16": "VGG-16",
    "mobilenetv2": "MobileNetV2", "logreg": "logistic regression", "gbdt": "boosted trees",
    "random_forest": "random forest", "knn": "kNN",
}  # fmt: skip
#: the same, short enough for a figure's axis
SHORT_MODEL_NAMES = MODEL_NAMES | {"logreg": "log. regr.", "gbdt": "GB trees", "random_forest": "rand. forest"}

#: The column of the book's pages is about 7 inches wide; figures are drawn at that size (110 dpi: ~770 px).
COLUMN_IN = 7.0
STYLE = {
    "figure.dpi": 110, "savefig.dpi": 110, "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False,
}  # fmt: skip
mpl.rcParams.update(STYLE)


def latex_table(df: pd.DataFrame) -> str:
    """A DataFrame as a LaTeX tabular (special characters escaped), for the PDF edition of the book. A line may not
    begin with '[': LaTeX would read it as the optional argument of the line break or rule before it."""
    with pd.option_context("styler.format.escape", "latex"):
        return re.sub(r"(?m)^\[", "{}[", df.to_latex())


def _register_latex() -> None:
    """In IPython, let every displayed DataFrame carry its LaTeX rendering too (HTML still comes first on the web)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/latex"].for_type(pd.DataFrame, latex_table)


_register_latex()


def figure(rows: int = 1, cols: int = 1, *, height: float = 2.8, width: float = COLUMN_IN, **kw):
    """A constrained-layout `Figure` of `rows` x `cols` panels (at most 2 across) at the column's width.

    Returns (figure, axes array of shape (rows, cols) squeezed like `plt.subplots`)."""
    if cols > 2:
        raise ValueError(f"at most 2 panels across a page column, got {cols}")
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=True, **kw)


def legend_outside(fig: Figure, axes, *, ncols: int | None = None, where: str = "outside lower center") -> None:
    """One legend for the whole figure, below (or above) the panels, from the first axes' labelled artists."""
    ax = np.ravel(axes)[0]
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc=where, ncols=ncols or min(len(labels), 4))


def fmt_cell(v: object, digits: int = 3) -> object:
    """A table cell as a reader reads it: NaN/None -> '–', booleans -> ✓/✗, floats to `digits` decimals."""
    if v is None or (isinstance(v, float | np.floating) and np.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return "✓" if v else "✗"
    if isinstance(v, float | np.floating):
        return f"{v:.{digits}f}"
    return v


def readable(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """`df` with every cell formatted by `fmt_cell` (the index is kept)."""
    return df.map(lambda v: fmt_cell(v, digits))


def ci_text(acc: float, lo: float, hi: float, *, signed: bool = False, digits: int = 3) -> str:
    """'0.872 [0.860, 0.884]' (or with signs, for differences); '–' when undefined."""
    if acc is None or np.isnan(acc):
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(acc)} [{f.format(lo)}, {f.format(hi)}]"


@dataclass
class Chapter:
    """What a chapter's study returns: reader-ready tables, figures, the values glued into the prose, and the raw
    results (`data`) for any further cell."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    glue: dict[str, object] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)
    volatile: set[str] = field(default_factory=set)  # glue keys that differ between machines (timings, hardware)

    def glue_all(self, figures: dict[str, str] | None = None, *, volatile: bool = False) -> None:
        """Glue every value (floats rounded to 3 decimals) under its name, and the figures named in `figures`
        (figure name -> glue name) for other pages to paste (``{glue:figure}`page.ipynb::name```). The `volatile`
        keys are glued only by ``glue_all(volatile=True)``, in a cell whose output nbval ignores."""
        from myst_nb import glue

        for k, v in self.glue.items():
            if (k in self.volatile) == volatile:
                glue(k, round(float(v), 3) if isinstance(v, float | np.floating) else v, display=False)
        for name, key in (figures or {}).items() if not volatile else ():
            glue(key, self.figures[name], display=False)


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


def short_verdict(acc: float, lo: float, hi: float, ref: float | None) -> str:
    """A table cell: '✓' when `ref` lies inside [lo, hi], else 'below by 0.009' / 'above by 0.020'; '–' without one."""
    if ref is None:
        return "–"
    if lo <= ref <= hi:
        return "✓ reproduced"
    return f"{'above' if acc > ref else 'below'} by {abs(acc - ref):.3f}"


def models_verdict(runs: Sequence[tuple[float, float, float]], ref: float | None) -> tuple[str, str]:
    """Verdict and table cell for several trained models (seeds), `runs` = [(accuracy, ci_low, ci_high), ...]:
    reproduced when `ref` lies in the union of their CIs, else the range of |accuracy - ref| over the models."""
    if len(runs) == 1 or ref is None:
        return verdict(*runs[0], ref), short_verdict(*runs[0], ref)
    lo, hi = min(r[1] for r in runs), max(r[2] for r in runs)
    if lo <= ref <= hi:
        return f"reproduced (published value inside the 95 % CIs of our {len(runs)} trained models)", "✓ reproduced"
    gaps = sorted(abs(r[0] - ref) for r in runs)
    above = lo > ref
    gap = f"{gaps[0]:.3f}–{gaps[-1]:.3f}"
    return (f"{'higher' if above else 'lower'} than published by {gap} over our {len(runs)} trained models",
            f"{'above' if above else 'below'} by {gap}")  # fmt: skip


def paired_verdict(diffs: dict[str, tuple[float, float, float]]) -> str:
    """How each baseline compares with ApproxIFER, from the paired difference (baseline − ApproxIFER) and its CI."""

    def relation(d: float, lo: float, hi: float) -> str:
        if lo > 0:
            return f"beats ApproxIFER by {d:.3f}"
        if hi < 0:
            return f"loses to ApproxIFER by {-d:.3f}"
        return "matches ApproxIFER (the 95 % CI of the difference holds 0)"

    return "; ".join(f"{name} {relation(*d)}" for name, d in diffs.items())


def method_diagram(K: int = 4, N: int = 5, straggler: int = 2):
    """One round drawn from the codec's own matrices: queries at their points α_j (top), workers at β_i (middle,
    the straggler crossed out), decoded outputs at α_j (bottom); each edge's width is the weight of the encoder
    (top) or of the decoder for the returned set (bottom)."""
    from approxifer import codec

    alpha, beta = codec.query_points(K), codec.worker_points(N)
    returned = [i for i in range(N) if i != straggler]
    enc, dec = codec.encoder_matrix(K, N), codec.decoder_matrix(K, N, returned)
    fig, ax = figure(height=3.4)
    y = {"query": 2.0, "worker": 1.0, "out": 0.0}
    for i in range(N):
        for j in range(K):
            ax.plot([alpha[j], beta[i]], [y["query"], y["worker"]], color="C0", lw=4 * abs(enc[i, j]),
                    alpha=0.8, solid_capstyle="round")  # fmt: skip
    for col, i in enumerate(returned):
        for j in range(K):
            ax.plot([beta[i], alpha[j]], [y["worker"], y["out"]], color="C1", lw=4 * min(abs(dec[j, col]), 1.5),
                    alpha=0.8, solid_capstyle="round")  # fmt: skip
    ax.scatter(alpha, [y["query"]] * K, s=260, color="C0", zorder=3)
    ax.scatter(beta, [y["worker"]] * N, s=260, marker="s", color="0.35", zorder=3)
    ax.scatter([beta[straggler]], [y["worker"]], s=500, marker="x", color="C3", lw=3, zorder=4)
    ax.scatter(alpha, [y["out"]] * K, s=260, color="C1", zorder=3)
    for j in range(K):
        ax.annotate(f"$X_{j}$", (alpha[j], y["query"]), xytext=(0, 12), textcoords="offset points", ha="center")
        ax.annotate(f"$\\hat f(X_{j})$", (alpha[j], y["out"]), xytext=(0, -20), textcoords="offset points",
                    ha="center")  # fmt: skip
    for i in range(N):
        ax.annotate(f"{i}", (beta[i], y["worker"]), ha="center", va="center", color="white", fontsize=8, zorder=5)
    ax.set_yticks(
        [y["query"], y["worker"], y["out"]],
        ["queries at $\\alpha_j$", "workers $f(\\tilde X_i)$\nat $\\beta_i$", "decoded at $\\alpha_j$"],
    )
    ax.set(xlim=(1.12, -1.12), ylim=(-0.5, 2.5), xlabel="position on [−1, 1] (right to left: index order)")
    ax.spines[["left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_title(f"K = {K} queries, N = {N} workers; worker {straggler} straggles (×)")
    return fig

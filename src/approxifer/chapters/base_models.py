"""The base models: every shipped model evaluated as served, beside its model card, [P] and what we required; the
models trained with other seeds; the training histories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from approxifer import experiments as ex
from approxifer import inference, models, report, serving
from approxifer.report import MODEL_NAMES, NAMES, Chapter, glue_key

__all__ = ["run"]


def run(
    datasets: Sequence[str],
    *,
    archs: Sequence[str] = ("resnet18", "resnet34", "vgg16", "mobilenetv2", "lenet5", "mlp"),
    seeds: Mapping[str, Sequence[int]] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    n_test: int | None = None,
) -> Chapter:
    """Everything the base-models chapter shows; `seeds` maps a dataset to the seeds k >= 1 of its ResNet-18."""
    ex.check_params(datasets=datasets, n_test=n_test, device=device, precision=precision)
    for a in archs:
        ex.check_params(datasets=datasets, arch=a)
    table = report.base_model_table(datasets, archs, device=device, precision=precision, n_test=n_test)
    served = serving.resolve_precision(precision, inference.pick_device(device))
    ch = Chapter(data={"table": table})
    rows = {}
    for r in table.reset_index().to_dict("records"):
        name = (NAMES[r["dataset"]], MODEL_NAMES[r["arch"]])
        if r["status"] != "trained":
            rows[name] = {"status": r["status"]}
            continue
        card = models.load_card(r["dataset"], r["arch"])
        start = card.get("warm_start")  # a warm restart: the model of card["recipe"]["epochs"] epochs it began from
        key = f"base_{glue_key(r['dataset'])}_{r['arch']}"
        ch.glue |= {f"{key}_acc": r["measured"], f"{key}_card": r["card"], f"{key}_epochs": card["epochs"],
                    f"{key}_train_min": card["wall_time_s"] / 60}  # fmt: skip
        if start:
            ch.glue |= {f"{key}_start_acc": start["test_accuracy"], f"{key}_start_epochs": card["recipe"]["epochs"]}
        required = None if pd.isna(r["required"]) else r["required"]
        rows[name] = {
            f"served ({served})": r["measured"],
            "fp32 (card)": r["card"],
            "[P]": r["[P] base"],
            "required": required,
            "epochs": card["epochs"],
            "train time (min)": round(r["train time (min)"]),
            "status": "✓ passes" if required is None or r["measured"] >= required else "✗ below",
        }
    t = pd.DataFrame(rows).T.rename_axis(["dataset", "model"])
    # the card's accuracy is the stored weights in fp32 on the whole test set: comparable only on the whole test set
    t["served − fp32"] = t[f"served ({served})"].astype(float) - t["fp32 (card)"].astype(float) if n_test is None \
        else np.nan  # fmt: skip
    ch.glue["base_served_precision"] = served
    if n_test is None:
        ch.glue["base_max_precision_gap"] = float(np.nanmax(np.abs(t["served − fp32"].astype(float))))
    ch.tables["models"] = report.readable(t[[f"served ({served})", "fp32 (card)", "served − fp32", "[P]",
                                             "required", "status"]], digits=4)  # fmt: skip
    ch.tables["training"] = report.readable(t[["epochs", "train time (min)"]])
    _seeds(ch, seeds or {}, n_test)
    ch.figures["history"] = _history(table)
    return ch


def _seeds(ch: Chapter, seeds: Mapping[str, Sequence[int]], n_test: int | None) -> None:
    rows = {}
    for d, ks in seeds.items():
        for k in (0, *ks):
            card = models.load_card(d, "resnet18", variant=models.seed_variant(k))
            rows[(NAMES[d], k)] = {"test accuracy": card["test_accuracy"], "epochs": card["epochs"],
                                   "train time (min)": round(card["wall_time_s"] / 60),
                                   "precision": card.get("precision") or "float32"}  # fmt: skip
            ch.glue[f"base_{glue_key(d)}_resnet18_seed{k}_acc"] = card["test_accuracy"]
        accs = [rows[(NAMES[d], k)]["test accuracy"] for k in (0, *ks)]
        ch.glue[f"base_{glue_key(d)}_resnet18_seed_spread"] = max(accs) - min(accs)
        ch.glue[f"base_{glue_key(d)}_resnet18_seed_range"] = f"{min(accs):.4f}–{max(accs):.4f}"
    if rows:
        ch.tables["seeds"] = report.readable(pd.DataFrame(rows).T.rename_axis(["dataset", "seed"]), digits=4)


def _history(table: pd.DataFrame):
    groups = {"MNIST and Fashion-MNIST": ("mnist", "fashion-mnist"), "CIFAR-10": ("cifar10",)}
    fig, axes = report.figure(1, 2, height=3.2)
    for ax, (title, ds) in zip(axes, groups.items(), strict=True):
        for r in table.reset_index().itertuples():
            if r.status == "trained" and r.dataset in ds:
                h = pd.DataFrame(models.load_card(r.dataset, r.arch)["history"])
                ax.plot(h.epoch, h.test_accuracy, marker="o", ms=2.5, lw=1.2,
                        label=f"{NAMES[r.dataset]} {MODEL_NAMES[r.arch]}")  # fmt: skip
        ax.set(xlabel="epoch", title=title, ylim=(0.8, 1.0))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, fontsize=8)
    axes[0].set(ylabel="test accuracy")
    return fig

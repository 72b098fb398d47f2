"""What the reproducibility appendix reports, read at run time: versions, hardware, model cards, data."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform

import pandas as pd
import torch

from approxifer import data, models

__all__ = ["datasets", "hardware", "model_cards", "software_versions"]

PACKAGES = ("approxifer", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "safetensors",
            "papermill", "nbval", "jupyter-book", "myst-nb", "sphinx-proof")  # fmt: skip

LICENCES = {
    "mnist": "CC BY-SA 3.0 (LeCun, Cortes, Burges)",
    "fashion-mnist": "MIT (Zalando Research)",
    "cifar10": "research use, by its authors (Krizhevsky, 2009)",
}


def software_versions() -> pd.DataFrame:
    rows = [{"package": "python", "version": platform.python_version()}]
    rows += [{"package": p, "version": md.version(p)} for p in PACKAGES]
    return pd.DataFrame(rows).set_index("package")


def hardware() -> pd.DataFrame:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = {"CPU": cpu, "cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
            "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}  # fmt: skip
    return pd.DataFrame({"value": rows})


def model_cards() -> pd.DataFrame:
    rows = []
    for path in sorted(models.models_dir().glob("*.json")):
        card = json.loads(path.read_text())
        accuracy = card.get("test_accuracy", card.get("degraded_accuracy"))
        rows.append({
            "model": path.stem, "kind": card.get("kind", "classical" if "library" in card else "base"),
            "test accuracy": accuracy, "epochs": card.get("epochs"), "seed": card.get("seed"),
            "wall time (min)": round(card["wall_time_s"] / 60, 1),
            "made with": card.get("torch_version", card.get("library")), "command": card["command"],
            "sha256": card["weights_sha256"][:16] + "…",
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("model")


def datasets() -> pd.DataFrame:
    rows = []
    for name, d in data.DATASETS.items():
        for split in ("train", "test"):
            rows.append({"dataset": name, "split": split, "images": d.counts[split],
                         "shape": "×".join(map(str, d.shape)), "images sha256": d.sha256[split][0][:16] + "…",
                         "labels sha256": d.sha256[split][1][:16] + "…", "licence": LICENCES[name]})  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "split"])

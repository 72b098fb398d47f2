"""What the reproducibility appendix reports, read at run time: versions, hardware, model cards, data, and how each
published notebook was executed (`execution_record`, which `approxifer notebooks` stores in the notebook's metadata)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from approxifer import data, inference, models, serving

__all__ = [
    "datasets", "execution_record", "hardware", "model_cards", "model_commands", "published_runs", "software_versions",
]  # fmt: skip

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


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware() -> pd.DataFrame:
    rows = {"CPU": _cpu(), "cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
            "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}  # fmt: skip
    return pd.DataFrame({"value": rows})


def execution_record(params: dict) -> dict:
    """Where a notebook run with papermill `params` executes, and the inference precision its models are served at
    (`params["precision"]` resolved on this machine; notebooks that serve no model take no precision: None)."""
    device = inference.pick_device(params.get("device", "cpu"))
    precision = serving.resolve_precision(params["precision"], device) if "precision" in params else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": _cpu(), "cores": os.cpu_count(), "gpu": gpu, "bf16_kernels": inference.native_bf16(device),
            "precision": precision}  # fmt: skip


def _machine(rec: dict) -> str:
    bf16 = "with" if rec["bf16_kernels"] else "without"
    host = f"{rec['cpu']}, {rec['cores']} cores"
    return f"{rec['gpu']} ({bf16} bf16) on {host}" if rec["gpu"] else f"{host}, {bf16} bf16 kernels"


def published_runs(book: Path | None = None) -> pd.DataFrame:
    """One row per executed notebook in `book` (default: the checkout's book/): when it ran, for how long, on what,
    and at which inference precision, from the metadata papermill and `approxifer notebooks` stored in it. A run still
    in progress (this appendix, while it executes) has no end time yet and is left out."""
    rows = []
    for path in sorted((book or data.REPO_ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        meta = nb["metadata"]
        pm, rec = meta.get("papermill", {}), meta.get("approxifer")
        if not pm.get("end_time"):
            continue
        rows.append({
            "chapter": _title(nb) or path.stem, "executed (UTC)": pm["end_time"][:16].replace("T", " "),
            "minutes": round(pm["duration"] / 60, 1),
            "precision": (rec["precision"] or "–") if rec else "not recorded",
            "machine": _machine(rec) if rec else "not recorded",
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("chapter")


def _title(nb: dict) -> str | None:
    """The notebook's title: the first level-1 heading of its markdown cells."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def model_cards() -> pd.DataFrame:
    """One row per model card in `models/`: kind, test accuracy (degraded-mode for parity models), epochs, seed, wall
    time, and the start of its weights' sha256 (`model_commands` gives the commands that made them)."""
    rows = []
    for path in sorted(models.models_dir().glob("*.json")):
        card = models.read_card(path)
        kind = "parity" if "parity" in card.get("kind", "") else "classical" if "library" in card else "base"
        rows.append({
            "model": path.stem, "kind": kind,
            "accuracy": round(card.get("test_accuracy", card.get("degraded_accuracy")), 4),
            "epochs": card.get("epochs", "–"), "seed": card.get("seed", "–"),
            "minutes": round(card["wall_time_s"] / 60, 1), "sha256": card["weights_sha256"][:12] + "…",
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("model")


def model_commands() -> pd.DataFrame:
    """The exact command each model card records, and what made the weights (torch or the fitting library)."""
    rows = []
    for path in sorted(models.models_dir().glob("*.json")):
        card = models.read_card(path)
        rows.append({"model": path.stem, "command": card["command"],
                     "made with": card.get("torch_version", card.get("library", "–"))})  # fmt: skip
    return pd.DataFrame(rows).set_index("model")


def datasets() -> pd.DataFrame:
    """One row per dataset split: image count, shape, the start of the sha256 of its images and labels."""
    rows = []
    for name, d in data.DATASETS.items():
        for split in ("train", "test"):
            rows.append({"dataset": name, "split": split, "images": d.counts[split],
                         "shape": "×".join(map(str, d.shape)), "images sha256": d.sha256[split][0][:12] + "…",
                         "labels sha256": d.sha256[split][1][:12] + "…"})  # fmt: skip
    return pd.DataFrame(rows).set_index(["dataset", "split"])


def licences() -> pd.DataFrame:
    """Each dataset's licence."""
    return pd.DataFrame({"licence": LICENCES}).rename_axis("dataset")

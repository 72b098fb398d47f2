"""The paper's straggler grid on whole test sets, from an empty cache and again from a warm one.

Item 1 of the straggler experiments: K in {8, 10, 12} with S = 1 and K = 8 with S in {2, 3}, N = K + S, ResNet-18,
every test image once, one straggler draw per group, with the base model and the uncoded / replication baselines.
The first pass starts from an empty cache folder (every coded query runs through the model), the second reuses it.
Both wall times and the accuracies are printed. Datasets whose ResNet-18 is not trained are skipped, and said so.
Run: `.venv/bin/python benchmarks/grid.py [datasets...] [--n-test N]` (default: the 3 datasets, whole test sets).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from approxifer import experiments as ex
from approxifer import models, serving

GRID = [(8, 1), (10, 1), (12, 1), (8, 2), (8, 3)]


def run_grid(datasets: list[str], n_test: int | None, precision: str) -> dict[str, object]:
    """The grid's straggler tables, one per dataset."""
    tables = {}
    for d in datasets:
        model = serving.served(d, "resnet18", "auto", precision)
        outputs = [ex.worker_outputs(model, K, K + S, n_test=n_test, progress=False) for K, S in GRID]
        tables[d] = ex.straggler_table(outputs)
    return tables


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", default=["mnist", "fashion-mnist", "cifar10"])
    p.add_argument("--n-test", type=int, help="first n test images (default: the whole test set)")
    p.add_argument("--precision", choices=serving.PRECISIONS, default="fp32", help="inference precision")
    a = p.parse_args()
    datasets = []
    for d in a.datasets:
        try:
            models.load_card(d, "resnet18")
            datasets.append(d)
        except models.ModelError as e:
            print(f"skipping {d}: {e}")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["APPROXIFER_CACHE"] = cache
        times = []
        for _ in ("cold", "warm"):
            t = time.perf_counter()
            tables = run_grid(datasets, a.n_test, a.precision)
            times.append(time.perf_counter() - t)
    device = ("cuda" if torch.cuda.is_available() else "cpu, channels-last") + f", {a.precision}"
    print(f"straggler grid (K, S) in {GRID}, ResNet-18, {a.n_test or 'all'} test images of {', '.join(datasets)}")
    for d, t in tables.items():
        print(f"  {d}: " + ", ".join(f"K={r.K} S={r.S} {r.accuracy:.3f}" for r in t.itertuples()))
    print(f"  empty cache: {times[0] / 60:.1f} min (target < 20 min); warm cache: {times[1]:.1f} s (target < 60 s)")
    print(f"  ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {device})")  # fmt: skip


if __name__ == "__main__":
    main()
